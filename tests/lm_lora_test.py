"""LoRA adapters (lsb_jax.models.lm.lora): selection by type, training only them, merge, export."""

import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from lm_fixtures import FAST_COMPILE, build, tokens  # noqa: E402
from lsb_jax.models.lm import load_pretrained, save_pretrained, sequence_loss  # noqa: E402
from lsb_jax.models.lm.lora import LoRAConfig, add_lora, lora_paths, merge_lora  # noqa: E402

BASE = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))


def _flat(model, filt) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, filt))}


_forward = jax.jit(lambda g, s, t: nnx.merge(g, s)(t), static_argnums=0, compiler_options=FAST_COMPILE)


_forward_with_state = jax.jit(lambda g, s, t: (lambda m: (m(t), nnx.state(m)))(nnx.merge(g, s)),
                              static_argnums=0, compiler_options=FAST_COMPILE)


def forward(model, tok_BxT):
    return np.asarray(_forward(*nnx.split(model), jnp.asarray(tok_BxT)))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    build("llama3_gqa_scaled", folder)
    return folder


def test_adapters_start_at_zero_and_are_selected_by_type(hf_folder):
    base = load_pretrained(hf_folder)
    model = add_lora(load_pretrained(hf_folder), LoRAConfig(rank=4, alpha=8.0), rngs=nnx.Rngs(0))
    assert lora_paths(model) == ["layers.0.attn.q", "layers.0.attn.v", "layers.1.attn.q", "layers.1.attn.v"]
    lora = _flat(model, nnx.LoRAParam)
    assert sorted(lora) == sorted(f"{p}.lora.{x}" for p in lora_paths(model) for x in "ab")
    assert lora["layers.0.attn.q.lora.a"].shape == (32, 4)
    assert lora["layers.0.attn.q.lora.b"].shape == (4, 4, 8)  # [r, N, H]
    assert not lora["layers.0.attn.q.lora.b"].any() and lora["layers.0.attn.q.lora.a"].any()
    assert sorted(_flat(model, BASE)) == sorted(_flat(base, nnx.Param))
    tok_BxT = tokens(2)
    np.testing.assert_array_equal(forward(model, tok_BxT), forward(base, tok_BxT))
    with pytest.raises(ValueError, match="match no linear"):
        add_lora(base, LoRAConfig(targets=r"nothing"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already has"):
        add_lora(model, LoRAConfig(), rngs=nnx.Rngs(0))


def test_optimizer_step_changes_only_lora_params(hf_folder):
    model = add_lora(load_pretrained(hf_folder), LoRAConfig(rank=2, alpha=4.0), rngs=nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.LoRAParam)
    tok_BxT = tokens(2)
    batch = dict(tokens=jnp.asarray(tok_BxT), loss_mask=jnp.ones(tok_BxT.shape))
    base_before, lora_before = _flat(model, BASE), _flat(model, nnx.LoRAParam)

    graphdef, state = nnx.split((model, optimizer))

    def train_step(state, batch):  # the functional form of an NNX step, jitted with jax.jit
        model, optimizer = nnx.merge(graphdef, state)
        loss = lambda m: sequence_loss(m, batch, chunk_size=6)[0].mean()  # noqa: E731
        value, grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), value, grads

    step = jax.jit(train_step, compiler_options=FAST_COMPILE)
    losses = []
    for _ in range(3):
        state, loss, grads = step(state, batch)
        losses.append(float(loss))
    assert sorted(".".join(map(str, p)) for p, _ in nnx.to_flat_state(grads)) == sorted(lora_before)
    nnx.update((model, optimizer), state)
    assert losses[-1] < losses[0]
    for key, value in _flat(model, BASE).items():
        np.testing.assert_array_equal(value, base_before[key], err_msg=key)  # bit-identical
    for key, value in _flat(model, nnx.LoRAParam).items():
        assert not np.array_equal(value, lora_before[key]), key  # A moves from step 2 on


def test_merge_matches_adapter_forward_and_exports_to_transformers(hf_folder, tmp_path):
    cfg = LoRAConfig(rank=3, alpha=5.0, targets=r".*\.attn\.(q|o)|.*\.mlp\.down|lm_head")
    model = add_lora(load_pretrained(hf_folder), cfg, rngs=nnx.Rngs(2))
    rng = np.random.RandomState(0)
    lora = nnx.state(model, nnx.LoRAParam)  # as if trained
    nnx.update(model, jax.tree.map(lambda x: jnp.asarray(0.2 * rng.randn(*x.shape), x.dtype), lora))
    merged = merge_lora(model)
    assert lora_paths(merged) == [] and len(lora_paths(model)) == 7  # the input keeps its adapters
    tok_BxT = tokens(2)
    ours = forward(model, tok_BxT)
    assert np.abs(ours - forward(load_pretrained(hf_folder), tok_BxT)).max() > 1e-2
    np.testing.assert_allclose(forward(merged, tok_BxT), ours, atol=1e-5, rtol=0)

    save_pretrained(merged, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(tok_BxT)).logits.numpy()
    np.testing.assert_allclose(ref, ours, atol=1e-4, rtol=0)


def test_dropout_only_in_training_mode(hf_folder):
    model = add_lora(load_pretrained(hf_folder), LoRAConfig(rank=2, dropout=0.5), rngs=nnx.Rngs(3))
    nnx.update(model, jax.tree.map(jnp.ones_like, nnx.state(model, nnx.LoRAParam)))
    tok_BxT = tokens(1)

    def run(model, tok_BxT):  # the dropout key advances in the returned state
        out, state = _forward_with_state(*nnx.split(model), jnp.asarray(tok_BxT))
        nnx.update(model, state)
        return out

    model.eval()
    a, b = np.asarray(run(model, tok_BxT)), np.asarray(run(model, tok_BxT))
    np.testing.assert_array_equal(a, b)
    model.train()
    c, d = np.asarray(run(model, tok_BxT)), np.asarray(run(model, tok_BxT))
    assert np.abs(c - a).max() > 1e-3 and np.abs(c - d).max() > 1e-3  # fresh masks each call


@pytest.mark.parametrize("case,targets,modules", [
    ("llama3_gqa_scaled", r"layers\..*", 14),                       # q, k, v, o (linear_nh), gate, up, down
    ("neox_parallel", r"layers\.1\.attn\.(q|v)|.*\.mlp\.up", 3),   # q, v of one layer in a fused query_key_value
    ("neox_parallel", r"layers\.0\.attn\.(q|k|v|o)|lm_head", 3),   # the head: saved as embed_out, module lm_head
    ("phi2_qk_layernorm_gqa", r".*\.attn\.(k|o)", 4),
])
def test_peft_adapter_loads_onto_the_base_with_our_outputs(tmp_path, case, targets, modules):
    """`save_peft_adapter`: peft's `PeftModel.from_pretrained` on the untouched HF base gives our
    adapted model's logits (fp32, <= 1e-5), and adapts exactly as many modules as we did."""
    peft = pytest.importorskip("peft")
    from lsb_jax.models.lm.lora import save_peft_adapter

    hf_base = build(case, tmp_path / "base")
    base = load_pretrained(tmp_path / "base")
    model = add_lora(load_pretrained(tmp_path / "base"), LoRAConfig(rank=3, alpha=5.0, targets=targets),
                     rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)   # trained-looking adapters: B != 0
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)):
        var.set_value(jnp.asarray(0.1 * rng.standard_normal(var.get_value().shape), jnp.float32))
    save_peft_adapter(model, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    peft_model = peft.PeftModel.from_pretrained(hf_base, tmp_path / "adapter").eval()
    tok_BxT = tokens(2)
    with torch.no_grad():
        theirs = peft_model(torch.tensor(tok_BxT)).logits.numpy()
    ours = forward(model, tok_BxT)
    assert np.abs(ours - forward(base, tok_BxT)).max() > 1e-2     # the adapters matter
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    adapted = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert len(adapted) == modules
    import json
    import re
    patterns = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["rank_pattern"]
    for key in patterns:   # peft < 0.14 matches r".*\.{key}$" on module names relative to the base model
        assert sum(bool(re.match(rf".*\.{key}$", n)) for n, _ in hf_base.named_modules()) == 1, key
    pinned = save_peft_adapter(model, tmp_path / "pinned", base_model="org/name", revision="v1")
    config = peft.PeftConfig.from_pretrained(pinned)        # a hub base at a revision: peft's own fields
    assert (config.base_model_name_or_path, config.revision) == ("org/name", "v1")
