"""Sparse parity throughput: 64 seeds vmapped in one lsb_jax program vs PyTorch seed by seed, one run.

Model and data: the seed-004 parity MLP (20-40-40-1, ReLU), ±1 inputs, label = product of 6 bits,
SGD lr 0.1, batch 20, fresh points every step, as `lsb_jax.tasks.parity` trains it:
  (a) lsb_jax: the experiments' member program (`sweeps.parity.sweep_task` through
      `train.sweep.group_program`: data drawn in the step from one uint32 per point,
      `make_sampled_step`, optax SGD), vmapped over --seeds members (`train.ensemble_step`) and run by
      `train.fit` as one compiled loop over --steps steps (best of --repeats, after compiling);
  (b) PyTorch eager, float32, the same MLP trained seed after seed (--torch-seeds seeds x
      --torch-steps steps, extrapolated per seed-step), at its best thread count (1 or all cores).
Prints seed-steps per second and the ratio a/b. Target (issue 6): a/b >= 60.

    .venv/bin/python benchmarks/parity_vmap.py [--seeds 64] [--steps 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import compare, environment, peer_threads, print_table, torch_threads, xla_cpu_pool  # noqa: E402

from lsb_jax import io, train  # noqa: E402
from lsb_jax.sweeps import parity  # noqa: E402
from lsb_jax.train.arms import group_arms, group_members, member_arms  # noqa: E402
from lsb_jax.train.sweep import group_program  # noqa: E402


def lsb_rate(seeds: int, steps: int, repeats: int) -> tuple[float, float]:
    cfg = parity.ParityConfig(k=6, steps=steps, seeds=seeds)
    arm = parity.arm("online")
    (group,) = group_arms(None, 1, optim=cfg.optim, batch_size=cfg.batch_size, steps=steps, static=[arm.static])
    _, members = group_members(member_arms(seeds, 0, [{}]), group)
    init, step = group_program(parity.sweep_task(cfg), group, steps)
    ens_step = train.ensemble_step(step)
    make = lambda: train.ensemble_init(init, members)  # noqa: E731
    train.fit(ens_step, make(), steps, chunk_size=steps, step_args=(members.hparams,), donate_state=True)  # compile
    best, loss = float("inf"), float("nan")
    for _ in range(repeats):
        state = make()
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        res = train.fit(ens_step, state, steps, chunk_size=steps, step_args=(members.hparams,), donate_state=True,
                        log_every=steps)
        jax.block_until_ready(res.state)
        best = min(best, time.perf_counter() - t0)
        loss = float(np.mean(res.history["loss"][-1]))
    return seeds * steps / best, loss


def torch_rate(seeds: int, steps: int, threads: int) -> float:
    """Seed-steps per second of `torch_run` at `threads` threads (one timed run)."""
    with torch_threads(threads):
        t0 = time.perf_counter()
        torch_run(seeds, steps)
        return seeds * steps / (time.perf_counter() - t0)


def torch_run(seeds: int, steps: int, device="cpu") -> None:
    """The parity MLP trained in PyTorch eager, seed after seed (at the current thread count), with its
    tensors on `device`."""
    import torch

    for i in range(seeds):
        torch.manual_seed(i)
        net = torch.nn.Sequential(torch.nn.Linear(20, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.ReLU(),
                                  torch.nn.Linear(40, 1)).to(device)
        sgd = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(steps):
            x = torch.randint(0, 2, (20, 20), device=device).float() * 2 - 1
            y = x[:, :6].prod(dim=1)
            loss = ((net(x)[:, 0] - y) ** 2).mean()
            sgd.zero_grad()
            loss.backward()
            sgd.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of (a); the best is reported")
    ap.add_argument("--torch-seeds", type=int, default=4)
    ap.add_argument("--torch-steps", type=int, default=1000)
    ap.add_argument("--out", default=None, help="JSON of the results (the table row under 'rows')")
    ap.add_argument("--xla-threads", type=int, default=None, help="XLA's CPU pool size (default: XLA's own)")
    args = ap.parse_args()
    xla_cpu_pool(args.xla_threads)      # before any computation: may re-execute this script
    rate_a, loss = lsb_rate(args.seeds, args.steps, args.repeats)
    print(f"device={jax.devices()[0].platform} seeds={args.seeds} steps={args.steps} "
          f"XLA CPU pool threads={args.xla_threads or 'default'}")
    print(f"(a) lsb_jax vmap, train.fit          : {rate_a:10.0f} seed-steps/s  (last batch loss {loss:.3f})")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("(b) PyTorch not installed: skipped")
        return
    # the fairest PyTorch: the best thread count (tiny matmuls run fastest on one thread)
    times = {"lsb_jax": 1 / rate_a} | {f"torch@{t}t": 1 / torch_rate(args.torch_seeds, args.torch_steps, t)
                                       for t in peer_threads()}
    tag = "" if args.xla_threads is None else f" (XLA pool {args.xla_threads} thread{'s' * (args.xla_threads > 1)})"
    row = compare(f"parity {args.seeds} seeds vmapped vs PyTorch seed by seed{tag}", times, "lsb_jax", "torch",
                  work=1, unit="seed-steps", shape="MLP 20-40-40-1, batch 20, SGD",
                  timing="ours best of repeats, torch one run per thread count")
    print(f"(b) PyTorch eager, seed by seed      : {row['peer_best_rate']:10.0f} seed-steps/s  (best: "
          f"{row['peer_best']})")
    print(f"ratio a/b                            : {row['ratio_vs_best']:8.1f}x   (target >= 60x)")
    print_table([row])
    if args.out:
        io.write_json(args.out, {"rows": [row], "env": environment(), "last_loss": loss})


if __name__ == "__main__":
    main()
