"""Every benchmark in one sitting: one table of ratios against each peer at its best thread count.

Runs the benchmark scripts one after another (each in its own process, so that none inherits
another's threads or memory), collects the table rows each writes under "rows" in its JSON, and
prints them as one table with the machine, the load average before and after, and the wall time of
each script. Sizes: the issue's (k-means 1M x 15; 16 and 64 parity seeds; the ICL GPT-2 step at
the experiments' L4 and the paper's L12; the LM scoring and fine-tuning models of their scripts;
k-center at 100k x 384; the MLSA scan; the peak memory of loading a ~100M Llama-style
checkpoint; quick experiments run again with their compiled programs kept). `--tiny` runs the
same scripts at smoke-test sizes (the test suite does), so a broken script is found before anyone
waits for the full sitting.

    .venv/bin/python benchmarks/run_all.py            # or: make bench   (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --tiny     # smoke-test sizes: mostly imports and compiles
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _peers import environment, print_table  # noqa: E402

# name -> (full-size arguments, tiny arguments); each script also gets --out
SCRIPTS = {
    "kmeans": (["kmeans.py"], ["kmeans.py", "--n", "20000", "--repeats", "1", "--sweep-features", "4", "24",
                                    "--sweep-n", "20000"]),
    "vmap_seeds": (["vmap_seeds.py"], ["vmap_seeds.py", "--seeds", "2", "--steps", "30", "--repeats", "1"]),
    "parity_vmap": (["parity_vmap.py"], ["parity_vmap.py", "--seeds", "2", "--steps", "20", "--repeats", "1",
                                         "--torch-seeds", "1", "--torch-steps", "20"]),
    # the same two with XLA's CPU pool at one thread (its own process: `_peers.xla_cpu_pool`)
    "vmap_seeds_pool1": (["vmap_seeds.py", "--xla-threads", "1"],
                         ["vmap_seeds.py", "--seeds", "2", "--steps", "30", "--repeats", "1", "--xla-threads", "1"]),
    "parity_vmap_pool1": (["parity_vmap.py", "--xla-threads", "1"], None),
    "gpt2_step_L4": (["gpt2_step.py", "--layers", "4", "--width", "128", "--heads", "4", "--batch", "64",
                      "--steps", "3", "--repeats", "5", "--seeds", "4", "--loop-steps", "8"],
                     ["gpt2_step.py", "--layers", "2", "--width", "64", "--batch", "16", "--pairs", "8", "--steps",
                      "1", "--repeats", "1", "--seeds", "2", "--no-compile"]),
    "gpt2_step_L12": (["gpt2_step.py", "--layers", "12", "--width", "256", "--heads", "8", "--batch", "128",
                       "--steps", "1", "--repeats", "3", "--seeds", "0", "--loop-steps", "4"], None),
    "lm_scoring": (["lm_scoring.py"], ["lm_scoring.py", "--quick", "--repeats", "1"]),
    "llm_finetune": (["llm_finetune.py"], ["llm_finetune.py", "--quick", "--repeats", "1"]),
    "kcenter": (["kcenter.py", "--n", "100000", "--k", "1000", "--numpy-picks", "200"], ["kcenter.py", "--quick"]),
    "lm_load_memory": (["lm_load_memory.py"], ["lm_load_memory.py", "--tiny", "--repeats", "1"]),
    "theory_scan": (["theory_scan.py"], ["theory_scan.py", "--steps", "1000", "--numpy-steps", "200", "--members",
                                         "4", "--repeats", "1"]),
    "compile_cache": (["compile_cache.py"], ["compile_cache.py", "--experiments", "toy_regression", "--rounds", "1"]),
}
# the two ICL steps again, the calls reusing their temporary buffers (`train.hosts.keep_cpu_buffers`)
SCRIPTS |= {f"{name}_kept": tuple(None if args is None else [*args, "--keep-cpu-buffers"] for args in SCRIPTS[name])
            for name in ("gpt2_step_L4", "gpt2_step_L12")}


def best_pool_rows(results: dict) -> list[dict]:
    """Rows comparing each side at its best XLA CPU pool, for the benchmarks run at both pools
    (name and name_pool1): ours = our faster pool, peer = the peer's fastest time at any pool or thread
    count (the pools are separate processes, so these times come from two sittings; a peer with thread
    counts keeps its best time per thread count)."""
    rows = []
    for name in results:
        one = results.get(f"{name}_pool1")
        if name.endswith("_pool1") or one is None:
            continue
        by_name = {r["benchmark"].split(" (XLA pool")[0]: r for r in one["rows"]}
        for r in results[name]["rows"]:
            r1 = by_name.get(r["benchmark"])
            if r1 is None:
                continue
            at = {}   # a JAX peer by pool; a peer with thread counts (PyTorch) by threads, best of both sittings
            for p, row in (("default", r), ("1", r1)):
                for t, v in row["peer_s_by_threads"].items():
                    k = f"pool {p}" if t == "default" else t
                    at[k] = min(v, at.get(k, v))
            peer_s, ours_s = min(at.values()), min(r["ours_s"], r1["ours_s"])
            rows.append({"benchmark": f"{r['benchmark']} (each at its best XLA pool)", "shape": r["shape"],
                         "ours_s": ours_s, "ours_pool": "1" if r1["ours_s"] < r["ours_s"] else "default",
                         "peer": r["peer"], "peer_best": min(at, key=at.get), "peer_best_s": peer_s,
                         "peer_s_by_threads": at, "ratio_vs_best": peer_s / ours_s, "unit": r["unit"],
                         "timing": "best of the two pools' runs (separate processes)"})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="smoke-test sizes")
    ap.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), help="run these benchmarks only")
    ap.add_argument("--out", default="runs/benchmarks/all.json")
    args = ap.parse_args(argv)
    names = args.only or list(SCRIPTS)
    rows, seconds, failed, results = [], {}, {}, {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cmd = SCRIPTS[name][1 if args.tiny else 0]
            if cmd is None:
                continue
            out = Path(tmp) / f"{name}.json"
            print(f"--- {name}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:], "--out", str(out)],
                                  capture_output=True, text=True)
            seconds[name] = time.perf_counter() - t0
            if proc.returncode != 0 or not out.exists():
                failed[name] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                print(f"    FAILED: {failed[name][0]}", flush=True)
                continue
            results[name] = json.loads(out.read_text())
            got = results[name]["rows"]
            rows += got
            print(f"    {seconds[name]:.0f} s, {len(got)} rows", flush=True)
    rows += best_pool_rows(results)
    env = environment() | {"loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}
    print(f"\nmachine: {env['platform']}, {env['cpus']} cores, jax {env['jax']}, torch {env.get('torch', '-')}; "
          f"load average before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
          f"{env['loadavg_after'][0]:.2f}/{env['loadavg_after'][1]:.2f}/{env['loadavg_after'][2]:.2f}"
          + (f"; XLA_FLAGS {env['xla_flags']}" if env["xla_flags"] else ""))
    print_table(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from lsb_jax import io
    io.write_json(args.out, {"rows": rows, "env": env, "seconds": seconds, "failed": failed, "tiny": args.tiny,
                             "results": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
