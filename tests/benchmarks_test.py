"""The benchmarks still run (tiny sizes; no timing is asserted: speed lives in benchmarks/)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_every_benchmark_runs_at_tiny_size_with_peers_at_each_thread_count(tmp_path):
    """`benchmarks/run_all.py --tiny`: every script runs, every row times its peer at 1 thread (and
    the cores), and each comparison compares the same computation (the correctness checks below)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    out = subprocess.run([sys.executable, "benchmarks/run_all.py", "--tiny", "--out", str(tmp_path / "all.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    import json
    res = json.loads((tmp_path / "all.json").read_text())
    r = res["results"]
    assert not res["failed"] and set(r) >= {"kmeans", "vmap_seeds", "parity_vmap", "gpt2_step_L4", "lm_scoring",
                                            "llm_finetune", "kcenter", "theory_scan", "lm_load_memory"}
    for row in res["rows"]:
        assert row["ours_s"] > 0 and row["peer_best_s"] > 0
        if row["peer"].startswith(("torch", "sklearn", "transformers")) and row.get("measure") != "memory":
            assert "1t" in row["peer_s_by_threads"], row  # the peer at 1 thread, not only its default (timings)
    for run in r["kmeans"]["runs"].values():  # the same clustering on both sides
        assert abs(run["inertia_ours"] - run["inertia_sklearn"]) <= 1e-3 * run["inertia_sklearn"]
        assert run["agree_ours_sklearn"] > 0.999
    assert r["vmap_seeds"]["max_param_diff_member0"] < 1e-4   # a vmapped member trains the seed's network
    # --xla-threads 1 reran the script with XLA's CPU pool at one thread; the default run left XLA's own
    assert r["vmap_seeds_pool1"]["env"]["xla_cpu_pool"] == "1" and r["vmap_seeds_pool1"]["xla_cpu_pool"] == 1
    assert r["vmap_seeds"]["env"]["xla_cpu_pool"] == "default"
    split = r["vmap_seeds"]["cpu_devices"] > 1     # (a'): the seeds split over the CPU's cores as devices
    if split:
        assert r["vmap_seeds"]["max_param_diff_member0_cores"] < 1e-4
    # the rows at each side's best pool: our faster pool against the sequential loop's faster pool
    best = [row for row in res["rows"] if row["benchmark"].endswith("(each at its best XLA pool)")
            and row["peer"] == "sequential_jit"]
    assert len(best) == 1          # (a') runs at the default pool only (the pool-1 run keeps one CPU device)
    assert r["vmap_seeds_pool1"]["cpu_devices"] == 1
    for row in best:
        name = row["benchmark"].split(" (each at")[0]
        pair = [next(x for x in r[n]["rows"] if x["benchmark"].split(" (XLA pool")[0] == name)
                for n in ("vmap_seeds", "vmap_seeds_pool1")]
        assert row["ours_s"] == min(x["ours_s"] for x in pair)
        assert row["peer_best_s"] == min(x["peer_best_s"] for x in pair)
        assert row["ratio_vs_best"] == pytest.approx(row["peer_best_s"] / row["ours_s"])
    assert r["vmap_seeds"]["flops_per_seed_step"] == 2 * 20 * (2 * (20 * 40 + 40 * 40 + 40) + 40 * 40 + 40)
    assert r["theory_scan"]["max_param_diff_vs_numpy"] < 1e-4  # compiled trainer and numpy loop agree
    if r["theory_scan"]["cpu_devices"] > 1:                      # the grid split over the cores computes the same
        assert r["theory_scan"]["max_param_diff_split_vs_vmap"] < 1e-4
    loss0 = r["gpt2_step_L4"]["loss0"]
    assert abs(loss0["jax"] - loss0["torch"]) < 1e-4 * max(1.0, abs(loss0["torch"]))  # same weights, same batch
    assert r["gpt2_step_L4"]["jax"]["fit_loop_max_param_diff"] < 1e-5   # fit's loop trains as the per-call step
    kept = r["gpt2_step_L4_kept"]         # --keep-cpu-buffers: the same step in a process that keeps its buffers
    assert kept["cpu_buffers"]["cpu_async_dispatch"] is False and r["gpt2_step_L4"]["cpu_buffers"] == "default"
    assert abs(kept["loss0"]["jax"] - loss0["jax"]) < 1e-5 * max(1.0, abs(loss0["jax"]))   # same step
    assert kept["jax"]["fit_loop_max_param_diff"] < 1e-5
    assert all(row["benchmark"].endswith("(CPU buffers kept)") for row in kept["rows"])
    assert r["lm_scoring"]["max_abs_loss_diff"] < 1e-4
    first = r["llm_finetune"]["first_step_loss"]
    assert abs(first["ours"] - first["transformers"]) < 1e-4
    kcenter = r["kcenter"]                # the same picks, but for a near-tie broken by float32 rounding
    assert kcenter["first_difference"] is None or kcenter["tie_gap"] < 1e-5, kcenter
    cc = r["compile_cache"]["experiments"]["toy_regression"]     # run again with its compiled programs kept
    warm = cc["runs"]["warm"][0]
    assert cc["same_results"] and warm["misses"] == 0 and warm["hits"] == cc["runs"]["off"][0]["compiles"] > 0
