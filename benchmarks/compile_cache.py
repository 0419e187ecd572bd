"""An experiment run again with its compiled programs kept (`lsb --compile-cache`) vs compiled anew.

For each experiment (its quick config), each run is `lsb run NAME --force` in a process of its own,
into the same run folder:
  (off)  `--compile-cache off`: every program compiled, as every run did before the cache;
  (cold) an empty cache folder: compiles every program and writes it (once, first);
  (warm) the same folder again: loads every program instead of compiling it.
(off) and (warm) alternate for --rounds rounds after (cold); medians of the wall time of the whole
process (imports included). Each process also reports JAX's own counters (`jax.monitoring`): the
seconds of backend compilation, and the cache's hits and misses. The results of (warm) must equal
those of (off) (results.json less every field that measures seconds): the loaded programs are the
compiled ones. The peer is our own run without the cache: ratio = off / warm.

    .venv/bin/python benchmarks/compile_cache.py [--experiments parity_subsample,sft_selection] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _peers import compare, environment, print_table  # noqa: E402

# one `lsb` process that also writes JAX's compile counters to argv[1]
CHILD = """
import collections, json, sys
from jax import monitoring
counts, secs = collections.Counter(), collections.Counter()
monitoring.register_event_listener(lambda name, **kw: counts.update([name]))
def on_duration(name, seconds, **kw):
    counts.update([name]); secs[name] += seconds
monitoring.register_event_duration_secs_listener(on_duration)
from lsb_jax import cli
rc = cli.main(sys.argv[2:])
json.dump({"rc": rc, "compile_s": secs["/jax/core/compile/backend_compile_duration"],
           "compiles": counts["/jax/core/compile/backend_compile_duration"],
           "hits": counts["/jax/compilation_cache/cache_hits"],
           "misses": counts["/jax/compilation_cache/cache_misses"]}, open(sys.argv[1], "w"))
sys.exit(rc)
"""


def lsb_run(work: Path, name: str, cache: str) -> dict:
    """One `lsb run` in its own process: wall seconds and JAX's counters."""
    stats = work / "counters.json"
    cmd = [sys.executable, "-c", CHILD, str(stats), "--compile-cache", cache, "run", name, "--out", "run",
           "--force", "--no-progress"]
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=work, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{name} ({cache}) failed: {out.stderr[-2000:]}")
    return {"wall_s": wall, **json.loads(stats.read_text())}


def without_seconds(x):
    """results.json less the fields that measure time."""
    if isinstance(x, dict):
        return {k: without_seconds(v) for k, v in x.items() if "seconds" not in k}
    if isinstance(x, list):
        return [without_seconds(v) for v in x]
    return x


def bench(name: str, rounds: int) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp), str(Path(tmp) / "cache")
        runs = {"cold": [lsb_run(work, name, cache)], "off": [], "warm": []}
        results = {}
        for r in range(rounds):
            for mode in ("off", "warm"):
                runs[mode].append(lsb_run(work, name, cache if mode == "warm" else "off"))
                if r == 0:
                    results[mode] = without_seconds(json.loads((work / "run" / "results.json").read_text()))
        entries = len(list(Path(cache).iterdir()))
    times = {mode: statistics.median(x["wall_s"] for x in v) for mode, v in runs.items()}
    out = {"runs": runs, "times": times, "cache_entries": entries, "same_results": results["off"] == results["warm"]}
    return out, compare(f"lsb run {name} (quick) again, compile cache warm vs off", times, "warm", "off",
                        shape="a whole process, imports included", timing=f"median of {rounds} interleaved rounds")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", default="parity_subsample,mlsa_stagewise,sft_selection")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON of the results (table rows under 'rows')")
    args = ap.parse_args()
    res, rows = {}, []
    for name in args.experiments.split(","):
        res[name], row = bench(name, args.rounds)
        rows.append(row)
        r = res[name]
        t, off, warm = r["times"], r["runs"]["off"][0], r["runs"]["warm"][0]
        print(f"{name}: off {t['off']:.1f} s, cold {t['cold']:.1f} s, warm {t['warm']:.1f} s; backend compile off "
              f"{off['compile_s']:.1f} s ({off['compiles']} programs), warm {warm['compile_s']:.1f} s "
              f"({warm['hits']} hits, {warm['misses']} misses); {r['cache_entries']} entries; "
              f"results equal: {r['same_results']}")
    print_table(rows)
    if args.out:
        from lsb_jax import io  # noqa: PLC0415
        io.write_json(args.out, {"rows": rows, "env": environment(), "experiments": res})


if __name__ == "__main__":
    main()
