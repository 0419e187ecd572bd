"""Chunked per-example cross-entropy (lsb_jax.models.lm.loss) against unchunked references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lm_fixtures import FAST_COMPILE
from lsb_jax.models.lm import Decoder, DecoderConfig, RopeConfig, chunked_cross_entropy, make_loss_fn
from lsb_jax.models.lm.config import FULL, SLIDING

B, L, D, V = 3, 10, 8, 17


def _numpy_reference(h_BxLxD, w_DxV, targets_BxL, weights_BxL):
    logits = (h_BxLxD.astype(np.float64) @ w_DxV.astype(np.float64))
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets_BxL[..., None], -1)[..., 0]
    return (nll * weights_BxL).sum(1), weights_BxL.sum(1)


def _problem(seed=0):
    rng = np.random.RandomState(seed)
    h = rng.randn(B, L, D).astype(np.float32)
    w = rng.randn(D, V).astype(np.float32)
    targets = rng.randint(0, V, (B, L))
    weights = (rng.rand(B, L) < 0.6).astype(np.float32)
    weights[1] = 0.0  # an example without response tokens
    return h, w, targets, weights


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 10, 64])
def test_chunked_matches_unchunked_reference(chunk_size):
    h, w, targets, weights = _problem()
    logits_fn = lambda h_BxCxD: jnp.einsum("BCD,DV->BCV", h_BxCxD, w)  # noqa: E731
    loss = jax.jit(chunked_cross_entropy, static_argnums=(1, 4), compiler_options=FAST_COMPILE)
    sum_B, count_B = loss(h, logits_fn, targets, weights, chunk_size)
    ref_sum, ref_count = _numpy_reference(h, w, targets, weights)
    np.testing.assert_allclose(np.asarray(sum_B), ref_sum, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(count_B), ref_count)


def test_chunked_gradient_matches_unchunked():
    h, w, targets, weights = _problem(1)

    def total(w_DxV, chunk_size):
        fn = lambda h_BxCxD: jnp.einsum("BCD,DV->BCV", h_BxCxD, w_DxV)  # noqa: E731
        return chunked_cross_entropy(jnp.asarray(h), fn, targets, weights, chunk_size)[0].sum()

    grad = jax.jit(jax.grad(total), static_argnums=1, compiler_options=FAST_COMPILE)
    np.testing.assert_allclose(np.asarray(grad(w, 3)), np.asarray(grad(w, L)), rtol=1e-4, atol=1e-6)


def test_peak_memory_never_holds_full_logits():
    B_, L_, D_, V_ = 2, 256, 16, 4096
    h = jnp.zeros((B_, L_, D_))
    w = jnp.zeros((D_, V_))
    t, m = jnp.zeros((B_, L_), jnp.int32), jnp.ones((B_, L_))

    def total(w_DxV, chunk_size):
        fn = lambda h_BxCxD: jnp.einsum("BCD,DV->BCV", h_BxCxD, w_DxV)  # noqa: E731
        return chunked_cross_entropy(h, fn, t, m, chunk_size)[0].sum()

    full_logits_bytes = B_ * L_ * V_ * 4
    for fn in (total, jax.grad(total)):
        compiled = jax.jit(fn, static_argnums=1, compiler_options=FAST_COMPILE).lower(w, 16).compile()
        assert compiled.memory_analysis().temp_size_in_bytes < full_logits_bytes / 4


def _tiny_config() -> DecoderConfig:
    rope = RopeConfig(theta=10000.0, rotary_dim=8)
    return DecoderConfig(
        family="llama", vocab_size=V, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1,
        head_dim=8, intermediate_size=32, norm="rmsnorm", norm_eps=1e-6, activation="silu",
        gated_mlp=True, rope=((FULL, rope), (SLIDING, rope)), layer_types=(SLIDING, FULL),
        sliding_window=3, attn_scale=8 ** -0.5)


def test_loss_fn_is_pure_jitted_batched_and_masked():
    # Random weights from numpy: threefry init compiles slowly on CPU and is not under test.
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(_tiny_config(), rngs=nnx.Rngs(0))))
    rng = np.random.RandomState(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.randn(*s.shape), s.dtype), abstract)
    tokens = rng.randint(0, V, (4, 9))
    attn = np.ones_like(tokens)
    attn[0, :2] = 0  # left padding
    loss_mask = np.zeros_like(tokens)
    loss_mask[:, 5:] = 1
    batch = dict(tokens=tokens, loss_mask=loss_mask, attention_mask=attn)

    positions = np.maximum(np.cumsum(attn, 1) - 1, 0)

    def loss_grads_and_logits(params, batch):
        loss_fn = make_loss_fn(graphdef, chunk_size=3)
        grads = jax.grad(lambda p: loss_fn(p, batch).mean())(params)
        logits = nnx.merge(graphdef, params)(batch["tokens"], positions_BxT=positions,
                                             attention_mask_BxT=batch["attention_mask"])
        return loss_fn(params, batch), grads, logits

    run = jax.jit(loss_grads_and_logits, compiler_options=FAST_COMPILE)
    loss_B, grads, logits = run(params, batch)
    assert loss_B.shape == (4,)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
    logits = np.asarray(logits, np.float64)
    for b in range(4):  # unchunked reference, one example at a time
        logp = logits[b, :-1] - np.log(np.exp(logits[b, :-1]).sum(-1, keepdims=True))
        nll = -logp[np.arange(8), tokens[b, 1:]]
        ref = (nll * loss_mask[b, 1:]).sum() / loss_mask[b, 1:].sum()
        np.testing.assert_allclose(float(loss_B[b]), ref, rtol=1e-5)
