"""Vmapped multi-seed training vs seed-by-seed, in one run on the same machine.

Model: the sparse-parity MLP of seed 004 (20-40-40-1, ReLU), ±1 inputs, label = product of 6 bits,
SGD lr 0.1, batch 20, data drawn inside the step. Rates are seed-steps per second after
compilation (best of --repeats):
  (a) lsb_jax: 16 seeds vmapped, trained by `train.fit` (one compiled loop over the steps);
  (b) the same jitted single step, 16 seeds run one after another, one dispatch per step;
  (c) PyTorch (if installed), 16 seeds one after another, eager.
Prints the ratios a/b and a/c. Target (issue 3): a/b >= 10.

    .venv/bin/python benchmarks/vmap_seeds.py [--seeds 16] [--steps 2000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from lsb_jax import train
from lsb_jax.models.mlp import init_mlp, mlp_apply
from lsb_jax.optim import OptimConfig, make_optimizer

SIZES = (20, 40, 40, 1)


def parity_batch(key, step, batch_size=20, k=6):
    """Uniform ±1 inputs: the 20 bits of one random uint32 per example (exactly uniform, one draw)."""
    bits_B = jax.random.bits(jax.random.fold_in(key, step), (batch_size,), jnp.uint32)
    x = jnp.where((bits_B[:, None] >> jnp.arange(SIZES[0], dtype=jnp.uint32)) & 1, 1.0, -1.0)
    return {"x": x, "y": jnp.prod(x[:, :k], axis=1)}


def loss_fn(params, batch):
    return (mlp_apply(params, batch["x"], "relu")[:, 0] - batch["y"]) ** 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is reported")
    args = ap.parse_args()
    S, T = args.seeds, args.steps
    opt = make_optimizer(OptimConfig(name="sgd", lr=0.1), T)
    step = train.make_sampled_step(loss_fn, opt, parity_batch)
    init = lambda key: train.init_state(lambda k: init_mlp(k, SIZES), opt.tx, key)
    keys = train.seed_keys(0, S)

    # (a) vmapped seeds through lsb_jax's trainer: `train.fit` runs the whole ensemble as one
    # compiled program (best of --repeats timed runs, after a warm-up run that compiles it)
    ens_step = jax.vmap(step)
    train.fit(ens_step, jax.vmap(init)(keys), T, chunk_size=T)
    best = float("inf")
    for _ in range(args.repeats):
        state = jax.vmap(init)(keys)
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        out = train.fit(ens_step, state, T, chunk_size=T, donate_state=True).state
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    rate_a = S * T / best

    # (b) the same jitted step, seed after seed, one dispatch per step (best of --repeats)
    one = jax.jit(step, donate_argnums=0)
    jax.block_until_ready(one(init(keys[0])))
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(S):
            s = init(keys[i])
            for _ in range(T):
                s, m = one(s)
            jax.block_until_ready(s)
        best = min(best, time.perf_counter() - t0)
    rate_b = S * T / best
    # same numbers? member 0 of (a) equals seed 0 of (b)
    seq0 = init(keys[0])
    for _ in range(T):
        seq0, _ = one(seq0)
    err = max(float(jnp.max(jnp.abs(a[0] - b)))
              for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(seq0.params)))

    print(f"seeds={S} steps={T} device={jax.devices()[0].platform}")
    print(f"(a) vmap, train.fit : {rate_a:12.0f} seed-steps/s")
    print(f"(b) sequential jit  : {rate_b:12.0f} seed-steps/s")
    print(f"ratio a/b           : {rate_a / rate_b:8.1f}x   (max |param diff| member 0 vs sequential: {err:.2e})")

    try:
        import torch
    except ImportError:
        print("(c) PyTorch not installed: skipped")
        return
    from parity_vmap import torch_rate  # the same seed-by-seed PyTorch loop (benchmarks/ is the script's path)

    rate_c = torch_rate(S, min(T, 1000), max(1, torch.get_num_threads()))
    print(f"(c) PyTorch eager   : {rate_c:12.0f} seed-steps/s")
    print(f"ratio a/c           : {rate_a / rate_c:8.1f}x")


if __name__ == "__main__":
    main()
