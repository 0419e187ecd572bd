"""k-means on per-example loss trajectories: lsb_jax vs scikit-learn, in one run on the same CPU.

Data: N x K float32 log-loss trajectories (default 1M x 15, the size issue 8 asks for), a planted
two-group mixture like a proxy's trajectories: "easy" examples whose loss falls fast, "hard"
ones (30%) that stay high, with per-example noise. Both implementations get the same data, k = 2,
the same number of k-means++ restarts (`--n-init`) and Lloyd iterations (`--iters`; scikit-learn
with tol=0 so it runs them all unless converged exactly, algorithm="lloyd").
Reported: wall seconds (ours: compile apart, then the median of --repeats calls), the inertia of
each, and label agreement with the planted groups and between the two (up to the label swap).

    .venv/bin/python benchmarks/kmeans.py                      # N=1M, K=15
    .venv/bin/python benchmarks/kmeans.py --n 100000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from lsb_jax.tracking.clustering import kmeans


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
    ap.add_argument("--n-init", type=int, default=4)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="runs/benchmarks/kmeans.json")
    args = ap.parse_args()

    x, hard = make_trajectories(args.n, args.k)
    print(f"data {x.shape} float32, planted hard fraction {hard.mean():.3f}; jax {jax.__version__}, "
          f"devices {jax.devices()}")

    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    out = kmeans(x, 2, key=key, n_init=args.n_init, iters=args.iters)
    jax.block_until_ready(out)
    first = time.perf_counter() - t0
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(kmeans(x, 2, key=jax.random.PRNGKey(r + 1), n_init=args.n_init, iters=args.iters))
        times.append(time.perf_counter() - t0)
    ours_s = float(np.median(times))
    labels, _, inertia = (np.asarray(v) for v in out)

    from sklearn import __version__ as skv
    from sklearn.cluster import KMeans

    sk_times = []
    for r in range(args.repeats):
        km = KMeans(n_clusters=2, n_init=args.n_init, max_iter=args.iters, tol=0.0, init="k-means++",
                    algorithm="lloyd", random_state=r)
        t0 = time.perf_counter()
        km.fit(x)
        sk_times.append(time.perf_counter() - t0)
    sk_s = float(np.median(sk_times))

    res = {
        "n": args.n, "k": args.k, "n_init": args.n_init, "iters": args.iters,
        "ours_s": ours_s, "ours_first_call_s_incl_compile": first, "sklearn_s": sk_s, "sklearn_version": skv,
        "speedup_vs_sklearn": sk_s / ours_s,
        "inertia_ours": float(inertia), "inertia_sklearn": float(km.inertia_),
        "agree_planted_ours": agreement(labels, hard), "agree_planted_sklearn": agreement(km.labels_, hard),
        "agree_ours_sklearn": agreement(labels, km.labels_),
    }
    print(f"{'':12s}{'seconds':>10s}{'inertia':>16s}{'planted agreement':>20s}")
    print(f"{'lsb_jax':12s}{ours_s:10.2f}{res['inertia_ours']:16.6g}{res['agree_planted_ours']:20.4f}"
          f"   (first call incl. compile {first:.2f} s)")
    print(f"{'sklearn':12s}{sk_s:10.2f}{res['inertia_sklearn']:16.6g}{res['agree_planted_sklearn']:20.4f}")
    print(f"speed-up {res['speedup_vs_sklearn']:.2f}x; labels agree {res['agree_ours_sklearn']:.5f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
