"""The MLSA trainer: scan-compiled steps vs a plain Python/numpy loop, and 64-way vmap vs 64 runs.

Model: MLSA with D = H = 4 (Sigma = diag(4, 2, 1, 0.5)), closed-form population loss, SAM
(global normalization, two gradients per step) or GD. In one run on the same machine:
  (a) `dynamics.simulator`: the whole trajectory as one jitted `lax.scan`/`fori_loop`;
  (b) the same update written in numpy (analytic gradients, float64), one Python iteration per step;
  (c) 64 members (seeds x rho) vmapped in one program, compiled as the theory's grids are
      (`dynamics.grid_compiler_options`), vs (d) the 64 runs one after another with (a);
  (c') the 64 members with the CPU as one device per core (`train.hosts.use_cpu_cores`) and the
      members split over them (`train.member_vmap`: each core runs its own block), vs (d).
Rates are steps/s after compilation (best of --repeats). Prints ratios a/b, c/d and c'/d.

    .venv/bin/python benchmarks/theory_scan.py [--steps 100000] [--members 64] [--method sam] [--cpu-devices N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import compare, environment, print_table  # noqa: E402

from lsb_jax import io, train  # noqa: E402
from lsb_jax.train import hosts  # noqa: E402
from lsb_jax.theory import dynamics, mlsa  # noqa: E402

LAM = np.array([4.0, 2.0, 1.0, 0.5])


def numpy_run(p, lam, lr, rho, steps, method):
    """Plain per-step loop: GD/SAM on the N = inf population loss, analytic gradients in numpy."""
    p = {k: np.array(v, np.float64) for k, v in p.items()}
    sig2, lam3 = np.diag(lam ** 2), lam ** 2

    def grad(p):
        m = np.einsum("h,hi,hj->ij", p["v"], p["q"], p["k"])
        gm = 2 * lam[:, None] * m * lam3[None, :] - 2 * sig2
        return {"v": np.einsum("ij,hi,hj->h", gm, p["q"], p["k"]), "q": p["v"][:, None] * (p["k"] @ gm.T),
                "k": p["v"][:, None] * (p["q"] @ gm)}

    for _ in range(steps):
        g = grad(p)
        if method == "sam":
            scale = rho / max(np.sqrt(sum((x ** 2).sum() for x in g.values())), 1e-12)
            g = grad({k: p[k] + scale * g[k] for k in p})
        p = {k: p[k] - lr * g[k] for k in p}
    return p


def best_of(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--numpy-steps", type=int, default=5_000, help="the numpy loop runs this many (rate extrapolates)")
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--method", default="sam", choices=("gd", "sam"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON of the results (table rows under 'rows')")
    ap.add_argument("--cpu-devices", default="auto", help="CPU devices for (c'): a count or 'auto' (one per core)")
    args = ap.parse_args()
    hosts.use_cpu_cores(args.cpu_devices)     # before any computation
    spec = mlsa.spectrum(LAM)
    lr, rho = 0.02, 0.04
    p0 = mlsa.init_params(jax.random.PRNGKey(0), 4, 4, mlsa.Init("random", 0.05))
    run = dynamics.simulator(mlsa.population_loss, num_steps=args.steps, record_every=args.steps // 100,
                             method=args.method)
    jax.block_until_ready(run(p0, spec, lr, rho))
    t_a = best_of(lambda: run(p0, spec, lr, rho), args.repeats)
    t = time.perf_counter()
    ref = numpy_run(p0, LAM, lr, rho, args.numpy_steps, args.method)
    t_b = (time.perf_counter() - t) / args.numpy_steps * args.steps
    short = dynamics.simulator(mlsa.population_loss, num_steps=args.numpy_steps, record_every=args.numpy_steps,
                               method=args.method)(p0, spec, lr, rho).params
    diff = max(float(np.max(np.abs(np.asarray(short[k]) - ref[k]))) for k in ref)
    print(f"(a) scan-compiled {args.method}: {args.steps / t_a:,.0f} steps/s ({args.steps:,} steps in {t_a:.2f} s)")
    print(f"(b) numpy per-step loop:  {args.steps / t_b:,.0f} steps/s (timed over {args.numpy_steps:,} steps; "
          f"max |param diff| vs (a) after them: {diff:.1e})")
    print(f"ratio a/b: {t_b / t_a:.1f}x")

    # (c) vs (d): members = seeds x rho
    m = args.members
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(1), i))(jnp.arange(m))
    params = jax.vmap(lambda k: mlsa.init_params(k, 4, 4, mlsa.Init("random", 0.05)))(keys)
    rhos = jnp.linspace(0.0, 0.06, m)
    steps_c = max(args.steps // 10, 100)
    run_c = dynamics.simulator(mlsa.population_loss, num_steps=steps_c, record_every=steps_c // 10, method=args.method)
    grid = dynamics.grid_compiler_options()       # what the theory's grids compile with (`theory.sweeps`)
    vm = jax.jit(jax.vmap(run_c, in_axes=(0, None, None, 0)), compiler_options=grid)
    jax.block_until_ready(vm(params, spec, lr, rhos))
    t_c = best_of(lambda: vm(params, spec, lr, rhos), args.repeats)
    one = lambda i: run_c(jax.tree.map(lambda x: x[i], params), spec, lr, rhos[i])
    jax.block_until_ready(one(0))
    t_d = best_of(lambda: [one(i) for i in range(m)][-1], 1)
    print(f"(c) {m} members vmapped: {m * steps_c / t_c:,.0f} member-steps/s")
    print(f"(d) {m} runs one by one:  {m * steps_c / t_d:,.0f} member-steps/s")
    print(f"ratio c/d: {t_d / t_c:.1f}x")
    mesh = train.member_mesh(members=m)
    split_diff = None
    if mesh is not None:
        sp = jax.jit(train.member_vmap(run_c, (0, None, None, 0), mesh), compiler_options=grid)
        p_s, r_s = train.shard_members(params, mesh), train.shard_members(rhos, mesh)
        out_s = jax.block_until_ready(sp(p_s, spec, lr, r_s))
        t_s = best_of(lambda: sp(p_s, spec, lr, r_s), args.repeats)
        out_c = vm(params, spec, lr, rhos)
        split_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                         for a, b in zip(jax.tree.leaves(out_s.params), jax.tree.leaves(out_c.params)))
        print(f"(c') {m} members over {mesh.size} CPU devices: {m * steps_c / t_s:,.0f} member-steps/s "
              f"(max |param diff| vs (c): {split_diff:.1e})")
        print(f"ratio c'/d: {t_d / t_s:.1f}x")
    # seconds per (member-)step; numpy's loop is single-threaded Python (its BLAS is not used at D = 4)
    times = {"scan": t_a / args.steps, "numpy_loop": t_b / args.steps, "vmapped": t_c / (m * steps_c),
             "one_by_one": t_d / (m * steps_c)}
    if mesh is not None:
        times["split"] = t_s / (m * steps_c)
    rows = [compare(f"MLSA {args.method} scan vs numpy loop", times, "scan", "numpy_loop", work=1, unit="steps",
                    shape="D=H=4, population loss", timing="best of repeats"),
            compare(f"MLSA {args.method} {m} members vmapped vs one by one", times, "vmapped", "one_by_one", work=1,
                    unit="member-steps", shape="D=H=4, population loss", timing="best of repeats")]
    if mesh is not None:
        rows.append(compare(f"MLSA {args.method} {m} members over {mesh.size} CPU devices vs one by one", times,
                            "split", "one_by_one", work=1, unit="member-steps", shape="D=H=4, population loss",
                            timing="best of repeats"))
    print_table(rows)
    if args.out:
        io.write_json(args.out, {"rows": rows, "env": environment(), "max_param_diff_vs_numpy": diff,
                                 "max_param_diff_split_vs_vmap": split_diff, "cpu_devices": jax.device_count()})


if __name__ == "__main__":
    main()
