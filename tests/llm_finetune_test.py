"""Fine-tuning (lsb_jax.llm.finetune): accumulation, AdamW vs PyTorch, LoRA, mixed precision,
SAM/Muon wiring, sharding on 8 host devices and kill -9 resume (subprocesses)."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")   # imported where used: the subprocesses import this module without it
pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from conftest import xla_flags  # noqa: E402
from lm_fixtures import FAST_COMPILE, VOCAB, build  # noqa: E402
from lsb_jax.llm.finetune import (  # noqa: E402
    FinetuneConfig, HostBatches, accumulated_value_and_grad, finetune, init_finetune_state, make_finetune_step,
    make_split_loss_fn, maybe_initialize_distributed, prepare,
)
from lsb_jax.models.lm import load_pretrained, sequence_loss  # noqa: E402
from lsb_jax.optim import OptimConfig  # noqa: E402

T = 12


def make_batch(step: int, B: int = 4, T: int = T) -> dict:
    """Random tokens; right padding and a prompt (no loss) of varying length; loss weights."""
    r = np.random.RandomState(1000 + step)
    tokens = r.randint(0, VOCAB, (B, T)).astype(np.int32)
    lengths = r.randint(T // 2, T + 1, B)
    prompt = r.randint(1, 4, B)
    pos = np.arange(T)
    attn = (pos < lengths[:, None]).astype(np.int32)
    loss = ((pos >= prompt[:, None]) & (pos < lengths[:, None])).astype(np.int32)
    return dict(tokens=tokens, loss_mask=loss, attention_mask=attn,
                example_id=(np.arange(B) + B * step).astype(np.int32),
                loss_weight=r.uniform(0.5, 1.5, B).astype(np.float32))


class Batches:
    """The host iterator protocol of `fit`: a pure function of the step, with get/set_state."""

    def __init__(self, B: int = 4):
        self.step, self.B = 0, B

    def __iter__(self):
        return self

    def __next__(self):
        self.step += 1
        return make_batch(self.step - 1, self.B)

    def get_state(self):
        return {"step": self.step}

    def set_state(self, s):
        self.step = int(s["step"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    hf = build("llama3_gqa_scaled", folder)
    return folder, hf


def _flat(state) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def test_accumulated_gradient_equals_big_batch_gradient(folder):
    cfg = FinetuneConfig()
    split, params = prepare(load_pretrained(folder[0]), cfg)
    loss_fn = make_split_loss_fn(split.graphdef, cfg)
    batch = {k: jnp.asarray(v) for k, v in make_batch(0, B=8).items()}

    def big_batch(p):  # the reference: one pass over all 8 examples, the step's reduction by hand
        model = split.merge(p)
        loss_B = sequence_loss(model, batch)[0]
        return jnp.sum(batch["loss_weight"] * loss_B) / 8, loss_B

    (ref_value, ref_loss_B), ref_g = jax.jit(jax.value_and_grad(big_batch, has_aux=True),
                                             compiler_options=FAST_COMPILE)(params)
    lf = lambda q, mb, r: loss_fn(q, split.frozen, mb, r)  # noqa: E731
    acc = jax.jit(lambda p, a: accumulated_value_and_grad(lf, p, batch, a), static_argnums=1,
                  compiler_options=FAST_COMPILE)
    for accum in (1, 4):
        value, loss_B, g = acc(params, accum)
        np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(loss_B), np.asarray(ref_loss_B), rtol=1e-6)
        ref, got = _flat(ref_g), _flat(g)
        assert sorted(ref) == sorted(got)
        # float32: each entry sums over 8 examples x T tokens in another order (4 microbatches); entries
        # that cancel keep an absolute error of a few ulps of the leaf's scale (observed <= 5 eps * max|g|,
        # and the blocking / vector width of the contractions depend on the CPU): atol 32 eps * max|g|
        for k in ref:
            atol = 32 * np.finfo(np.float32).eps * np.abs(ref[k]).max()
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=atol, err_msg=k)
    with pytest.raises(ValueError, match="not divisible"):
        acc(params, 3)


def _torch_adamw_losses(hf, batches, lr, wd):
    """The same training in PyTorch: per-example mean response-token CE, weighted batch mean."""
    import torch
    model = hf.train()
    model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    out = []
    for batch in batches:
        ids, attn = torch.tensor(batch["tokens"], dtype=torch.long), torch.tensor(batch["attention_mask"])
        logits = model(ids, attention_mask=attn).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        mask = torch.tensor(batch["loss_mask"][:, 1:], dtype=torch.float32)
        loss_B = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
        loss = (torch.tensor(batch["loss_weight"]) * loss_B).mean()
        opt.zero_grad()
        loss.backward()
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
        opt.step()
        out.append((loss.item(), loss_B.detach().numpy(), norm.item()))
    return out


def test_adamw_fine_tuning_matches_pytorch_with_accumulation(folder):
    path, hf = folder
    steps, lr, wd = 3, 3e-3, 0.1
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=lr, weight_decay=wd), warmup_ratio=0.0, accum_steps=2)
    result = finetune(load_pretrained(path), Batches(), cfg, steps, chunk_size=steps)
    ref = _torch_adamw_losses(hf, [make_batch(s) for s in range(steps)], lr, wd)
    hist = result.fit.history
    np.testing.assert_allclose(hist["loss"], [r[0] for r in ref], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(hist["example_loss"], np.stack([r[1] for r in ref]), atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(hist["example_id"], np.arange(4 * steps).reshape(steps, 4))
    assert result.tokens == sum(int(make_batch(s)["loss_mask"][:, 1:].sum()) for s in range(steps))
    assert hist["loss"][0] > hist["loss"][-1] - 1.0  # sanity: finite, comparable
    # the logs a fine-tuner reads: grad norm as torch computes it, the lr, the batch's target tokens
    np.testing.assert_allclose(hist["grad_norm"], [r[2] for r in ref], rtol=1e-4)
    np.testing.assert_allclose(hist["lr"], lr, rtol=1e-6)
    np.testing.assert_array_equal(hist["tokens"], [make_batch(s)["loss_mask"][:, 1:].sum() for s in range(steps)])


def test_lora_trains_only_adapters_and_exports_merged(folder):
    path, _ = folder
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-2), warmup_ratio=0.0, lora_rank=2,
                         lora_targets=r"layers\.0\.(attn\.q|mlp\.up)", lora_dropout=0.1)
    base = _flat(nnx.state(load_pretrained(path), nnx.Param))
    result = finetune(load_pretrained(path), Batches(), cfg, 2, chunk_size=2)
    trained = _flat(result.params)
    assert trained and all(".lora." in k for k in trained)
    assert any(np.abs(v).max() > 0 for k, v in trained.items() if k.endswith(".lora.b"))  # b left zero
    frozen = _flat(nnx.state(result.model(), nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))))
    assert sorted(frozen) == sorted(base)
    for k in base:
        np.testing.assert_array_equal(frozen[k], base[k], err_msg=k)
    # merged export: W + (alpha / r) A B computed here in numpy
    merged = _flat(nnx.state(result.merged_model(), nnx.Param))
    k = "layers.0.mlp.up.kernel"
    a, b = trained["layers.0.mlp.up.lora.a"], trained["layers.0.mlp.up.lora.b"]
    np.testing.assert_allclose(merged[k], base[k] + (cfg.lora_alpha / cfg.lora_rank) * (a @ b), atol=1e-6)


def test_step_mixed_precision_sam_and_muon(folder):
    """One step each: bf16 compute keeps fp32 master weights and a loss close to fp32; SAM's
    update differs from plain AdamW's; Muon orthogonalizes the MLP and the 3-D attention kernels."""
    path, _ = folder
    batch = {k: jnp.asarray(v) for k, v in make_batch(0).items()}

    def one_step(**kw):
        cfg = FinetuneConfig(**{"warmup_ratio": 0.0, "optim": OptimConfig(name="adamw", lr=1e-2), **kw})
        split, params = prepare(load_pretrained(path), cfg)
        opt = cfg.optimizer(10)
        state = init_finetune_state(params, opt, 0)
        step = jax.jit(make_finetune_step(split.graphdef, cfg, opt), compiler_options=FAST_COMPILE)
        new, metrics = step(state, batch, split.frozen)
        return _flat(params), _flat(new.params), metrics

    p0, p32, m32 = one_step()
    _, p16, m16 = one_step(compute_dtype="bfloat16")
    assert all(v.dtype == np.float32 for v in p16.values())
    np.testing.assert_allclose(float(m16["loss"]), float(m32["loss"]), rtol=2e-2)
    _, psam, msam = one_step(optim=OptimConfig(name="adamw", lr=1e-2, sam_rho=0.5))
    assert float(msam["loss"]) == pytest.approx(float(m32["loss"]), rel=1e-6)   # loss at the current point
    k = "layers.0.mlp.up.kernel"
    assert not np.allclose(psam[k] - p0[k], p32[k] - p0[k], atol=1e-7)          # the update is SAM's
    _, pmuon, _ = one_step(optim=OptimConfig(name="muon", lr=1e-2))
    # Muon's orthogonalized update of a 2-D kernel has (near) equal singular values
    s = np.linalg.svd(pmuon[k] - p0[k], compute_uv=False)
    s = s[s > 1e-3 * s.max()]   # the gradient of a 4-example batch may be rank-deficient
    assert len(s) > 16 and s.min() / s.max() > 0.5, s

    def flat_spectrum(d, n_in):   # the top 80% of the reshaped matrix's singular values within 2x
        s = np.linalg.svd(d.reshape(int(np.prod(d.shape[:n_in])), -1), compute_uv=False)
        return s[int(0.8 * len(s)) - 1] / s[0] > 0.5

    for k, n_in in (("layers.0.attn.q.kernel", 1), ("layers.0.attn.o.kernel", 2)):   # 3-D: Muon on D x NH
        assert flat_spectrum(pmuon[k] - p0[k], n_in) and not flat_spectrum(p32[k] - p0[k], n_in), k
    _, params = prepare(load_pretrained(path), FinetuneConfig(param_dtype="bfloat16"))
    assert all(v.dtype == jnp.bfloat16 for v in _flat(params).values())


def test_shared_step_compiles_once_and_equals_a_fixed_schedule_step(folder):
    """Runs of other lengths and seeds share one step function (the schedule's lengths are traced
    step arguments); its trajectory equals the one of a step built with the concrete optimizer of
    that length (warmup-cosine, so the lengths matter), and the compiled program is reused."""
    from lsb_jax.llm.finetune import shared_finetune_step
    from lsb_jax.train import loop

    path, _ = folder
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-2, schedule="warmup_cosine"), warmup_ratio=0.3)
    split, _ = prepare(load_pretrained(path), cfg)
    assert shared_finetune_step(split.graphdef, cfg) is shared_finetune_step(
        split.graphdef, dataclasses.replace(cfg, seed=3))
    assert shared_finetune_step(split.graphdef, cfg) is not shared_finetune_step(
        split.graphdef, dataclasses.replace(cfg, warmup_ratio=0.1))
    loop._cached_program.cache_clear()
    for n in (5, 3):
        result = finetune(load_pretrained(path), iter([make_batch(i) for i in range(n)]), cfg, n, chunk_size=1)
        split, params = prepare(load_pretrained(path), cfg)
        opt = cfg.optimizer(n)
        assert cfg.schedule(n)["warmup_steps"] == round(0.3 * n)
        state = init_finetune_state(params, opt, cfg.seed)
        step = jax.jit(make_finetune_step(split.graphdef, cfg, opt))
        for i in range(n):
            state, _ = step(state, {k: jnp.asarray(v) for k, v in make_batch(i).items()}, split.frozen)
        want, got = _flat(state.params), _flat(result.fit.state.params)
        for k in want:   # the same float32 arithmetic, compiled in another program: rounding only
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6 * np.abs(want[k]).max(), err_msg=k)
    assert loop._cached_program.cache_info().misses == 1     # one program for both lengths


def test_config_validation_and_host_batches():
    with pytest.raises(ValueError, match="compute_dtype"):
        FinetuneConfig(compute_dtype="fp8")
    with pytest.raises(ValueError, match="accum_steps"):
        FinetuneConfig(accum_steps=0)
    with pytest.raises(ValueError, match="pcgrad"):
        FinetuneConfig(optim=OptimConfig(pcgrad=True))
    assert FinetuneConfig(lora_rank=8).lora.targets == r".*\.attn\.(q|v)"
    # adapter options without adapters are an error, not silently ignored; a bad regex is named
    with pytest.raises(ValueError, match="lora_targets, lora_dropout set but lora_rank=0"):
        FinetuneConfig(lora_targets="all_linear", lora_dropout=0.1)
    with pytest.raises(ValueError, match="lora_targets.*valid regular expression"):
        FinetuneConfig(lora_rank=4, lora_targets=r"layers\.(0")
    assert FinetuneConfig(lora_rank=4, lora_targets=r"layers\.0\.mlp\.up").lora.targets == r"layers\.0\.mlp\.up"
    # warmup_ratio -> warmup steps: the first update is taken at lr 0
    sgd = OptimConfig(name="sgd", lr=1.0, schedule="warmup_cosine")
    opt = FinetuneConfig(optim=sgd, warmup_ratio=0.2).optimizer(10)
    p = {"w": jnp.ones(3)}
    upd, _ = opt.tx.update({"w": jnp.ones(3)}, opt.tx.init(p), p)
    np.testing.assert_array_equal(np.asarray(upd["w"]), 0.0)
    # variable-length batches: padded to pad_length (masked) or refused with a clear message
    lengths = iter([make_batch(0, T=8), make_batch(1, T=12)])
    padded = HostBatches(lengths, pad_length=16)
    first, second = next(padded), next(padded)
    assert first["tokens"].shape == second["tokens"].shape == (4, 16) and first["loss_mask"][:, 8:].sum() == 0
    with pytest.raises(ValueError, match="pad_length"):
        it = HostBatches(iter([make_batch(0, T=8), make_batch(1, T=12)]))
        next(it), next(it)
    assert not maybe_initialize_distributed({})


# ----------------------------------------------------------------------------- subprocesses

_COMMON = textwrap.dedent("""
    import sys, os, signal, numpy as np, jax
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    from flax import nnx
    from llm_finetune_test import Batches
    from lsb_jax.llm.finetune import FinetuneConfig, finetune
    from lsb_jax.models.lm import load_pretrained
    from lsb_jax.optim import OptimConfig
    from lsb_jax.train import Hook
    def flat(state):
        return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}
""")

_SHARDED = _COMMON + textwrap.dedent("""
    from lsb_jax.models.lm.sharding import make_mesh
    assert jax.device_count() == 8
    folder = sys.argv[1]
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-2, schedule="warmup_cosine"), warmup_ratio=0.3,
                         accum_steps=2)
    ref = finetune(load_pretrained(folder), Batches(8), cfg, 3, chunk_size=3)
    for shape in [(2, 2, 2)]:
        out = finetune(load_pretrained(folder), Batches(8), cfg, 3, chunk_size=3, mesh=make_mesh(*shape))
        a, b = flat(ref.params), flat(out.params)
        leaf = jax.tree.leaves(out.params)[0]
        assert len(leaf.sharding.device_set) == 8
        assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(out.params))
        # AdamW divides each gradient entry by its own RMS: a rounding difference d in an entry g (another
        # reduction order across shards) moves the parameter by ~lr d / |g|, large for the few entries with
        # small |g| (one lm_head entry of 3072 is 2.2e-6 apart, the 99.9% quantile 1.4e-7): budget 2e-3 lr
        for k in a:
            np.testing.assert_allclose(b[k], a[k], atol=2e-5, rtol=1e-5, err_msg=f"{shape} {k}")
        np.testing.assert_allclose(out.fit.history["example_loss"], ref.fit.history["example_loss"], atol=1e-5)
        print(shape, "max |dparam|", max(float(np.abs(b[k] - a[k]).max()) for k in a))
    print("ok")
""")


def _env(*xla: str):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags(*xla)}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_sharded_fine_tuning_equals_single_device(folder):
    res = subprocess.run([sys.executable, "-c", _SHARDED, str(folder[0])],
                         env=_env("--xla_force_host_platform_device_count=8"),
                         capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr[-3000:]


_RESUMABLE = _COMMON + textwrap.dedent("""
    folder, ckpt, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class Kill(Hook):   # kill -9 of this very process, after the update that reaches kill_at
        name = "kill"
        def __call__(self, state, step):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-2, schedule="warmup_cosine"), warmup_ratio=0.2,
                         lora_rank=2, lora_dropout=0.1, accum_steps=2)
    result = finetune(load_pretrained(folder), Batches(), cfg, 8, chunk_size=4, checkpoint_every=2,
                      checkpoint_dir=ckpt, resume=True, hooks=[Kill(every=1)])
    np.savez(out, resumed_from=-1 if result.fit.resumed_from is None else result.fit.resumed_from,
             **flat(result.params))
""")


@pytest.mark.slow
def test_kill_9_during_fine_tuning_resumes_bit_identical(folder, tmp_path):
    root = os.path.dirname(os.path.dirname(__file__))

    def run(name, kill_at):
        return subprocess.run([sys.executable, "-c", _RESUMABLE, str(folder[0]), str(tmp_path / name / "ckpt"),
                               str(tmp_path / f"{name}.npz"), str(kill_at)],
                              env=_env(), capture_output=True, text=True, timeout=600, cwd=root)

    full = run("full", -1)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run("killed", 5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "killed.npz").exists()
    resumed = run("killed", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "killed.npz")
    assert int(b["resumed_from"]) == 4 and int(a["resumed_from"]) == -1
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        if k != "resumed_from":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
