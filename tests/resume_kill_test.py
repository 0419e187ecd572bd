"""kill -9 in the middle of `lsb run`, then `--resume`: bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import lsb_cmd

SETS = ["--set", "steps=12000", "--set", "checkpoint_every=500", "--set", "chunk_size=250",
        "--set", "seeds=4", "--set", "pool_size=256", "--set", "track_points=5", "--set", "eval_every=250",
        "--set", "sampler=zipf", "--set", "optim.name=adam", "--set", "optim.lr=0.003", "--no-progress"]


def lsb(tmp_path, *args, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(lsb_cmd(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, **kw)


def checkpoint_steps(ckpt_dir):
    if not ckpt_dir.exists():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists()
                  or (p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()))


@pytest.mark.slow
def test_kill_then_resume_gives_bit_identical_parameters(tmp_path):
    full = lsb(tmp_path, "run", "toy_regression", *SETS, "--out", "full")
    assert full.returncode == 0, full.stderr

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(lsb_cmd("run", "toy_regression", *SETS, "--out", "killed"), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not [s for s in checkpoint_steps(ckpt_dir) if s >= 1000]:
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(checkpoint_steps(ckpt_dir))
    assert killed_at < 12000 and not (tmp_path / "killed" / "results.json").exists()
    assert json.loads((tmp_path / "killed" / "status.json").read_text())["status"] == "running"

    # without --resume the unfinished run is refused, nothing is touched
    again = lsb(tmp_path, "run", "toy_regression", *SETS, "--out", "killed")
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = lsb(tmp_path, "run", "toy_regression", *SETS, "--out", "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr

    for name in ("final_params.npz", "trajectories.npz"):
        a, b = np.load(tmp_path / "full" / name), np.load(tmp_path / "killed" / name)
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert np.array_equal(a[k], b[k], equal_nan=True), f"{name}:{k} differs after resume"

    rows = [json.loads(l) for l in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == sorted(set(train_steps)), "metrics rows duplicated across the resume"
    ref = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert rows == ref, "the resumed run's metrics differ from the uninterrupted run's"
