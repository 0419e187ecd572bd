"""The toy experiment end to end through the CLI: files, numbers against numpy, report."""

import json
import os
import subprocess

import numpy as np
import pytest

from conftest import lsb_cmd
from lsb_jax import experiments, runner
from lsb_jax.tasks.regression import RegressionTask, least_squares_test_mse


def test_least_squares_reference_recovers_teacher():
    import jax
    task = RegressionTask(dim=5, spectrum_decay=0.0, noise=0.0)
    w = task.teacher(jax.random.PRNGKey(0))
    pool, test = task.sample(jax.random.PRNGKey(1), 100, w), task.sample(jax.random.PRNGKey(2), 100, w)
    assert least_squares_test_mse(pool["x"], pool["y"], test["x"], test["y"]) < 1e-8
    x = np.asarray(task.sample(jax.random.PRNGKey(3), 200_000, w)["x"])
    np.testing.assert_allclose(x.var(axis=0), np.ones(5), rtol=0.02)


@pytest.mark.parametrize("sampler", ["uniform", "subset", "zipf", "epochs", "curriculum"])
def test_every_sampler_trains_towards_least_squares(tmp_path, sampler):
    exp = experiments.get("toy_regression")
    _, cfg = runner.resolve("toy_regression", "quick", [f"sampler={sampler}", "steps=1200", "seeds=2",
                                                         "lrs=[0.02,0.05]", "eval_every=100", "checkpoint_every=600",
                                                         "curriculum_first=200", "curriculum_every=200"])
    run_dir, results = runner.run_experiment(exp, cfg, "quick", out=tmp_path / "run", progress=False)
    head = results["headline"]
    assert head["members"] == 4
    initial = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["test_mse"]
    # the trivial predictor (0) has test MSE sum(lambda) + noise^2 ~ 3.6; every member must get far below it
    assert min(initial) > 1.0
    assert head["test_mse_final_mean"] < 0.1 * np.mean(initial)
    if sampler != "subset":  # a 128-item subset of the pool cannot match least squares on all 512
        assert head["test_mse_final_mean"] < 6 * head["least_squares_test_mse"]
    for name in ("config.json", "status.json", "metrics.jsonl", "results.json", "loss_curves.png",
                 "trajectories.npz", "final_params.npz"):
        assert (run_dir / name).exists(), name
    assert any((run_dir / "tb").iterdir())
    traj = np.load(run_dir / "trajectories.npz")
    assert traj["losses"].shape == (4, cfg.pool_size, len(traj["steps"])) and traj["done"].all()


def test_reproduce_writes_report_with_figures(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(lsb_cmd("reproduce", "--quick", "--only", "toy_*", "--no-progress"), cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "runs" / "report.md").read_text()
    assert "## toy_regression" in report and "least_squares_test_mse" in report
    for line in report.splitlines():
        if line.startswith("!["):
            assert (tmp_path / "runs" / line.split("(")[1].rstrip(")")).exists()
    # a second reproduce reuses the complete run
    again = subprocess.run(lsb_cmd("reproduce", "--quick", "--only", "toy_*", "--no-progress"), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "up to date" in again.stderr
