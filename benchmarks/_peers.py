"""Fair peers for the benchmarks: interleaved rounds, a peer at 1 thread and at all threads, the ratio
against the peer's best.

PyTorch at its default thread count can be many times slower than at 1 thread on a loaded 2-core
machine (tiny matmuls pay for the pool); scikit-learn's OpenMP/BLAS pools likewise. Every benchmark
times its peer at each count in `peer_threads()` and reports ours against the fastest, so a ratio
never flatters us. Timings are medians of rounds that go round-robin over all the contenders, so that
load from other processes hits every contender alike.

    times = interleaved({"ours": (f, jax.block_until_ready),
                         **torch_at_threads({"torch": (g, None)})}, rounds=5)
    row = compare("ICL step L4", times, ours="ours", peer="torch", unit="s/step")
    print_table([row])
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from typing import Callable


def peer_threads() -> tuple[int, ...]:
    """The thread counts a peer is timed at: 1 and the machine's cores (one entry when they agree)."""
    return tuple(sorted({1, os.cpu_count() or 1}))


@contextlib.contextmanager
def torch_threads(n: int):
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def native_threads(n: int):
    """OpenMP/BLAS pools (scikit-learn, numpy's BLAS) limited to n threads, through threadpoolctl."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n):
        yield


def at_threads(thunks: dict, ctx: Callable[[int], contextlib.AbstractContextManager],
               threads: tuple[int, ...] | None = None) -> dict:
    """{name: (fn, sync)} -> {"name@1t": ..., "name@Nt": ...}: each thunk run under ctx(threads)."""
    out = {}
    for t in threads or peer_threads():
        for name, (fn, sync) in thunks.items():
            def run(fn=fn, t=t):
                with ctx(t):
                    return fn()
            out[f"{name}@{t}t"] = (run, sync)
    return out


def torch_at_threads(thunks: dict, threads: tuple[int, ...] | None = None) -> dict:
    return at_threads(thunks, torch_threads, threads)


def sklearn_at_threads(thunks: dict, threads: tuple[int, ...] | None = None) -> dict:
    return at_threads(thunks, native_threads, threads)


def xla_cpu_pool(threads: int | None) -> None:
    """Re-executes this script with XLA's CPU thread pool at `threads` threads (None: leave it).

    XLA's CPU client sizes its pool from the NPROC environment variable when it starts (the first
    computation), so the setting needs a process of its own; call this before any jax computation.
    A pool of one thread can be faster for tiny per-op work on a small machine (no hand-offs
    between threads), slower for large matmuls: benchmarks report both settings.
    """
    if threads is None or os.environ.get("NPROC") == str(threads):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "NPROC": str(threads)})


def interleaved(thunks: dict, rounds: int = 5, calls: int = 1, warmup: int = 1) -> dict[str, float]:
    """{name: median seconds per call}. thunks: {name: (fn, sync)} where sync(fn()) waits for the
    result (None: nothing to wait for). Each is warmed up `warmup` times, then `rounds` rounds go
    round-robin over all of them, `calls` calls each per round."""
    for fn, sync in thunks.values():
        for _ in range(warmup):
            out = fn()
            if sync is not None:
                sync(out)
    times: dict[str, list[float]] = {name: [] for name in thunks}
    for _ in range(rounds):
        for name, (fn, sync) in thunks.items():
            t0 = time.perf_counter()
            out = None
            for _ in range(calls):
                out = fn()
            if sync is not None:
                sync(out)
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def best_peer(times: dict[str, float], peer: str) -> tuple[str, float]:
    """(name, seconds) of the fastest entry named `peer` or `peer@<n>t`."""
    cands = {k: v for k, v in times.items() if k == peer or k.startswith(peer + "@")}
    if not cands:
        raise KeyError(f"no timing for peer '{peer}' among {sorted(times)}")
    return min(cands.items(), key=lambda kv: kv[1])


def compare(name: str, times: dict[str, float], ours: str, peer: str, *, work: float | None = None,
            unit: str = "s", shape: str = "", timing: str = "median of interleaved rounds") -> dict:
    """One table row: ours vs the peer's best thread count. ratio = peer time / our time (> 1: we are
    faster). `work` (items per call, e.g. tokens or seed-steps) turns times into rates."""
    peer_name, peer_s = best_peer(times, peer)
    at = {k.split("@", 1)[1] if "@" in k else "default": v for k, v in times.items()
          if k == peer or k.startswith(peer + "@")}
    row = {"benchmark": name, "shape": shape, "ours_s": times[ours], "peer": peer, "peer_best": peer_name,
           "peer_best_s": peer_s, "peer_s_by_threads": at, "ratio_vs_best": peer_s / times[ours], "unit": unit,
           "timing": timing}
    if work is not None:
        row["ours_rate"], row["peer_best_rate"] = work / times[ours], work / peer_s
    return row


def greedy_picks_agreement(x_NxD, ours_K, peer_K) -> dict:
    """How far two greedy farthest-point pick sequences from the same start agree.

    Two float32 implementations may add up a distance in different orders and so break a near-tie
    differently; after that the sequences part legitimately. Returned: `agree` (the length of the common
    prefix), `first_difference` (its index, or None) and `tie_gap`: at that index, the relative gap
    between the two picks' distances to the common prefix, in float64 (near 0: a tie broken by
    rounding; large: a wrong pick)."""
    import numpy as np
    a, b = np.asarray(ours_K), np.asarray(peer_K)
    m = min(len(a), len(b))
    differ = np.flatnonzero(a[:m] != b[:m])
    if differ.size == 0:
        return {"agree": m, "first_difference": None, "tie_gap": None}
    d = int(differ[0])
    if d == 0:                     # other starts: nothing to compare the picks by
        return {"agree": 0, "first_difference": 0, "tie_gap": float("inf")}
    prefix, cand = np.asarray(x_NxD[a[:d]], np.float64), np.asarray(x_NxD[np.asarray([a[d], b[d]])], np.float64)
    dist = ((cand[:, None, :] - prefix[None, :, :]) ** 2).sum(-1).min(1)
    return {"agree": d, "first_difference": d, "tie_gap": float(abs(dist[0] - dist[1]) / max(dist.max(), 1e-300))}


def environment() -> dict:
    """Where the numbers come from: CPU, core count, the load average at the time of the table, and
    XLA_FLAGS (the test suite compiles at -O0: timings from such a run are not the code's speed)."""
    import jax
    env = {"platform": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__,
           "device": jax.devices()[0].device_kind, "loadavg": list(os.getloadavg()),
           "xla_cpu_pool": os.environ.get("NPROC", "default"), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    env["python"] = platform.python_version()
    from importlib import metadata
    for name in ("jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "transformers", "peft"):
        try:   # what a failure on another machine's image is diagnosed with
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return env


def print_table(rows: list[dict], out=print) -> None:
    """One line per benchmark: ours, the peer at each thread count, the ratio against its best."""
    width = max([len(r["benchmark"]) for r in rows] + [9])
    out(f"{'benchmark':{width}s}  {'ours':>10s}  {'peer':24s} {'peer by threads':30s} {'vs best':>8s}")
    for r in rows:
        unit = " " + r["unit"] if r.get("measure") == "memory" else ""   # other units are per-unit seconds
        peers = ", ".join(f"{t} {s:.4g}{unit}" for t, s in r["peer_s_by_threads"].items())
        out(f"{r['benchmark']:{width}s}  {format(r['ours_s'], '.4g') + unit:>10s}  {r['peer'][:24]:24s} {peers:30s} "
            f"{r['ratio_vs_best']:7.2f}x")
    how = sorted({r.get("timing", "") for r in rows} - {""})
    out(f"(seconds per call or per unit of work unless a unit is shown; {'; '.join(how)}; vs best = the peer at its "
        "best thread count / ours, > 1: lsb_jax faster, or for memory smaller)")
