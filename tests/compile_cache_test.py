"""The compile cache of `lsb run` / `lsb reproduce` (`train.hosts.use_compile_cache`)."""

import json
import os
import subprocess
from pathlib import Path

from conftest import lsb_cmd

from lsb_jax.train.hosts import compile_cache_dir


def test_the_cache_folder_is_resolved_from_the_choice_then_the_environment():
    home = os.path.expanduser("~")
    assert compile_cache_dir(None, {}) == os.path.join(home, ".cache", "lsb_jax", "jax")
    assert compile_cache_dir(None, {"XDG_CACHE_HOME": "/x/cache"}) == "/x/cache/lsb_jax/jax"
    assert compile_cache_dir(None, {"JAX_COMPILATION_CACHE_DIR": "/j"}) == "/j"       # JAX's own setting
    assert compile_cache_dir(None, {"LSB_COMPILE_CACHE": "/l", "JAX_COMPILATION_CACHE_DIR": "/j"}) == "/l"
    assert compile_cache_dir(None, {"LSB_COMPILE_CACHE": "off", "JAX_COMPILATION_CACHE_DIR": "/j"}) is None
    assert compile_cache_dir("/c", {"LSB_COMPILE_CACHE": "off"}) == "/c"            # the flag wins
    assert compile_cache_dir("off", {"XDG_CACHE_HOME": "/x"}) is None
    assert compile_cache_dir("rel", {}) == os.path.abspath("rel")


def _run(cwd, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(lsb_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()} if cache.exists() else set()


def _numbers(results: dict) -> dict:
    """results.json without what depends on the clock."""
    return {k: v for k, v in results.items() if k != "wall_seconds"}


def test_a_second_run_loads_every_program_from_the_cache_and_computes_the_same(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, "--compile-cache", str(cache), "run", "toy_regression", "--out", "a", "--no-progress")
    assert first.returncode == 0, first.stderr[-3000:]
    kept = _entries(cache)
    assert len(kept) >= 3                       # the run's programs (init, training loop, evaluation, ...)
    assert os.stat(cache).st_mode & 0o077 == 0  # private to its owner
    assert json.loads((tmp_path / "a" / "config.json").read_text())["compile_cache"] == str(cache)

    second = _run(tmp_path, "--compile-cache", str(cache), "run", "toy_regression", "--out", "b", "--no-progress")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _entries(cache) == kept              # nothing compiled anew: every program was found
    assert "compilation cache" not in second.stderr
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert _numbers(a) == _numbers(b)           # the loaded programs compute what the compiled ones did


def test_off_keeps_nothing_and_an_unusable_folder_is_one_line_exit_2(tmp_path):
    off = _run(tmp_path, "--compile-cache", "off", "run", "toy_regression", "--out", "r", "--no-progress")
    assert off.returncode == 0, off.stderr[-3000:]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["compile_cache"] is None

    work = tmp_path / "w"
    work.mkdir()
    (tmp_path / "a_file").write_text("")
    bad = _run(work, "--compile-cache", str(tmp_path / "a_file" / "cache"), "run", "toy_regression")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("lsb: error: compile cache:"), bad.stderr
    assert list(work.iterdir()) == []
