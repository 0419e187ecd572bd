"""Sparse parity throughput: 64 seeds vmapped in one lsb_jax program vs PyTorch seed by seed, one run.

Model and data: the seed-004 parity MLP (20-40-40-1, ReLU), ±1 inputs, label = product of 6 bits,
SGD lr 0.1, batch 20, fresh points every step, as `lsb_jax.tasks.parity` trains it:
  (a) lsb_jax: `tasks.parity.make_member` (the experiments' step: data drawn in the step from one
      uint32 per point, `make_sampled_step`, optax SGD), vmapped over --seeds members and run by
      `train.fit` as one compiled loop over --steps steps (best of --repeats, after compiling);
  (a') the same vmapped step through `tasks.parity.scan_steps` (one lax.scan, --unroll steps per
      iteration, no hooks/metrics buffer): the throughput path for end-of-run sweeps;
  (b) PyTorch eager, float32, the same MLP trained seed after seed (--torch-seeds seeds x
      --torch-steps steps, extrapolated per seed-step), at its best thread count (1 or all cores).
Prints seed-steps per second and the ratio a/b. Target (issue 6): a/b >= 60.

    .venv/bin/python benchmarks/parity_vmap.py [--seeds 64] [--steps 2000]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from lsb_jax import train
from lsb_jax.tasks import parity


def lsb_rate(seeds: int, steps: int, repeats: int) -> tuple[float, float]:
    cfg = parity.ParityConfig(k=6, steps=steps, seeds=seeds)
    init, step = parity.make_member(cfg, parity.Arm("online"))
    keys = train.seed_keys(0, seeds)
    ens_step = jax.vmap(step)
    make = jax.jit(jax.vmap(init))
    train.fit(ens_step, make(keys), steps, chunk_size=steps, donate_state=True)  # compile
    best, loss = float("inf"), float("nan")
    for _ in range(repeats):
        state = make(keys)
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        res = train.fit(ens_step, state, steps, chunk_size=steps, donate_state=True, log_every=steps)
        jax.block_until_ready(res.state)
        best = min(best, time.perf_counter() - t0)
        loss = float(np.mean(res.history["loss"][-1]))
    return seeds * steps / best, loss


def lsb_scan_rate(seeds: int, steps: int, repeats: int, unroll: int) -> tuple[float, float]:
    cfg = parity.ParityConfig(k=6, steps=steps, seeds=seeds)
    init, step = parity.make_member(cfg, parity.Arm("online"))
    keys = train.seed_keys(0, seeds)
    make = jax.jit(jax.vmap(init))
    run = parity.scan_steps(jax.vmap(step), steps, unroll)
    jax.block_until_ready(run(make(keys)))  # compile
    best, loss = float("inf"), float("nan")
    for _ in range(repeats):
        state = make(keys)
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        state, loss_T = run(state)
        jax.block_until_ready(state)
        best = min(best, time.perf_counter() - t0)
        loss = float(loss_T[-1])
    return seeds * steps / best, loss


def torch_rate(seeds: int, steps: int, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for i in range(seeds):
        torch.manual_seed(i)
        net = torch.nn.Sequential(torch.nn.Linear(20, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.ReLU(),
                                  torch.nn.Linear(40, 1))
        sgd = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(steps):
            x = torch.randint(0, 2, (20, 20)).float() * 2 - 1
            y = x[:, :6].prod(dim=1)
            loss = ((net(x)[:, 0] - y) ** 2).mean()
            sgd.zero_grad()
            loss.backward()
            sgd.step()
    return seeds * steps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of (a); the best is reported")
    ap.add_argument("--unroll", type=int, default=4, help="steps per scan iteration in (a')")
    ap.add_argument("--torch-seeds", type=int, default=4)
    ap.add_argument("--torch-steps", type=int, default=1000)
    args = ap.parse_args()
    rate_a, loss = lsb_rate(args.seeds, args.steps, args.repeats)
    rate_s, loss_s = lsb_scan_rate(args.seeds, args.steps, args.repeats, args.unroll)
    print(f"device={jax.devices()[0].platform} seeds={args.seeds} steps={args.steps}")
    print(f"(a) lsb_jax vmap, train.fit          : {rate_a:10.0f} seed-steps/s  (last batch loss {loss:.3f})")
    print(f"(a') lsb_jax vmap, parity.scan_steps : {rate_s:10.0f} seed-steps/s  (unroll {args.unroll}, last loss {loss_s:.3f})")
    try:
        import torch
    except ImportError:
        print("(b) PyTorch not installed: skipped")
        return
    # the fairest PyTorch: the best thread count (tiny matmuls run fastest on one thread)
    rates = {t: torch_rate(args.torch_seeds, args.torch_steps, t) for t in sorted({1, torch.get_num_threads()})}
    threads, rate_b = max(rates.items(), key=lambda kv: kv[1])
    print(f"(b) PyTorch eager, seed by seed      : {rate_b:10.0f} seed-steps/s  (best of threads {rates})")
    print(f"ratio a/b                            : {rate_a / rate_b:8.1f}x")
    print(f"ratio a'/b                           : {rate_s / rate_b:8.1f}x   (target >= 60x)")


if __name__ == "__main__":
    main()
