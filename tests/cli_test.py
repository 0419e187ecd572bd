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
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    out = run_cli(tmp_path, *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsb: error:") and fragment in lines[0], out.stderr
    assert list(tmp_path.iterdir()) == []


def test_show_prints_resolved_config(tmp_path):
    out = run_cli(tmp_path, "show", "toy_regression", "--set", "optim.lr=0.25")
    assert out.returncode == 0
    assert '"lr": 0.25' in out.stdout
