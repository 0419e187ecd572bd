"""Pure attention pieces of lsb_jax.models.lm.layers against numpy references."""

import jax
import numpy as np

from lm_fixtures import FAST_COMPILE
from lsb_jax.models.lm.layers import attend, attention_mask


def _numpy_attention(q, k, v, mask, scale, softcap):
    B, T, N, H = q.shape
    G = N // k.shape[2]
    k, v = np.repeat(k, G, axis=2), np.repeat(v, G, axis=2)  # head n uses kv head n // G
    s = np.einsum("btnh,bsnh->bnts", q, k) * scale
    s = np.tanh(s / softcap) * softcap
    s = np.where(mask[:, None], s, -1e30)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


def test_attend_gqa_softcap_sliding_window_and_padding():
    rng = np.random.RandomState(0)
    B, T, N, K, H = 2, 7, 4, 2, 5
    q, k, v = rng.randn(B, T, N, H), rng.randn(B, T, K, H), rng.randn(B, T, K, H)
    valid = np.ones((B, T), bool)
    valid[1, :2] = False  # left padding
    idx = np.broadcast_to(np.arange(T), (B, T))

    def run(q, k, v, valid):
        mask = attention_mask(idx, idx, valid, window=3)
        return mask, attend(q, k, v, mask, scale=0.3, softcap=2.0)

    mask, out = jax.device_get(jax.jit(run, compiler_options=FAST_COMPILE)(q, k, v, valid))
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    expected = (j <= i) & (j > i - 3) & valid[:, None, :]
    np.testing.assert_array_equal(mask, expected)
    assert np.isfinite(out).all()  # fully masked rows (padding queries) stay finite
    ref = _numpy_attention(q, k, v, expected, 0.3, 2.0)
    rows = expected.any(-1)
    np.testing.assert_allclose(out[rows], ref[rows], rtol=1e-4, atol=1e-5)
