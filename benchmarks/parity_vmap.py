"""Sparse parity throughput: 64 seeds vmapped in one lsb_jax program vs PyTorch seed by seed, one run.

Model and data: the seed-004 parity MLP (20-40-40-1, ReLU), ±1 inputs, label = product of 6 bits,
SGD lr 0.1, batch 20, fresh points every step, as `lsb_jax.tasks.parity` trains it:
  (a) lsb_jax: the experiments' member program (`sweeps.parity.sweep_task` through
      `train.sweep.group_program`: data drawn in the step from one uint32 per point,
      `make_sampled_step`, optax SGD), vmapped over --seeds members (`train.ensemble_step`) and run by
      `train.fit` as one compiled loop over --steps steps (after compiling);
  (b) PyTorch eager, float32, the same MLP trained seed after seed (--torch-seeds seeds x
      --torch-steps steps, extrapolated per seed-step), at its best thread count (1 or all cores).
Both are timed in --repeats interleaved rounds after a warm-up, and their medians compared. Prints
seed-steps per second and the ratio a/b. Target (issue 6): a/b >= 60.

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


def lsb_runner(seeds: int, steps: int):
    """The compiled member program of (a): returns run() -> (seconds, last loss) of one timed run."""
    cfg = parity.ParityConfig(k=6, steps=steps, seeds=seeds)
    arm = parity.arm("online")
    (group,) = group_arms(None, 1, optim=cfg.optim, batch_size=cfg.batch_size, steps=steps, static=[arm.static])
    _, members = group_members(member_arms(seeds, 0, [{}]), group)
    init, step = group_program(parity.sweep_task(cfg), group, steps)
    ens_step = train.ensemble_step(step)
    make = lambda: train.ensemble_init(init, members)  # noqa: E731
    train.fit(ens_step, make(), steps, chunk_size=steps, step_args=(members.hparams,), donate_state=True)  # compile

    def run() -> tuple[float, float]:
        state = make()
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        res = train.fit(ens_step, state, steps, chunk_size=steps, step_args=(members.hparams,), donate_state=True,
                        log_every=steps)
        jax.block_until_ready(res.state)
        return time.perf_counter() - t0, float(np.mean(res.history["loss"][-1]))

    return run


def rates(seeds: int, steps: int, torch_seeds: int, torch_steps: int, repeats: int, torch_peers: dict) -> tuple:
    """Seed-steps/s, the median of `repeats` interleaved rounds after a warm-up of each contender:
    (a) ours ("ours") and every torch peer {name: run(seeds, steps)} -> ({name: rate}, last loss)."""
    ours = lsb_runner(seeds, steps)
    for peer in torch_peers.values():
        peer(1, 20)                                   # warm-up: allocator, kernels, a CUDA context
    samples: dict[str, list[float]] = {name: [] for name in ("ours", *torch_peers)}
    loss = float("nan")
    for _ in range(repeats):
        seconds, loss = ours()
        samples["ours"].append(seeds * steps / seconds)
        for name, peer in torch_peers.items():
            t0 = time.perf_counter()
            peer(torch_seeds, torch_steps)
            samples[name].append(torch_seeds * torch_steps / (time.perf_counter() - t0))
    return {name: float(np.median(v)) for name, v in samples.items()}, loss


def torch_cpu_peer(threads: int):
    """run(seeds, steps) of `torch_run` on the CPU at `threads` threads."""
    def run(seeds: int, steps: int) -> None:
        with torch_threads(threads):
            torch_run(seeds, steps)
    return run


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
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds of (a) and (b); medians")
    ap.add_argument("--torch-seeds", type=int, default=4)
    ap.add_argument("--torch-steps", type=int, default=1000)
    ap.add_argument("--out", default=None, help="JSON of the results (the table row under 'rows')")
    ap.add_argument("--xla-threads", type=int, default=None, help="XLA's CPU pool size (default: XLA's own)")
    args = ap.parse_args()
    xla_cpu_pool(args.xla_threads)      # before any computation: may re-execute this script
    try:
        import torch  # noqa: F401
        peers = {f"torch@{t}t": torch_cpu_peer(t) for t in peer_threads()}   # the fairest: its best thread count
    except ImportError:
        peers = {}
    got, loss = rates(args.seeds, args.steps, args.torch_seeds, args.torch_steps, args.repeats, peers)
    rate_a = got.pop("ours")
    print(f"device={jax.devices()[0].platform} seeds={args.seeds} steps={args.steps} "
          f"XLA CPU pool threads={args.xla_threads or 'default'}")
    print(f"(a) lsb_jax vmap, train.fit          : {rate_a:10.0f} seed-steps/s  (last batch loss {loss:.3f})")
    if not peers:
        print("(b) PyTorch not installed: skipped")
        return
    times = {"lsb_jax": 1 / rate_a} | {name: 1 / r for name, r in got.items()}
    tag = "" if args.xla_threads is None else f" (XLA pool {args.xla_threads} thread{'s' * (args.xla_threads > 1)})"
    row = compare(f"parity {args.seeds} seeds vmapped vs PyTorch seed by seed{tag}", times, "lsb_jax", "torch",
                  work=1, unit="seed-steps", shape="MLP 20-40-40-1, batch 20, SGD",
                  timing=f"medians of {args.repeats} interleaved rounds after a warm-up")
    print(f"(b) PyTorch eager, seed by seed      : {row['peer_best_rate']:10.0f} seed-steps/s  (best: "
          f"{row['peer_best']})")
    print(f"ratio a/b                            : {row['ratio_vs_best']:8.1f}x   (target >= 60x)")
    print_table([row])
    if args.out:
        io.write_json(args.out, {"rows": [row], "env": environment(), "last_loss": loss})


if __name__ == "__main__":
    main()
