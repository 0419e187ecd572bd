"""benchmarks/gpu_check.py runs at tiny sizes on CPU as it will on the lent GPU machine's image.

The image has no tensorboardX, datasets, math-verify or reasoning-gym, so the script runs here with
those imports blocked (`sys.modules[name] = None`: `import` raises ModuleNotFoundError and
`importlib.util.find_spec` says absent, as there) and with `PYTHONPATH=.` instead of the installed
package. No speed is asserted: every section must produce its rows, with numbers.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_IN_GPU_IMAGE = ("tensorboardX", "datasets", "math_verify", "reasoning_gym")
SECTIONS = {"icl", "parity", "lm", "mfu", "kcenter", "estimate"}
MAY_BE_NA = {"icl.torch_compile", "mfu.mfu"}   # torch.compile is skipped at --tiny; CPU has no MFU peak

RUN_BLOCKED = f"""
import runpy, sys
for name in {NOT_IN_GPU_IMAGE!r}:
    sys.modules[name] = None
sys.argv = ["benchmarks/gpu_check.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
for name in {NOT_IN_GPU_IMAGE!r}:
    assert sys.modules.get(name) is None, name + " got imported"
"""


@pytest.mark.slow
def test_gpu_check_tiny_runs_without_the_modules_the_gpu_image_lacks(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out_json = tmp_path / "x.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", RUN_BLOCKED, "--tiny", "--out", str(out_json)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "elapsed:" in out.stdout and "total" in out.stdout

    res = json.loads(out_json.read_text())
    assert res["complete"] is True            # rewritten after every section, complete after the last
    rows = res["rows"]
    assert {r["section"] for r in rows} == SECTIONS
    for r in rows:
        if r["key"] in MAY_BE_NA:
            assert r["status"] in ("ok", "n/a", "error"), r
            continue
        assert r["status"] == "ok", r
        assert isinstance(r["ours"], (int, float)) and math.isfinite(r["ours"]), r
        assert r["peer"] is None or math.isfinite(r["peer"]), r
    keys = {r["key"] for r in rows}
    assert {"icl.torch_eager", "icl.loss0", "parity.torch_cpu", "lm.score", "lm.finetune", "mfu.step",
            "kcenter.picks", "estimate.toy_regression"} <= keys

    loss0 = res["details"]["icl"]["loss0"]   # same weights, same batch
    assert abs(loss0["jax"] - loss0["torch"]) <= 1e-4 * abs(loss0["torch"]) + 1e-5
    kcenter = res["details"]["kcenter"]   # the same picks, but for a near-tie broken by float32 rounding
    assert kcenter["first_difference"] is None or kcenter["tie_gap"] < 1e-5, kcenter
    assert res["details"]["estimate"]["experiments"]["toy_regression"]["fits"]   # measured through fit


def test_gpu_check_refuses_gpu_sizes_without_a_gpu(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--only", "kcenter", "--out",
                          str(tmp_path / "x.json")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "--tiny" in out.stderr
    assert not (tmp_path / "x.json").exists()


def test_gpu_sizes_build_abstractly_with_the_hand_counted_parameters():
    """The MFU and LM sections' GPU-size decoders (built abstractly: no memory) have the parameter
    count of a hand count of a Qwen3 block, so the one GPU run meets no config mistake at that size."""
    pytest.importorskip("transformers")
    import jax
    import numpy as np
    from flax import nnx

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check
    import lm_scoring
    from lsb_jax.models.lm import Decoder, DecoderConfig

    for size in (gpu_check.QWEN3_0P6B, gpu_check.LM_GPU, gpu_check.SIZES["gpu"]["mfu"]):
        dcfg = DecoderConfig.from_hf(lm_scoring.hf_config(size, size["vocab"]))
        model = nnx.eval_shape(lambda: Decoder(dcfg, rngs=nnx.Rngs(0)))   # noqa: B023
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        L, D, H, K, hd, F, V = (size[k] for k in ("layers", "width", "heads", "kv_heads", "head_dim", "mlp", "vocab"))
        block = D * H * hd + 2 * D * K * hd + H * hd * D + 3 * D * F + 2 * D + 2 * hd   # attn, MLP, 2 norms, q/k norms
        assert n == L * block + V * D + D, size                                        # tied embedding, final norm
    assert gpu_check.SIZES["gpu"]["mfu"]["batch"] % max(gpu_check.SIZES["gpu"]["mfu"]["micro_batches"]) == 0


def test_sections_the_budget_cannot_cover_are_skipped_with_a_row(tmp_path):
    out_json = tmp_path / "budget.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--only", "kcenter,icl",
                          "--budget", "0.5", "--out", str(out_json)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["key"], r["status"]) for r in rows] == [("kcenter.budget", "n/a"), ("icl.budget", "n/a")]
    assert "rerun with --only kcenter" in rows[0]["notes"]
