"""GPT-2 for the synthetic tasks against Hugging Face `transformers` GPT2 (torch, fp32)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lsb_jax.models import gpt2
from lsb_jax.models.gpt2 import GPT2, GPT2Config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

L, N, D = 2, 4, 32
# one float-input shape for most tests, so that compiled programs are shared between them
FLOAT = GPT2Config(num_layers=L, num_heads=N, width=D, max_len=12, input_dim=5, output_dim=3)
init = jax.jit(gpt2.init_params, static_argnums=0)
apply = jax.jit(gpt2.apply, static_argnums=0)


def hf_model(cfg: GPT2Config, lm_head: bool, seed: int = 0):
    """A random HF GPT2 of cfg's shape (dropout off), with non-trivial LayerNorm/bias values."""
    torch.manual_seed(seed)
    hcfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size or 8, n_positions=cfg.max_len, n_embd=cfg.width, n_layer=cfg.num_layers,
        n_head=cfg.num_heads, n_inner=None, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=cfg.layer_norm_eps, tie_word_embeddings=True)
    hcfg._attn_implementation = "eager"
    model = (transformers.GPT2LMHeadModel if lm_head else transformers.GPT2Model)(hcfg).eval()
    with torch.no_grad():  # random LN scales/biases and linear biases, so that a mixed-up copy shows
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def copy_into(model: GPT2, hf) -> None:
    """Our parameters <- HF's (Conv1D weights are [in, out], as ours)."""
    cfg = model.cfg
    sd = {k.removeprefix("transformer."): v.detach().numpy() for k, v in hf.state_dict().items()}
    N_, H = cfg.num_heads, cfg.head_dim
    if cfg.vocab_size is not None:
        model.wte[...] = jnp.asarray(sd["wte.weight"])
    model.wpe[...] = jnp.asarray(sd["wpe.weight"][: cfg.max_len])
    for i, b in enumerate(model.blocks):
        p = lambda s: jnp.asarray(sd[f"h.{i}.{s}"])
        b.ln1_scale[...], b.ln1_bias[...] = p("ln_1.weight"), p("ln_1.bias")
        b.qkv_kernel[...] = p("attn.c_attn.weight").reshape(cfg.width, 3, N_, H)
        b.qkv_bias[...] = p("attn.c_attn.bias").reshape(3, N_, H)
        b.out_kernel[...] = p("attn.c_proj.weight").reshape(N_, H, cfg.width)
        b.out_bias[...] = p("attn.c_proj.bias")
        b.ln2_scale[...], b.ln2_bias[...] = p("ln_2.weight"), p("ln_2.bias")
        b.fc_kernel[...], b.fc_bias[...] = p("mlp.c_fc.weight"), p("mlp.c_fc.bias")
        b.proj_kernel[...], b.proj_bias[...] = p("mlp.c_proj.weight"), p("mlp.c_proj.bias")
    model.lnf_scale[...], model.lnf_bias[...] = jnp.asarray(sd["ln_f.weight"]), jnp.asarray(sd["ln_f.bias"])


def test_float_inputs_match_hf_gpt2model_with_read_in_and_read_out():
    cfg = FLOAT
    model = nnx.merge(*init(cfg, jax.random.key(0)))
    hf = hf_model(cfg, lm_head=False)
    copy_into(model, hf)
    model.read_in_bias[...] = 0.1 * jax.random.normal(jax.random.key(1), (D,))
    model.read_out_bias[...] = 0.1 * jax.random.normal(jax.random.key(2), (3,))
    x = np.random.default_rng(0).normal(size=(3, 10, 5)).astype(np.float32)  # T < max_len
    W_in, b_in = np.asarray(model.read_in_kernel[...]), np.asarray(model.read_in_bias[...])
    with torch.no_grad():
        ref_h = hf(inputs_embeds=torch.from_numpy(x @ W_in + b_in)).last_hidden_state.numpy()
    ref_out = ref_h @ np.asarray(model.read_out_kernel[...]) + np.asarray(model.read_out_bias[...])
    graphdef, params = nnx.split(model)
    hidden = jax.jit(lambda p, x: nnx.merge(graphdef, p).hidden(x))(params, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(hidden), ref_h, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(apply(graphdef, params, jnp.asarray(x))), ref_out, atol=1e-5, rtol=1e-5)
    assert np.abs(ref_out).max() > 0.05  # the comparison is not of near-zero numbers


def test_attention_block_sizes():
    # paper-size ICL on CPU: 27 MB of scores per layer -> blocks of 16 examples (3.4 MB each)
    assert gpt2.attention_block(128, 8, 82, backend="cpu") == 16
    assert gpt2.attention_block(128, 8, 82, backend="gpu") == 128   # GPUs keep the whole batch
    assert gpt2.attention_block(64, 4, 82, backend="cpu") == 64     # 6.9 MB: left whole
    assert gpt2.attention_block(127, 8, 82, backend="cpu") == 127   # a prime batch: no useful divisor


def test_blocked_attention_matches_hf_outputs_and_gradients(monkeypatch):
    """Blocks of examples (forced on at a small size) give HF GPT-2's hidden states and the
    gradients of torch autograd, through the rematerialized blocks."""
    monkeypatch.setattr(gpt2, "_BLOCK_ABOVE", 0)
    monkeypatch.setattr(gpt2, "_BLOCK_BYTES", 2 * N * 10 * 10 * 4)      # 2 examples per block
    assert gpt2.attention_block(6, N, 10) == 2
    cfg = FLOAT
    model = nnx.merge(*init(cfg, jax.random.key(0)))
    hf = hf_model(cfg, lm_head=False, seed=3)
    copy_into(model, hf)
    x = np.random.default_rng(1).normal(size=(6, 10, 5)).astype(np.float32)
    W_in = np.asarray(model.read_in_kernel[...])
    emb = torch.from_numpy(x @ W_in).requires_grad_(True)
    ref_h = hf(inputs_embeds=emb).last_hidden_state
    g_out = np.random.default_rng(2).normal(size=ref_h.shape).astype(np.float32)
    (ref_h * torch.from_numpy(g_out)).sum().backward()
    graphdef, params = nnx.split(model)

    def hidden_from_embeddings(p, e):   # read-in replaced by the given embeddings (HF's inputs_embeds)
        m = nnx.merge(graphdef, p)
        h = e + m.wpe[...][: e.shape[1]]
        for block in m.blocks:
            h = block(h)
        return gpt2.layer_norm(h, m.lnf_scale[...], m.lnf_bias[...], cfg.layer_norm_eps)

    h, vjp = jax.vjp(hidden_from_embeddings, params, jnp.asarray(emb.detach().numpy()))
    grad_params, grad_emb = vjp(jnp.asarray(g_out))
    np.testing.assert_allclose(np.asarray(h), ref_h.detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_emb), emb.grad.numpy(), atol=1e-4, rtol=1e-4)
    ref_qkv = hf.h[0].attn.c_attn.weight.grad.numpy().reshape(cfg.width, 3, N, cfg.head_dim)
    np.testing.assert_allclose(np.asarray(grad_params["blocks"][0]["qkv_kernel"]), ref_qkv, atol=1e-4, rtol=1e-4)
    assert np.abs(ref_qkv).max() > 1e-2  # not a comparison of near-zero numbers


def test_token_inputs_match_hf_lm_head_logits_tied():
    cfg = GPT2Config(num_layers=L, num_heads=N, width=D, max_len=9, vocab_size=11)
    model = nnx.merge(*init(cfg, jax.random.key(0)))
    hf = hf_model(cfg, lm_head=True)
    copy_into(model, hf)
    tok = np.random.default_rng(1).integers(0, 11, size=(2, 9))
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(tok)).logits.numpy()
    out = np.asarray(apply(*nnx.split(model), jnp.asarray(tok)))
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_init_statistics_follow_hf_gpt2():
    _, params = init(FLOAT, jax.random.key(0))
    b = params["blocks"][0]
    std = lambda v: float(np.std(np.asarray(v[...])))
    res_std = 0.02 / math.sqrt(2 * L)  # residual projections: 0.02 / sqrt(2 * n_layers)
    np.testing.assert_allclose(std(b["fc_kernel"]), 0.02, rtol=0.06)
    np.testing.assert_allclose(std(b["qkv_kernel"]), 0.02, rtol=0.06)
    np.testing.assert_allclose(std(params["wpe"]), 0.02, rtol=0.2)
    np.testing.assert_allclose(std(b["proj_kernel"]), res_std, rtol=0.06)
    np.testing.assert_allclose(std(b["out_kernel"]), res_std, rtol=0.1)
    assert float(np.abs(np.asarray(b["fc_bias"][...])).max()) == 0.0
    assert float(np.abs(np.asarray(b["ln1_scale"][...]) - 1).max()) == 0.0
    # parameter count: Garg et al.'s 12/8/256 model without HF's unused token table is ~9.53M
    # (notes/synthetic.md: 22,400,769 with the 50,257 x 256 table)
    big = GPT2Config(num_layers=12, num_heads=8, width=256, max_len=202, input_dim=20, output_dim=1)
    n = gpt2.num_params(jax.eval_shape(lambda k: gpt2.init_params(big, k)[1], jax.random.key(0)))
    assert n + 50257 * 256 == 22_400_769


def test_outputs_are_causal():
    graphdef, params = init(FLOAT, jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(2, 10, 5)).astype(np.float32)
    t = 4
    x2 = x.copy()
    x2[:, t + 1:] = 10 * np.random.default_rng(1).normal(size=(2, 10 - t - 1, 5))
    y, y2 = apply(graphdef, params, jnp.asarray(x)), apply(graphdef, params, jnp.asarray(x2))
    np.testing.assert_array_equal(np.asarray(y[:, : t + 1]), np.asarray(y2[:, : t + 1]))
    assert float(jnp.abs(y[:, t + 1:] - y2[:, t + 1:]).min()) > 0  # later positions do see the change


def test_vmapped_init_and_apply_over_seeds_equal_per_seed_calls():
    cfg = FLOAT
    keys = jax.random.split(jax.random.key(0), 3)
    graphdef, _ = init(cfg, keys[0])
    params_M = jax.jit(jax.vmap(lambda k: gpt2.init_params(cfg, k)[1]))(keys)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 10, 5)).astype(np.float32))
    y_M = jax.jit(jax.vmap(lambda p: gpt2.apply(graphdef, p, x)))(params_M)
    for m in range(3):
        _, p = init(cfg, keys[m])
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params_M)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b[m]))
        np.testing.assert_allclose(np.asarray(apply(graphdef, p, x)), np.asarray(y_M[m]), atol=1e-6, rtol=1e-6)
    assert float(jnp.abs(y_M[0] - y_M[1]).max()) > 1e-4  # seeds differ


@pytest.mark.parametrize("kw, msg", [
    (dict(input_dim=3, vocab_size=5), "exactly one"),
    (dict(), "exactly one"),
    (dict(input_dim=3, output_dim=1, num_heads=3), "divisible"),
    (dict(input_dim=3), "output_dim"),
])
def test_config_validation(kw, msg):
    base = dict(num_layers=1, num_heads=2, width=8, max_len=4)
    with pytest.raises(ValueError, match=msg):
        GPT2Config(**{**base, **kw})


def test_bad_inputs_name_the_problem():
    graphdef, params = init(FLOAT, jax.random.key(0))
    with pytest.raises(ValueError, match="max_len"):
        apply(graphdef, params, jnp.zeros((1, 13, 5)))
    with pytest.raises(ValueError, match="input_dim=5"):
        apply(graphdef, params, jnp.zeros((1, 4, 2)))
