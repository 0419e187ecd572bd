"""The compile cache of `lsb run` / `lsb reproduce` (`train.hosts.use_compile_cache`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def _run(cwd, *args, **env_changes):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
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


def test_an_unusable_default_folder_means_no_cache_and_the_run_goes_on(tmp_path):
    (tmp_path / "a_file").write_text("")
    out = _run(tmp_path, "run", "toy_regression", "--out", "r", "--no-progress",
               LSB_COMPILE_CACHE=None, JAX_COMPILATION_CACHE_DIR=None, XDG_CACHE_HOME=str(tmp_path / "a_file"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["compile_cache"] is None


@pytest.mark.parametrize("how", ["flag", "LSB_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"])
def test_an_unusable_folder_given_is_one_line_exit_2_and_nothing_is_written(tmp_path, how):
    work = tmp_path / "w"
    work.mkdir()
    (tmp_path / "a_file").write_text("")
    bad = str(tmp_path / "a_file" / "cache")
    if how == "flag":
        out = _run(work, "--compile-cache", bad, "run", "toy_regression")
    else:
        out = _run(work, "run", "toy_regression", **{"LSB_COMPILE_CACHE": None, how: bad})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("lsb: error: compile cache:"), out.stderr
    assert list(work.iterdir()) == []


@pytest.mark.slow
def test_two_processes_share_one_cache_folder_and_a_second_run_computes_the_same(tmp_path):
    """docs/tpu.md's two-process command with one cache folder: process 0 writes it and, run again,
    finds every program there; both processes train to the same losses and model as the first time.
    (Process 1 writes nothing and, on CPUs, finds none of process 0's programs: JAX keys a program by
    its devices except on GPUs. Not asserted: it only costs process 1 its compile time.)"""
    pytest.importorskip("transformers")
    import numpy as np  # noqa: PLC0415
    from llm_multihost_test import losses, run_doc_block, weights  # noqa: PLC0415
    from llm_user_cli_test import as_fields, make_checkpoint, problems, write_jsonl  # noqa: PLC0415

    train, test = problems(96, 0), problems(8, 1)
    make_checkpoint(tmp_path / "llama", "llama", [q + " " + a for q, a in train], chat=False, pad=False, seed=0)
    cache = tmp_path / "cache"
    data = (write_jsonl(tmp_path / "train.jsonl", as_fields(train)),
            write_jsonl(tmp_path / "test.jsonl", as_fields(test)))
    entries = []
    for name in ("first", "second"):
        res = run_doc_block(tmp_path / name, tmp_path / "llama", *data, LSB_COMPILE_CACHE=str(cache))
        assert "compilation cache" not in res.stderr, res.stderr[-3000:]
        entries.append(_entries(cache))
    assert len(entries[0]) >= 3 and entries[1] == entries[0]     # the second run compiled nothing new
    for proc in ("", ".process-1"):
        first, second = tmp_path / f"first{proc}", tmp_path / f"second{proc}"
        np.testing.assert_array_equal(losses(second), losses(first))
        for k, w in weights(first).items():
            np.testing.assert_array_equal(weights(second)[k], w, err_msg=k)


LOWER_GEMMA3 = """
import hashlib, sys
import jax, jax.numpy as jnp
from flax import nnx
import lm_fixtures
from lsb_jax.models.lm.checkpoint import load_pretrained
model = load_pretrained(sys.argv[1])
assert len(set(model.cfg.layer_types)) == 2, model.cfg.layer_types
graphdef, state = nnx.split(model)
text = jax.jit(lambda s, t: nnx.merge(graphdef, s).hidden(t)).lower(state, jnp.asarray(lm_fixtures.tokens())).as_text()
print(hashlib.sha256(text.encode()).hexdigest())
"""


def test_a_model_with_sliding_and_full_layers_lowers_to_one_program_whatever_the_hash_seed(tmp_path):
    """The program must not depend on Python's string hashing (PYTHONHASHSEED differs per process):
    a cache entry written by one process is then found by the next, and the processes of a multi-host
    run compile the same program. It used to build one mask per layer type in `set` order."""
    import lm_fixtures
    lm_fixtures.build("gemma3_softcap", tmp_path / "gemma3")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                                                             os.environ.get("PYTHONPATH", "")]))
    digests = set()
    for seed in range(4):
        out = subprocess.run([sys.executable, "-c", LOWER_GEMMA3, str(tmp_path / "gemma3")], capture_output=True,
                             text=True, timeout=300, env={**env, "PYTHONHASHSEED": str(seed)})
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.split()[-1])
    assert len(digests) == 1, digests
