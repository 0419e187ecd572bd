"""Run directories: reuse, refusal, --force safety, metrics truncation on resume, atomic writes."""

import dataclasses
import json

import numpy as np
import pytest

from lsb_jax import io, runner
from lsb_jax.experiments import Experiment


@dataclasses.dataclass(frozen=True)
class Cfg:
    value: float = 1.0
    fail: bool = False


CALLS = []


def run(cfg, ctx):
    CALLS.append(cfg)
    ctx.metrics.write(1, {"loss": np.array([1.0, np.nan]), "acc": 0.5})
    if cfg.fail:
        raise RuntimeError("boom")
    return {"headline": {"value": cfg.value}}


EXP = Experiment(name="fake", reproduces="nothing", configs={"quick": Cfg(), "full": Cfg(2.0)}, run=run)


def test_complete_run_is_reused_and_force_reruns(tmp_path):
    CALLS.clear()
    d, res = runner.run_experiment(EXP, Cfg(), "quick", runs_root=tmp_path, progress=False)
    assert d == tmp_path / "fake" / f"quick-{d.name.split('-')[1]}" and res["headline"] == {"value": 1.0}
    assert json.loads((d / "status.json").read_text())["status"] == "complete"
    assert json.loads((d / "config.json").read_text())["config"] == {"value": 1.0, "fail": False}
    runner.run_experiment(EXP, Cfg(), "quick", runs_root=tmp_path, progress=False)
    assert len(CALLS) == 1
    runner.run_experiment(EXP, Cfg(), "quick", runs_root=tmp_path, force=True, progress=False)
    assert len(CALLS) == 2


@dataclasses.dataclass(frozen=True)
class FileCfg:
    data: str = ""
    model: str = ""
    name: str = "adam"      # not a path: never fingerprinted
    fail: bool = False
    value: float = 1.0


def test_a_run_is_reused_or_resumed_only_on_the_inputs_it_started_from(tmp_path):
    """A data file or model folder named by the config that changed since the run (the path alone is
    in the hash) must not give the old results as up to date, nor be resumed into."""
    import os

    data, model = tmp_path / "train.jsonl", tmp_path / "model"
    data.write_text('{"q": 1}\n')
    model.mkdir()
    (model / "config.json").write_text("{}")
    exp = Experiment(name="files", reproduces="nothing", configs={"quick": FileCfg(), "full": FileCfg()}, run=run)
    cfg = FileCfg(data=str(data), model=str(model))
    CALLS.clear()
    d, _ = runner.run_experiment(exp, cfg, "quick", runs_root=tmp_path / "runs", progress=False)
    assert sorted(json.loads((d / "config.json").read_text())["inputs"]) == sorted([str(data), str(model)])
    runner.run_experiment(exp, cfg, "quick", runs_root=tmp_path / "runs", progress=False)     # unchanged: reused
    assert len(CALLS) == 1
    for change in (lambda: data.write_text('{"q": 2}\n{"q": 3}\n'),
                   lambda: os.utime(model / "config.json", ns=(1, 1)),
                   lambda: (model / "model.safetensors").write_bytes(b"x")):
        change()
        with pytest.raises(runner.RunExists, match="has changed.*--force to rerun"):
            runner.run_experiment(exp, cfg, "quick", runs_root=tmp_path / "runs", progress=False)
        runner.run_experiment(exp, cfg, "quick", runs_root=tmp_path / "runs", force=True, progress=False)
    assert len(CALLS) == 4
    failing = FileCfg(data=str(data), fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        runner.run_experiment(exp, failing, "quick", runs_root=tmp_path / "runs", progress=False)
    data.unlink()
    with pytest.raises(runner.RunExists, match="has changed \\(or gone\\).*start over"):
        runner.run_experiment(exp, failing, "quick", runs_root=tmp_path / "runs", resume=True, progress=False)


def test_failed_run_needs_resume_or_force(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        runner.run_experiment(EXP, Cfg(fail=True), "quick", runs_root=tmp_path, progress=False)
    d = runner.default_run_dir(tmp_path, "fake", "quick", Cfg(fail=True))
    assert json.loads((d / "status.json").read_text()) == {"status": "failed", "error": "RuntimeError: boom"}
    with pytest.raises(runner.RunExists, match="--resume"):
        runner.run_experiment(EXP, Cfg(fail=True), "quick", runs_root=tmp_path, progress=False)


def test_force_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(runner.RunExists):
        runner.run_experiment(EXP, Cfg(), "quick", out=precious, force=True, progress=False)
    with pytest.raises(runner.RunExists):
        runner.run_experiment(EXP, Cfg(), "quick", out=precious, progress=False)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_metrics_round_trip_and_truncate(tmp_path):
    w = runner.MetricsWriter(tmp_path, tensorboard=False)
    for s in range(1, 6):
        w.write(s, {"loss": [s, np.inf], "acc": np.float32(s / 10)})
    w.close()
    with open(w.path, "a") as f:
        f.write('{"step": 6, "loss": [1')  # a torn line from a killed run
    w.truncate_after(3)
    hist = w.history()
    assert list(hist["loss_step"]) == [1, 2, 3]
    np.testing.assert_array_equal(hist["loss"], [[1, np.inf], [2, np.inf], [3, np.inf]])
    np.testing.assert_allclose(hist["acc"], [0.1, 0.2, 0.3], rtol=1e-6)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = io.write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(ZeroDivisionError):
        with io.atomic_path(path) as tmp:
            tmp.write_text("partial")
            1 / 0
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert io.to_jsonable({"x": np.float32(np.nan), "y": (1, np.int64(2))}) == {"x": "NaN", "y": [1, 2]}


def test_resume_or_out_with_another_config_is_refused(tmp_path):
    runner.run_experiment(EXP, Cfg(), "quick", out=tmp_path / "r", progress=False)
    with pytest.raises(runner.RunExists, match="another config"):
        runner.run_experiment(EXP, Cfg(value=3.0), "quick", out=tmp_path / "r", resume=True, progress=False)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["value"] == 1.0


def test_child_figures_are_reported_and_files_are_world_readable(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = runner.RunContext(tmp_path)
    ctx.child("arm_a").save_figure(plt.figure(), "curve")
    assert ctx.figures == ["arm_a/curve.png"]
    assert (tmp_path / "arm_a" / "curve.png").stat().st_mode & 0o044 == 0o044
