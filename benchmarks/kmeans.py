"""k-means on per-example loss trajectories: lsb_jax vs scikit-learn, in one run on the same CPU.

Data: N x K float32 log-loss trajectories (default 1M x 15, the size issue 8 asks for), a planted
two-group mixture like a proxy's trajectories: "easy" examples whose loss falls fast, "hard"
ones (30%) that stay high, with per-example noise. Both implementations get the same data, k = 2,
the same number of k-means++ restarts (`--n-init`) and at most the same Lloyd iterations
(`--iters`); both stop a restart early at a fixed point (scikit-learn with tol=0 and
algorithm="lloyd": its "strict convergence", no label changed). scikit-learn is timed at 1 thread
and at all cores (threadpoolctl); the ratio is against its faster setting. With several restarts,
ours is also timed with the restarts vmapped (a batched Lloyd step) instead of mapped one after
another, the alternative `clustering._restarts` rejects.
Ours is also timed with the other XLA:CPU kernel choice for its feature count
(`clustering.OWN_KERNELS_UP_TO`: XLA's own kernels up to that many features, YNNPACK fusions above),
and `--sweep-features` times one Lloyd iteration both ways over feature counts (N = --sweep-n):
the measurement behind that threshold, on the machine at hand.
Reported: median wall seconds over interleaved rounds (compile apart), the iterations each ran,
the inertia of each, and label agreement with the planted groups and between the two (up to the
label swap).

    .venv/bin/python benchmarks/kmeans.py                      # N=1M, K=15, n_init 1 and 4
    .venv/bin/python benchmarks/kmeans.py --n 100000 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import compare, environment, interleaved, print_table, sklearn_at_threads  # noqa: E402

from lsb_jax import io  # noqa: E402
from lsb_jax.tracking import clustering  # noqa: E402
from lsb_jax.tracking.clustering import kmeans  # noqa: E402


def make_trajectories(n: int, k: int, hard_frac: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    hard_N = rng.random(n) < hard_frac
    t_K = np.linspace(0.0, 1.0, k)
    rate_N = np.where(hard_N, 0.3, 3.0) * rng.lognormal(0.0, 0.3, n)
    start_N = rng.normal(1.0, 0.1, n)
    x = start_N[:, None] - rate_N[:, None] * t_K[None, :] + 0.15 * rng.standard_normal((n, k))
    return x.astype(np.float32), hard_N


def agreement(a, b) -> float:
    same = float(np.mean(np.asarray(a) == np.asarray(b)))
    return max(same, 1.0 - same)  # labels up to the swap (k = 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=15, help="trajectory length (checkpoints)")
    ap.add_argument("--n-init", type=int, nargs="+", default=[1, 4], help="restart counts to time")
    ap.add_argument("--iters", type=int, default=30, help="at most this many Lloyd iterations (both stop early "
                                                           "at a fixed point)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians reported)")
    ap.add_argument("--sweep-features", type=int, nargs="*", default=[4, 8, 15, 24, 32, 64],
                    help="feature counts at which one Lloyd iteration is timed with each kernel choice")
    ap.add_argument("--sweep-n", type=int, default=200_000)
    ap.add_argument("--out", default="runs/benchmarks/kmeans.json")
    args = ap.parse_args()

    from sklearn import __version__ as skv
    from sklearn.cluster import KMeans

    x, hard = make_trajectories(args.n, args.k)
    xj = jax.device_put(x)
    print(f"data {x.shape} float32, planted hard fraction {hard.mean():.3f}; jax {jax.__version__}, "
          f"devices {jax.devices()}, scikit-learn {skv}")
    rows, res = [], {"n": args.n, "k": args.k, "iters": args.iters, "env": environment(), "runs": {}}
    for n_init in args.n_init:
        keys = jax.random.split(jax.random.PRNGKey(1), n_init)
        # the same work on both sides: n_init k-means++ restarts, at most --iters Lloyd iterations each
        ours = lambda: kmeans(xj, 2, key=jax.random.PRNGKey(1), n_init=n_init, iters=args.iters)  # noqa: B023
        sk = lambda: KMeans(n_clusters=2, n_init=n_init, max_iter=args.iters, tol=0.0, init="k-means++",  # noqa: B023
                            algorithm="lloyd", random_state=0).fit(x)
        thunks = {"ours": (ours, None), **sklearn_at_threads({"sklearn": (sk, None)})}
        own = args.k <= clustering.OWN_KERNELS_UP_TO   # the other kernel choice, same work
        other = lambda: clustering._restarts(keys, xj, 2, args.iters, own_kernels=not own)  # noqa: B023
        thunks["ours_other_kernels"] = (other, jax.block_until_ready)
        if n_init > 1:  # the alternative: restarts vmapped (a batched Lloyd step) instead of mapped
            vm = jax.jit(jax.vmap(clustering._lloyd, in_axes=(0, None, None, None)), static_argnums=(2, 3))
            thunks["ours_vmapped_restarts"] = (lambda: vm(keys, xj, 2, args.iters), jax.block_until_ready)  # noqa: B023
        times = interleaved(thunks, rounds=args.repeats)
        labels, _, inertia = ours()
        iters_ours = np.asarray(clustering._restarts(keys, xj, 2, args.iters)[3]).tolist()
        km = sk()
        row = compare(f"k-means {args.n}x{args.k} k=2 n_init={n_init}", times, "ours", "sklearn",
                      shape=f"N={args.n} F={args.k} k=2 n_init={n_init} max_iter={args.iters}")
        rows.append(row)
        res["runs"][n_init] = row | {
            "ours_vmapped_restarts_s": times.get("ours_vmapped_restarts"),
            "kernels": "xla" if own else "ynnpack", "ours_other_kernels_s": times["ours_other_kernels"],
            "inertia_other_kernels": float(np.min(np.asarray(other()[2]))),
            "iterations_ours_per_restart": iters_ours, "iterations_sklearn_best_restart": int(km.n_iter_),
            "inertia_ours": float(inertia), "inertia_sklearn": float(km.inertia_),
            "agree_planted_ours": agreement(labels, hard), "agree_planted_sklearn": agreement(km.labels_, hard),
            "agree_ours_sklearn": agreement(labels, km.labels_)}
        r = res["runs"][n_init]
        print(f"n_init={n_init}: ours {times['ours']:.3f} s ({iters_ours} iterations), sklearn best "
              f"{row['peer_best']} {row['peer_best_s']:.3f} s ({km.n_iter_} iterations in its best restart)"
              + (f", ours with vmapped restarts {times['ours_vmapped_restarts']:.3f} s" if n_init > 1 else "")
              + f"; ours with {'YNNPACK fusions' if own else 'XLA kernels'} instead "
              f"{times['ours_other_kernels']:.3f} s")
        print(f"  inertia ours {r['inertia_ours']:.6g} sklearn {r['inertia_sklearn']:.6g}; planted agreement "
              f"{r['agree_planted_ours']:.4f} / {r['agree_planted_sklearn']:.4f}; labels agree "
              f"{r['agree_ours_sklearn']:.5f}")
    if args.sweep_features:
        res["feature_sweep"] = feature_sweep(args.sweep_features, args.sweep_n, args.iters, args.repeats)
    print_table(rows)
    io.write_json(args.out, res | {"rows": rows})


def feature_sweep(features, n: int, iters: int, rounds: int) -> list[dict]:
    """ms per Lloyd iteration (one restart) with XLA's own kernels and with YNNPACK fusions, by F."""
    out = []
    print(f"one Lloyd iteration, N={n}, k=2 (median of {rounds} interleaved rounds); ours uses XLA's own "
          f"kernels up to F={clustering.OWN_KERNELS_UP_TO}")
    for f in features:
        xj = jax.device_put(make_trajectories(n, f)[0])
        keys = jax.random.split(jax.random.PRNGKey(1), 1)
        run = {kind: (lambda own=(kind == "xla"): clustering._restarts(keys, xj, 2, iters, own_kernels=own),  # noqa: B023
                      jax.block_until_ready) for kind in ("xla", "ynnpack")}
        times = interleaved(run, rounds=rounds)
        its = {kind: int(np.sum(fn()[3])) for kind, (fn, _) in run.items()}
        row = {"features": f, **{f"{kind}_ms_per_iteration": 1e3 * times[kind] / its[kind] for kind in run}}
        row["faster"] = min(run, key=lambda kind: row[f"{kind}_ms_per_iteration"])
        out.append(row)
        print(f"  F={f:4d}: XLA kernels {row['xla_ms_per_iteration']:.3f} ms, YNNPACK "
              f"{row['ynnpack_ms_per_iteration']:.3f} ms -> {row['faster']} faster; ours: "
              f"{'xla' if f <= clustering.OWN_KERNELS_UP_TO else 'ynnpack'}")
    return out


if __name__ == "__main__":
    main()
