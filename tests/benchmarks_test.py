"""The benchmarks still run (tiny sizes; no timing is asserted: speed lives in benchmarks/)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_vmap_seeds_benchmark_runs_and_members_match_sequential():
    out = subprocess.run([sys.executable, "benchmarks/vmap_seeds.py", "--seeds", "2", "--steps", "30",
                          "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "ratio a/b" in out.stdout
    diff = float(out.stdout.split("max |param diff| member 0 vs sequential: ")[1].split(")")[0])
    assert diff < 1e-4  # the vmapped member and the seed-by-seed run train the same network


@pytest.mark.slow
def test_theory_scan_benchmark_runs_and_matches_numpy():
    out = subprocess.run([sys.executable, "benchmarks/theory_scan.py", "--steps", "1000", "--numpy-steps", "200",
                          "--members", "2", "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "ratio a/b" in out.stdout and "ratio c/d" in out.stdout
    diff = float(out.stdout.split("max |param diff| vs (a) after them: ")[1].split(")")[0])
    assert diff < 1e-4  # the compiled trainer and the numpy loop follow the same trajectory


@pytest.mark.slow
def test_parity_vmap_benchmark_runs():
    out = subprocess.run([sys.executable, "benchmarks/parity_vmap.py", "--seeds", "2", "--steps", "20",
                          "--repeats", "1", "--torch-seeds", "1", "--torch-steps", "5"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_kmeans_benchmark_runs_and_agrees_with_sklearn(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/kmeans.py", "--n", "20000", "--repeats", "1",
                          "--out", str(tmp_path / "km.json")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    for run in json.loads((tmp_path / "km.json").read_text())["runs"].values():
        assert abs(run["inertia_ours"] - run["inertia_sklearn"]) <= 1e-3 * run["inertia_sklearn"]
        assert run["agree_ours_sklearn"] > 0.999
        assert set(run["peer_s_by_threads"]) >= {"1t"}  # scikit-learn timed at 1 thread too


@pytest.mark.slow
def test_gpt2_step_benchmark_runs_and_torch_twin_matches(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/gpt2_step.py", "--layers", "2", "--width", "64", "--batch", "16",
                          "--pairs", "8", "--steps", "1", "--repeats", "1", "--seeds", "2", "--no-compile",
                          "--out", str(tmp_path / "g.json")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    loss0 = json.loads((tmp_path / "g.json").read_text())["loss0"]
    assert abs(loss0["jax"] - loss0["torch"]) < 1e-4 * max(1.0, abs(loss0["torch"]))  # same weights, same batch
