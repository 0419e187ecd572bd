"""Greedy k-center (farthest-point) selection: lsb_jax vs a straightforward numpy loop, one run.

Data: N x D standard-normal float32 points (seed 0), the same in both workers. Each
implementation runs in its own subprocess so that its memory is measured alone:
  (a) `lsb_jax.data.selection.kcenter_greedy`: one compiled `lax.fori_loop`, one
      matrix-vector product per pick, [N] state (compile time reported apart);
  (b) numpy: precomputed norms and one BLAS matrix-vector product per pick (||x||^2 - 2 x.c +
      ||c||^2), at 1 BLAS thread and at all cores (each its own process); the faster counts.
Reported per implementation: wall time of the selection, peak resident memory during the
selection (sampled every 5 ms from /proc/self/statm) and the resident memory before it (the data).
numpy is slow: `--numpy-picks m` times only its first m picks and extrapolates linearly to k
(every pick costs the same pass over the data). The first m picks of (a) and (b) are compared
(float32 rounding may break a near-tie differently after many picks: the first mismatch is printed).

    .venv/bin/python benchmarks/kcenter.py --quick                  # N=20k, k=200: seconds
    .venv/bin/python benchmarks/kcenter.py                          # N=1M, D=384, k=10k
    .venv/bin/python benchmarks/kcenter.py --numpy-picks 300        # full size, numpy extrapolated
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Samples this process's resident memory in a thread; `peak` is the maximum seen."""

    def __init__(self, every: float = 0.005):
        self.every, self.peak, self._stop = every, rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def make_data(n: int, d: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)


def kcenter_numpy(x_NxD: np.ndarray, k: int, start: int = 0) -> np.ndarray:
    """numpy at its best: precomputed squared norms and one BLAS matrix-vector product per pick,
    ||x||^2 - 2 x.c + ||c||^2 (the data are centred, standard normal: no cancellation), picks marked."""
    sq_N = np.einsum("nd,nd->n", x_NxD, x_NxD)

    def d2(i):
        c_D = x_NxD[i]
        return np.maximum(sq_N - 2.0 * (x_NxD @ c_D) + c_D @ c_D, 0.0)

    index_K = np.empty(k, np.int64)
    index_K[0] = start
    dist_N = d2(start)
    dist_N[start] = -1.0
    for j in range(1, k):
        i = int(np.argmax(dist_N))
        index_K[j] = i
        np.minimum(dist_N, d2(i), out=dist_N)
        dist_N[i] = -1.0
    return index_K


def worker(impl: str, n: int, d: int, k: int, picks: int) -> dict:
    x = make_data(n, d)
    if impl == "jax":
        import jax
        import jax.numpy as jnp

        from lsb_jax.data import selection

        x_dev = jnp.asarray(x)
        del x
        jax.block_until_ready(x_dev)
        t0 = time.perf_counter()
        compiled = selection._kcenter.lower(x_dev, jnp.int32(0), k=k).compile()
        compile_s = time.perf_counter() - t0
        base = rss_bytes()
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            out = compiled(x_dev, jnp.int32(0))
            jax.block_until_ready(out)
            seconds = time.perf_counter() - t0
        index = np.asarray(out.index_K)
        h_min = float(out.h_min)
        extra = {"compile_s": compile_s, "device": jax.devices()[0].platform}
        measured_picks = k
    else:
        base = rss_bytes()
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            index = kcenter_numpy(x, picks)
            seconds = time.perf_counter() - t0
        h_min = float("nan")
        extra = {}
        measured_picks = picks
    per_pick = seconds / max(1, measured_picks - 1)
    return {"impl": impl, "seconds": seconds, "picks_timed": measured_picks, "seconds_per_pick": per_pick,
            "seconds_for_k": per_pick * (k - 1), "rss_before_gb": base / 2**30, "peak_rss_gb": mem.peak / 2**30,
            "h_min": h_min, "index": index.tolist(), **extra}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10_000)
    ap.add_argument("--numpy-picks", type=int, default=None, help="time numpy on its first m picks (default: all k)")
    ap.add_argument("--quick", action="store_true", help="N=20000, k=200 (smoke test)")
    ap.add_argument("--out", default=None, help="JSON of the results (the table row under 'rows')")
    ap.add_argument("--worker", choices=("jax", "numpy"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n, args.k = 20_000, 200
    picks = min(args.k, args.numpy_picks or args.k)
    if not 2 <= args.k <= args.n:
        ap.error("need 2 <= k <= n")
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.k, picks)))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _peers import compare, environment, greedy_picks_agreement, peer_threads, print_table

    results = {}
    for impl, threads in [("jax", None)] + [("numpy", t) for t in peer_threads()]:
        cmd = [sys.executable, __file__, "--worker", impl, "--n", str(args.n), "--dim", str(args.dim),
               "--k", str(args.k), "--numpy-picks", str(picks)]
        env = dict(os.environ)
        if threads is not None:      # BLAS threads of the numpy peer
            env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"{impl} worker failed:\n{out.stderr}")
        results[impl if threads is None else f"numpy@{threads}t"] = json.loads(out.stdout.strip().splitlines()[-1])

    a = results["jax"]
    numpy_runs = {k: v for k, v in results.items() if k.startswith("numpy@")}
    b = min(numpy_runs.values(), key=lambda r: r["seconds_for_k"])

    same = np.asarray(a["index"][:picks]) == np.asarray(b["index"][:picks])
    data = None if same.all() else make_data(args.n, args.dim)   # only to tell a broken tie from a wrong pick
    agreement = greedy_picks_agreement(data, a["index"][:picks], b["index"][:picks])
    data_gb = args.n * args.dim * 4 / 2**30
    print(f"N={args.n} D={args.dim} k={args.k} (data {data_gb:.2f} GiB float32) device={a['device']}")
    print(f"(a) lsb_jax kcenter_greedy : {a['seconds']:9.2f} s for k picks "
          f"({a['seconds_per_pick'] * 1e3:.2f} ms/pick), "
          f"compile {a['compile_s']:.2f} s; RSS before {a['rss_before_gb']:.2f} GiB, peak {a['peak_rss_gb']:.2f} GiB")
    note = "" if b["picks_timed"] == args.k else f" (timed {b['picks_timed']} picks, extrapolated)"
    print(f"(b) numpy loop             : {b['seconds_for_k']:9.2f} s for k picks "
          f"({b['seconds_per_pick'] * 1e3:.2f} ms/pick)"
          f"{note}; RSS before {b['rss_before_gb']:.2f} GiB, peak {b['peak_rss_gb']:.2f} GiB")
    print(f"speedup a/b                : {b['seconds_for_k'] / a['seconds']:8.1f}x")
    print(f"extra memory (peak - before): jax {a['peak_rss_gb'] - a['rss_before_gb']:.3f} GiB, "
          f"numpy {b['peak_rss_gb'] - b['rss_before_gb']:.3f} GiB")
    print(f"h_min of the jax selection : {a['h_min']:.4f}")
    print(f"picks agree                : {int(same.sum())}/{picks}" +
          ("" if agreement["first_difference"] is None else
           f" (first difference at pick {agreement['first_difference']}, where the two picks' distances to the "
           f"picks before differ by {agreement['tie_gap']:.2g} relative)"))

    row = compare(f"k-center {args.k} of {args.n}x{args.dim}",
                  {"ours": a["seconds"], **{k: r["seconds_for_k"] for k, r in numpy_runs.items()}},
                  "ours", "numpy", shape=f"N={args.n} D={args.dim} k={args.k}",
                  timing="one run each, in its own process; numpy at 1 BLAS thread and at all cores")
    print_table([row])
    if args.out:
        from lsb_jax import io
        io.write_json(args.out, {"rows": [row], "env": environment(), "jax": a | {"index": None},
                                 "numpy": b | {"index": None}, "picks_agree": int(same.sum()),
                                 "first_difference": agreement["first_difference"], "tie_gap": agreement["tie_gap"]})


if __name__ == "__main__":
    main()
