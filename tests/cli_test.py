import json
import os
import subprocess

import pytest

from conftest import lsb_cmd


def run_cli(tmp_path, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(lsb_cmd(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_list_names_every_experiment(tmp_path):
    out = run_cli(tmp_path, "list")
    assert out.returncode == 0, out.stderr
    assert "toy_regression" in out.stdout and "foundation check" in out.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, fragment", [
    (["run", "no_such_experiment"], "unknown experiment 'no_such_experiment'"),
    (["run", "toy_regression", "--set", "nope=1"], "unknown config key 'nope'"),
    (["run", "toy_regression", "--set", "steps=many"], "bad value for 'steps'"),
    (["run", "toy_regression", "--set", "optim.lr=x"], "bad value for 'optim.lr'"),
    (["run", "toy_regression", "--set", "sampler=magic"], "sampler must be one of"),
    (["run", "toy_regression", "--config", "huge"], "has no config 'huge'"),
    (["run", "toy_regression", "--set", "optim.name=adamax"], "unknown optimizer 'adamax'"),
    (["run", "toy_regression", "--set", "optim.lr=-1"], "OptimConfig.lr must be in"),
    (["reproduce", "--only", "zzz*"], "matches no experiment"),
    (["--cpu-devices", "0", "run", "toy_regression"], "need a count >= 1 or 'auto'"),
    (["--runs", "gs://bucket/runs", "run", "toy_regression"], "must be local paths"),   # not a folder 'gs:'
    (["--runs", "gs://bucket/runs", "reproduce", "--only", "toy_regression"], "must be local paths"),
    (["run", "toy_regression", "--out", "s3://bucket/x"], "must be local paths"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    out = run_cli(tmp_path, *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsb: error:") and fragment in lines[0], out.stderr
    assert list(tmp_path.iterdir()) == []


def test_cpu_devices_splits_the_cpu_and_the_run_records_it(tmp_path):
    out = run_cli(tmp_path, "--cpu-devices", "2", "run", "toy_regression", "--out", "r", "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["devices"] == "2 x cpu"
    assert config["compile_cache"] is None           # the tests run with LSB_COMPILE_CACHE=off (conftest)


def test_show_prints_resolved_config(tmp_path):
    out = run_cli(tmp_path, "show", "toy_regression", "--set", "optim.lr=0.25")
    assert out.returncode == 0
    assert '"lr": 0.25' in out.stdout


@pytest.mark.parametrize("sets, fragment", [
    (["track_points=0"], "track_points must be >= 1"),
    (["activation=relu6"], "activation must be one of"),
    (["optim.schedule=warmup_cosine", "optim.warmup_steps=5000"], "warmup_steps (5000) must be < total_steps"),
    (["eval_every=0"], "eval_every must be >= 1"),
    (["noise=nan"], "finite"),
])
def test_invalid_combinations_fail_before_anything_is_written(tmp_path, sets, fragment):
    args = ["run", "toy_regression"] + [a for s in sets for a in ("--set", s)]
    out = run_cli(tmp_path, *args)
    assert out.returncode == 2 and fragment in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert list(tmp_path.iterdir()) == []


def _fake_project(root, name):
    """Adds synthetic/<name>.py (a plain experiment: quick x=1, full x=2, headline x) to the project at
    `root`; returns (env pointing LSB_ROOT at it, an empty work folder beside it)."""
    (root / "synthetic").mkdir(parents=True, exist_ok=True)
    (root / "synthetic" / f"{name}.py").write_text(
        "import dataclasses\nfrom lsb_jax.experiments import Experiment\n"
        "@dataclasses.dataclass(frozen=True)\nclass C:\n    x: int = 1\n"
        f"EXPERIMENT = Experiment(name='{name}', reproduces='test', configs={{'quick': C(), 'full': C(2)}},\n"
        "                        run=lambda cfg, ctx: {'headline': {'x': cfg.x}})\n")
    work = root.parent / "work"
    work.mkdir(exist_ok=True)
    return dict(os.environ, JAX_PLATFORMS="cpu", LSB_ROOT=str(root)), work


def test_a_broken_experiment_file_does_not_break_the_others(tmp_path):
    root = tmp_path / "proj"
    (root / "synthetic").mkdir(parents=True)
    (root / "llm").mkdir()
    (root / "llm" / "needs_missing.py").write_text("import no_such_module_anywhere\n")
    env, work = _fake_project(root, "fine")
    listed = subprocess.run(lsb_cmd("list"), cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "fine" in listed.stdout
    assert "BROKEN  llm/needs_missing.py: ModuleNotFoundError" in listed.stdout
    ran = subprocess.run(lsb_cmd("run", "fine"), cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "x: 1" in ran.stdout
    bad = subprocess.run(lsb_cmd("run", "needs_missing"), cwd=work, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "failed to load (ModuleNotFoundError" in bad.stderr


def test_reproduce_medium_runs_medium_configs_and_quick_points_to_them(tmp_path):
    """--medium runs an experiment's medium config where it has one (quick elsewhere) into report-medium.md;
    the quick report's inconclusive verdict names the medium command."""
    root = tmp_path / "proj"
    (root / "synthetic").mkdir(parents=True)
    (root / "synthetic" / "med.py").write_text(
        "import dataclasses\nimport numpy as np\nfrom lsb_jax import claims\n"
        "from lsb_jax.experiments import Experiment\n"
        "@dataclasses.dataclass(frozen=True)\nclass C:\n    effect: float = 0.0\n"
        "def run(cfg, ctx):\n"
        "    base = np.arange(16.0)\n"
        "    noise = np.where(np.arange(16) % 2, 1.0, -1.0)   # paired differences +-1 around the effect\n"
        "    return {'per_seed': {'loss': claims.per_seed(np.stack([base + cfg.effect + noise, base]),\n"
        "                                                 ['A', 'B'], [0, 1])}}\n"
        "CLAIM = claims.Claim('a_higher', '004', 'Fig. 0', 'A has the higher loss', 'loss', 'A', 'B',\n"
        "                     expect='higher')\n"
        "EXPERIMENT = Experiment(name='med', reproduces='test',\n"
        "                        configs={'quick': C(), 'medium': C(5.0), 'full': C(5.0)}, run=run, claims=(CLAIM,))\n")
    _fake_project(root, "extra")
    env, work = _fake_project(root, "plain")
    for mode in ("--medium", "--quick"):
        out = subprocess.run(lsb_cmd("reproduce", mode, "--no-progress"), cwd=work, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
    runs = sorted((p.parent.parent.name, p.parent.name.split("-")[0]) for p in (work / "runs").glob("*/*/results.json"))
    assert runs == [("extra", "quick"), ("med", "medium"), ("med", "quick"), ("plain", "quick")]  # no medium configs
    medium = (work / "runs" / "report-medium.md").read_text()
    quick = (work / "runs" / "report.md").read_text()
    row = lambda md: next(line for line in md.splitlines() if line.startswith("| A has the higher loss"))  # noqa: E731
    assert "**reproduced**" in row(medium) and "more seeds" not in row(medium)
    assert "**inconclusive**" in row(quick) and "more seeds: `lsb reproduce --medium --only med`" in row(quick)
    # --only: an earlier run's claims are decided again (a stale verdict is not shown), claims it no
    # longer declares are dropped, and an earlier run without results.json is skipped, not fatal
    med = next((work / "runs" / "med").glob("quick-*"))
    stale = json.loads((med / "results.json").read_text())
    stale["claims"][0]["verdict"] = "opposite"
    stale["claims"].append({**stale["claims"][0], "key": "gone", "says": "A claim no longer declared"})
    (med / "results.json").write_text(json.dumps(stale))
    next((work / "runs" / "extra").glob("quick-*")).joinpath("results.json").unlink()
    out = subprocess.run(lsb_cmd("reproduce", "--only", "plain", "--no-progress"), cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    quick = (work / "runs" / "report.md").read_text()
    assert "**inconclusive**" in row(quick) and "(earlier run)" in row(quick)
    assert "no longer declared" not in quick
    assert [c["key"] for c in json.loads((med / "results.json").read_text())["claims"]] == ["a_higher"]
