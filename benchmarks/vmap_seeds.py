"""Vmapped multi-seed training vs seed-by-seed, in one run on the same machine.

Model: the sparse-parity MLP of seed 004 (20-40-40-1, ReLU), ±1 inputs, label = product of 6 bits,
SGD lr 0.1, batch 20, data drawn inside the step. Rates are seed-steps per second after
compilation (medians of --repeats rounds that go round-robin over (a), (b) and (c)):
  (a) lsb_jax: 16 seeds vmapped, trained by `train.fit` (one compiled loop over the steps) on one
      CPU device;
  (a') the same with the CPU split into one device per core (`train.hosts.use_cpu_cores`, as
      `lsb --cpu-devices auto` does) and the seeds split over them (`train.member_vmap`: each core
      steps its own 16/D seeds; what a sweep does with several devices);
  (b) the same jitted single step, 16 seeds run one after another, one dispatch per step;
  (c) PyTorch (if installed), 16 seeds one after another, eager, at 1 thread and at all cores (the
      ratio is against its faster setting).
Prints the ratios a/b, a'/b and a/c. Target (issue 3): >= 10 against (b). Member 0 of (a) and (a') is
checked against seed 0 of (b) over the first CHECK_STEPS steps (same numbers up to rounding). (b) and
(c) may use every core too: XLA's pool splits each op of (b), PyTorch runs at its best thread count.

The batch is the sparse-parity task's own online draw (`lsb_jax.tasks.parity.online_points`, a
counter-based `lsb_jax.data.stream_row`). `run_all.py` also runs this script with --xla-threads 1
and adds a row with each side at its faster pool.

Also prints where a step of (a) goes, each part timed as its own compiled loop over the steps (with
fit's compiler options, `train.loop_compiler_options`) in the same interleaved rounds: the model alone
(forward, backward and SGD update on a fixed batch), the data stream alone (the batch draws), the
whole compiled loop of `train.fit`, and `train.fit` itself (the loop plus its host work); and the
FLOP rate of (a) beside the rate of a large matmul in the same process (what XLA reaches on this CPU
when a dot is big).

--xla-threads 1 reruns the script with XLA's CPU thread pool at one thread (`_peers.xla_cpu_pool`):
on a small machine tiny per-op work can run faster without hand-offs between pool threads. That run
keeps the CPU one device (no (a')): with two CPU devices NPROC=1 no longer limits XLA's pool.

    .venv/bin/python benchmarks/vmap_seeds.py [--seeds 16] [--steps 2000] [--xla-threads 1] [--cpu-devices N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import compare, environment, interleaved, print_table, torch_at_threads, xla_cpu_pool  # noqa: E402

from lsb_jax import io, train  # noqa: E402
from lsb_jax.train import hosts  # noqa: E402
from lsb_jax.models.mlp import init_mlp, mlp_apply  # noqa: E402
from lsb_jax.tasks.parity import online_points, parity  # noqa: E402
from lsb_jax.optim import OptimConfig, make_optimizer  # noqa: E402

SIZES = (20, 40, 40, 1)
CHECK_STEPS = 200


def parity_batch(key, step, batch_size=20, k=6):
    """The sparse-parity task's online draw (`lsb_jax.tasks.parity`): uniform ±1 inputs, the 20 bits
    of one random uint32 per example, and their parity over the first k."""
    x = online_points(key, step, batch_size, SIZES[0])
    return {"x": x, "y": parity(x, k)}


def loss_fn(params, batch):
    return (mlp_apply(params, batch["x"], "relu")[:, 0] - batch["y"]) ** 2


def flops_per_seed_step(sizes=SIZES, batch_size=20) -> int:
    """Multiply-adds x 2 of one SGD step: the forward dots, every layer's weight gradient, and the
    input gradients of every layer but the first (the data need none)."""
    dots = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * batch_size * (2 * sum(dots) + sum(dots[1:]))


def breakdown(opt, ens_step, init_all, keys, steps: int) -> dict:
    """{part: thunk} timing the parts of (a) as compiled loops over `steps` steps (see the module doc)."""
    from lsb_jax.train.state import data_key
    from lsb_jax.train.step import make_train_step
    opt_step = make_train_step(loss_fn, opt)
    draw = jax.vmap(parity_batch, in_axes=(0, None))
    batch0 = draw(jax.vmap(data_key)(init_all(keys).rng), jnp.int32(0))

    def model_only(state, batch):
        return jax.lax.fori_loop(0, steps, lambda i, s: jax.vmap(opt_step)(s, batch)[0], state)

    def data_only(rng):
        key = jax.vmap(data_key)(rng)
        def body(i, acc):
            b = draw(key, i)
            return acc + jnp.sum(b["x"]) + jnp.sum(b["y"])   # a use of every draw, little else
        return jax.lax.fori_loop(0, steps, body, jnp.float32(0))

    def loop_only(state):
        return jax.lax.fori_loop(0, steps, lambda i, s: ens_step(s)[0], state)

    options = train.loop_compiler_options()    # what fit compiles its own loop with
    model_only = jax.jit(model_only, donate_argnums=0, compiler_options=options)
    loop_only = jax.jit(loop_only, donate_argnums=0, compiler_options=options)
    data_only = jax.jit(data_only, compiler_options=options)
    return {"model (fixed batch)": (lambda: model_only(init_all(keys), batch0), jax.block_until_ready),
            "data draws": (lambda: data_only(keys), jax.block_until_ready),
            "compiled loop": (lambda: loop_only(init_all(keys)), jax.block_until_ready)}


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of one jitted n x n x n float32 matmul (the median of `repeats`)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = interleaved({"mm": (lambda: f(a), jax.block_until_ready)}, rounds=repeats)
    return 2 * n ** 3 / times["mm"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--out", default=None, help="JSON of the results (table rows under 'rows')")
    ap.add_argument("--xla-threads", type=int, default=None, help="XLA's CPU pool size (default: XLA's own)")
    ap.add_argument("--cpu-devices", default=None,
                    help="CPU devices for (a'): a count or 'auto' (default: 'auto', but one with --xla-threads)")
    args = ap.parse_args()
    xla_cpu_pool(args.xla_threads)      # before any computation: may re-execute this script
    # with two CPU devices NPROC=1 no longer limits XLA's pool (the 1024^3 matmul ran at the two-core
    # rate): a pool-size run keeps the CPU one device unless told otherwise
    hosts.use_cpu_cores(args.cpu_devices or ("auto" if args.xla_threads is None else None))
    S, T = args.seeds, args.steps
    opt = make_optimizer(OptimConfig(name="sgd", lr=0.1), T)
    step = train.make_sampled_step(loss_fn, opt, parity_batch)
    init = lambda key: train.init_state(lambda k: init_mlp(k, SIZES), opt.tx, key)
    keys = train.seed_keys(0, S)

    # (a) vmapped seeds through lsb_jax's trainer: `train.fit` runs the whole ensemble as one
    # compiled program; (b) the same jitted step, seed after seed, one dispatch per step; (c) PyTorch.
    # Each call is one whole run; rounds go round-robin over (a), (b), (c) (medians; `_peers`).
    ens_step = jax.vmap(step)
    one = jax.jit(step, donate_argnums=0)
    init_all, init_one = jax.jit(jax.vmap(init)), jax.jit(init)   # compiled: no eager op-by-op init timed

    def run_a():
        return train.fit(ens_step, init_all(keys), T, chunk_size=T, donate_state=True).state

    # (a'): the seeds split over the CPU devices, each device stepping its own block
    mesh = train.member_mesh(members=S)
    cores_step = train.member_vmap(step, (0,), mesh)

    def run_cores():
        return train.fit(cores_step, train.shard_members(init_all(keys), mesh), T, chunk_size=T,
                         donate_state=True).state

    def run_b():
        for i in range(S):
            s = init_one(keys[i])
            for _ in range(T):
                s, _ = one(s)
        return s

    thunks = {"vmap": (run_a, jax.block_until_ready), "sequential_jit": (run_b, jax.block_until_ready)}
    if mesh is not None:
        thunks["vmap_cores"] = (run_cores, jax.block_until_ready)
    work = {k: S * T for k in thunks}
    parts = breakdown(opt, ens_step, init_all, keys, T)
    thunks |= parts
    work |= {k: T for k in parts}      # per step of all S seeds
    try:
        import torch  # noqa: F401
    except ImportError:
        print("(c) PyTorch not installed: skipped")
    else:
        from parity_vmap import torch_run  # the same seed-by-seed PyTorch loop (benchmarks/ is on the path)

        Tt = min(T, 1000)
        thunks |= torch_at_threads({"torch": (lambda: torch_run(S, Tt), None)})
        work |= {k: S * Tt for k in thunks if k.startswith("torch")}
    times = {k: v / work[k] for k, v in interleaved(thunks, rounds=args.repeats).items()}  # s per seed-step
    rate_a, rate_b = 1 / times["vmap"], 1 / times["sequential_jit"]
    # same numbers? member 0 of (a) equals seed 0 of (b) over the first CHECK_STEPS steps (longer runs
    # can part: a rounding difference between the batched and the single dots may flip a ReLU once)
    n = min(T, CHECK_STEPS)
    b0 = init_one(keys[0])
    for _ in range(n):
        b0, _ = one(b0)

    def member0_err(step_fn, state):
        a0 = train.fit(step_fn, state, n, chunk_size=n, donate_state=True).state
        return max(float(jnp.max(jnp.abs(a[0] - b)))
                   for a, b in zip(jax.tree.leaves(a0.params), jax.tree.leaves(b0.params)))

    err = member0_err(ens_step, init_all(keys))
    err_cores = member0_err(cores_step, train.shard_members(init_all(keys), mesh)) if mesh is not None else None

    pool = args.xla_threads or "default"
    print(f"seeds={S} steps={T} device={jax.devices()[0].platform} XLA CPU pool threads={pool}")
    print(f"(a) vmap, train.fit : {rate_a:12.0f} seed-steps/s")
    print(f"(b) sequential jit  : {rate_b:12.0f} seed-steps/s")
    print(f"ratio a/b           : {rate_a / rate_b:8.1f}x   (max |param diff| member 0 vs sequential after {n} "
          f"steps: {err:.2e})")
    if mesh is not None:
        rate_c = 1 / times["vmap_cores"]
        print(f"(a') vmap over {mesh.size} CPU devices: {rate_c:12.0f} seed-steps/s")
        print(f"ratio a'/b          : {rate_c / rate_b:8.1f}x   (max |param diff| member 0: {err_cores:.2e})")

    flops, peak = flops_per_seed_step(), matmul_rate()
    per_step = {k: times[k] * 1e6 for k in parts} | {"train.fit": times["vmap"] * S * 1e6}
    print(f"one step of all {S} seeds, in microseconds (each part its own compiled loop):")
    for k, us in per_step.items():
        print(f"    {k:20s} {us:8.1f}")
    print(f"(a) computes {flops * rate_a / 1e9:.1f} GFLOP/s ({flops} FLOP per seed-step); a 1024^3 matmul here: "
          f"{peak / 1e9:.1f} GFLOP/s")

    tag = "" if args.xla_threads is None else f" (XLA pool {args.xla_threads} thread{'s' * (args.xla_threads > 1)})"
    rows = [compare(f"{S} seeds vmapped vs sequential jit{tag}", times, "vmap", "sequential_jit", work=1,
                    unit="seed-steps", shape=f"parity MLP {SIZES}, batch 20, {T} steps")]
    if mesh is not None:
        rows.append(compare(f"{S} seeds vmapped over {mesh.size} CPU devices vs sequential jit{tag}", times,
                            "vmap_cores", "sequential_jit", work=1, unit="seed-steps",
                            shape=f"parity MLP {SIZES}, batch 20, {T} steps"))
    if "torch@1t" in times:
        rows.append(compare(f"{S} seeds vmapped vs PyTorch seed by seed{tag}", times, "vmap", "torch", work=1,
                            unit="seed-steps", shape=f"parity MLP {SIZES}, batch 20"))
        print(f"(c) PyTorch eager   : {rows[-1]['peer_best_rate']:12.0f} seed-steps/s at its best "
              f"({rows[-1]['peer_best']})")
        print(f"ratio a/c           : {rows[-1]['ratio_vs_best']:8.1f}x")
    print_table(rows)
    if args.out:
        io.write_json(args.out, {"rows": rows, "env": environment(), "max_param_diff_member0": err, "check_steps": n,
                                 "max_param_diff_member0_cores": err_cores, "cpu_devices": jax.device_count(),
                                 "step_us": per_step, "flops_per_seed_step": flops, "gflops": flops * rate_a / 1e9,
                                 "matmul_gflops": peak / 1e9, "xla_cpu_pool": pool})


if __name__ == "__main__":
    main()
