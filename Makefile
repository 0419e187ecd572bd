# Two commands on a fresh machine (only Python >= 3.11 needed):
#   make reproduce   - create .venv, install, run every experiment's quick config, write runs/report.md
#   make test        - create .venv, install with test extras, lint (ruff), run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip prints a warning per missing local index folder on this kind of machine: keep the log readable.
PIP := $(PY) -m pip install --disable-pip-version-check -q
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
EXTRAS ?= test,notebooks,llm,embed
PYTEST_ARGS ?= -n 2

.PHONY: install reproduce reproduce-full lint test test-serial bench clean

$(VENV)/.stamp-$(EXTRAS): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip $(QUIET)
	# torch first and pinned: the CPU build on local disk (anything else pulls GBs of CUDA).
	$(PIP) torch==2.13.0 $(QUIET)
	$(PIP) -e ".[$(EXTRAS)]" $(QUIET)
	@rm -f $(VENV)/.stamp-*
	@touch $@

install: $(VENV)/.stamp-$(EXTRAS)

reproduce: install
	$(VENV)/bin/lsb reproduce --quick --no-progress

reproduce-full: install
	$(VENV)/bin/lsb reproduce --full

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-serial: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
