"""Reliability campaign: kill -9 `lsb run toy_regression` at random times, damage the newest
checkpoint (none / one bit flipped / data file truncated / meta item deleted, in turn), resume,
and compare every output with an uninterrupted run byte for byte.

    .venv/bin/python scripts/kill_campaign.py --trials 8 --seed 1 [--work /tmp/kill_campaign]

Prints one JSON line per trial and a summary: kills survived bit-identical, damages injected,
damages detected (moved to checkpoints-corrupt/). Takes about a minute per trial on 2 cores (start-up dominates).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LSB = [sys.executable, "-m", "lsb_jax.cli"]
SETS = ["--set", "steps=12000", "--set", "checkpoint_every=500", "--set", "chunk_size=250",
        "--set", "seeds=4", "--set", "pool_size=256", "--set", "track_points=5", "--set", "eval_every=250",
        "--set", "sampler=zipf", "--set", "optim.name=adam", "--set", "optim.lr=0.003", "--no-progress"]
DAMAGES = ("none", "flip", "truncate", "delete_meta")


def steps(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def damage(step_dir: Path, kind: str) -> None:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    f = max(files, key=lambda p: p.stat().st_size)
    if kind == "flip":
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 1
        f.write_bytes(bytes(b))
    elif kind == "truncate":
        os.truncate(f, f.stat().st_size // 2)
    elif kind == "delete_meta":
        shutil.rmtree(step_dir / "meta")


def identical(a: Path, b: Path) -> bool:
    for name in ("final_params.npz", "trajectories.npz"):
        x, y = np.load(a / name), np.load(b / name)
        if sorted(x.files) != sorted(y.files) or not all(np.array_equal(x[k], y[k], equal_nan=True) for k in x.files):
            return False
    return (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/kill_campaign")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    run = lambda *a: subprocess.run(LSB + list(a), cwd=work, env=env, capture_output=True, text=True, timeout=900)  # noqa: E731
    def start(out):
        return subprocess.Popen(LSB + ["run", "toy_regression", *SETS, "--out", out], cwd=work, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def first_checkpoint(proc, out) -> float:   # start-up (imports, compile) can take most of a run
        while proc.poll() is None and not steps(work / out / "checkpoints"):
            time.sleep(0.05)
        return time.time()

    full = start("full")
    t_first = first_checkpoint(full, "full")
    assert full.wait() == 0
    full_s = time.time() - t_first              # training after the first checkpoint
    rng = random.Random(args.seed)
    total = {"trials": args.trials, "bit_identical": 0, "injected": 0, "detected": 0,
             "training_s_after_first_checkpoint": round(full_s, 1)}
    for i in range(args.trials):
        out, kind = f"k{i}", DAMAGES[i % len(DAMAGES)]
        proc = start(out)
        first_checkpoint(proc, out)
        delay = rng.uniform(0.0, 0.9) * full_s   # a random point of the training after its first checkpoint
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ckpt, hit = work / out / "checkpoints", None
        complete = json.loads((work / out / "status.json").read_text()).get("status") == "complete"
        if kind != "none" and steps(ckpt) and not complete:   # a complete run is reused, never restored
            hit = max(steps(ckpt))
            damage(ckpt / str(hit), kind)
            total["injected"] += 1
        r = run("run", "toy_regression", *SETS, "--out", out, "--resume")
        moved = (work / out / "checkpoints-corrupt" / str(hit)).exists() if hit is not None else False
        ok = r.returncode == 0 and identical(work / "full", work / out)
        total["bit_identical"] += ok
        total["detected"] += moved
        print(json.dumps({"trial": i, "killed": killed, "after_first_checkpoint_s": round(delay, 1), "damage": kind,
                          "damaged_step": hit, "detected": moved, "rc": r.returncode, "identical": ok,
                          "stderr": [l[:160] for l in r.stderr.splitlines() if "corrupt" in l or "resuming" in l
                                     or "error" in l]}), flush=True)
    print(json.dumps(total))


if __name__ == "__main__":
    main()
