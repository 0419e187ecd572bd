"""benchmarks/lm_scoring.py still runs (tiny model; no speed is asserted: speed lives in benchmarks/)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_lm_scoring_quick_runs_and_prints_the_ratio():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = subprocess.run([sys.executable, "benchmarks/lm_scoring.py", "--quick", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ratio a/b tokens/s:" in out.stdout
    assert float(out.stdout.split("max |loss_a - loss_b|: ")[1].split()[0]) < 1e-4
    assert "ratio naive/chunked" in out.stdout
