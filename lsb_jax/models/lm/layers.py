"""Building blocks of the decoder: parameters with logical axes, norms, rotary, attention, MLPs.

Each Param carries `out_sharding` = logical axis names ("embed", "q_heads", "kv_heads",
"head_dim", "mlp", "vocab"); map them onto a mesh with `nnx.logical_axis_rules` and
`nnx.get_partition_spec`. Axis letters: see `config.py`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsb_jax.models.lm.config import DecoderConfig, RopeConfig

# Every logical axis name a weight carries; sharding rules should map each (to None if replicated).
LOGICAL_AXES = ("vocab", "embed", "q_heads", "kv_heads", "head_dim", "mlp")

_ACT: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu, "swish": jax.nn.silu, "relu": jax.nn.relu,
}


def param(value: jax.Array, axes: tuple[str, ...]) -> nnx.Param:
    """A parameter annotated with logical axis names (not sharded eagerly)."""
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class Linear(nnx.Module):
    """y = einsum(eqn, x, kernel) (+ bias); kernel is [*in_shape, *out_shape]."""

    def __init__(self, eqn: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 axes: tuple[str, ...], *, bias: bool, dtype, rngs: nnx.Rngs):
        self.eqn = eqn
        std = 1.0 / math.sqrt(math.prod(in_shape))
        kernel = std * jax.random.normal(rngs.params(), in_shape + out_shape, dtype)
        self.kernel = param(kernel, axes)
        self.bias = param(jnp.zeros(out_shape, dtype), axes[len(in_shape):]) if bias else None
        self.lora = nnx.data(None)  # an adapter (lsb_jax.models.lm.lora.LoRA) adds its low-rank term

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum(self.eqn, x, self.kernel[...])
        y = y + self.bias[...] if self.bias is not None else y
        return y + self.lora(x) if self.lora is not None else y


class Norm(nnx.Module):
    """LayerNorm (scale, bias) or RMSNorm over the last axis, computed in fp32.

    `unit_offset` (Gemma) scales by (1 + scale) in fp32 before casting back; plain RMSNorm
    (Llama) casts the normalized input back first, then scales, as transformers does.
    """

    def __init__(self, dim: int, kind: str, eps: float, *, unit_offset: bool = False,
                 axis_name: str = "embed", dtype=jnp.float32):
        self.kind, self.eps, self.unit_offset = kind, eps, unit_offset
        self.scale = param(jnp.zeros((dim,), dtype) if unit_offset else jnp.ones((dim,), dtype),
                           (axis_name,))
        self.bias = param(jnp.zeros((dim,), dtype), (axis_name,)) if kind == "layernorm" else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        if self.kind == "layernorm":
            x32 = x32 - x32.mean(-1, keepdims=True)
        y32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
        if self.unit_offset:
            return (y32 * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)
        if self.kind == "rmsnorm":
            return self.scale[...] * y32.astype(x.dtype)
        y32 = y32 * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y32.astype(x.dtype)


def rope_inv_freq(rope: RopeConfig) -> np.ndarray:
    """Inverse frequencies [R/2] in fp32, with linear, llama3 or yarn frequency scaling (dynamic
    rope's depend on the sequence: `rope_tables`)."""
    exponent = np.arange(0, rope.rotary_dim, 2).astype(np.float32) / np.float32(rope.rotary_dim)
    inv = (1.0 / (np.float32(rope.theta) ** exponent)).astype(np.float32)
    if rope.kind == "linear":
        return (inv / np.float32(rope.factor)).astype(np.float32)
    if rope.kind == "yarn":   # transformers' _compute_yarn_parameters
        dim, base = rope.rotary_dim, rope.theta

        def correction_dim(rotations: float) -> float:
            turns = rope.original_max_position_embeddings / (rotations * 2 * math.pi)
            return dim * math.log(turns) / (2 * math.log(base))

        low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
        if rope.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
        extrapolation = 1 - ramp
        return (inv / np.float32(rope.factor) * (1 - extrapolation) + inv * extrapolation).astype(np.float32)
    if rope.kind == "llama3":
        old = rope.original_max_position_embeddings
        low_wavelen, high_wavelen = old / rope.low_freq_factor, old / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (old / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def _dynamic_inv_freq(positions_BxT: jax.Array, rope: RopeConfig) -> jax.Array:
    """Dynamic NTK rope (transformers' `_compute_dynamic_ntk_parameters`): beyond
    max_position_embeddings the base grows with the sequence length, here max(positions) + 1. A
    pure function of the positions: transformers also keeps the largest length it has seen (it
    resets only below the original length), which this does not replay."""
    dim, max_pos = rope.rotary_dim, rope.max_position_embeddings
    seq_len = jnp.maximum(jnp.max(positions_BxT).astype(jnp.float32) + 1, max_pos)
    base = rope.theta * ((rope.factor * seq_len / max_pos) - (rope.factor - 1)) ** (dim / (dim - 2))
    return 1.0 / (base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def rope_tables(positions_BxT: jax.Array, rope: RopeConfig, dtype) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, T, R] for integer positions (computed in fp32, cast to `dtype`), times yarn's
    attention factor."""
    inv_R2 = _dynamic_inv_freq(positions_BxT, rope) if rope.kind == "dynamic" else jnp.asarray(rope_inv_freq(rope))
    freqs_BxTxR2 = positions_BxT.astype(jnp.float32)[..., None] * inv_R2
    emb_BxTxR = jnp.concatenate([freqs_BxTxR2, freqs_BxTxR2], axis=-1)
    cos, sin = jnp.cos(emb_BxTxR), jnp.sin(emb_BxTxR)
    if rope.attention_factor != 1.0:
        cos, sin = cos * rope.attention_factor, sin * rope.attention_factor
    return cos.astype(dtype), sin.astype(dtype)


def apply_rope(x_BxTxNxH: jax.Array, cos_BxTxR: jax.Array, sin_BxTxR: jax.Array) -> jax.Array:
    """Rotate-half rotary embedding on the first R dims of each head; the rest pass through."""
    R = cos_BxTxR.shape[-1]
    x_rot, x_pass = x_BxTxNxH[..., :R], x_BxTxNxH[..., R:]
    x1, x2 = x_rot[..., : R // 2], x_rot[..., R // 2:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = cos_BxTxR[:, :, None, :], sin_BxTxR[:, :, None, :]
    return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


def attention_mask(q_idx_BxT: jax.Array, kv_idx_BxS: jax.Array, kv_valid_BxS: jax.Array,
                   window: int | None = None) -> jax.Array:
    """Boolean [B, T, S]: causal over slot indices, optional sliding window, padding removed."""
    q, k = q_idx_BxT[:, :, None], kv_idx_BxS[:, None, :]
    mask_BxTxS = (k <= q) & kv_valid_BxS[:, None, :]
    if window is not None:
        mask_BxTxS &= k > q - window
    return mask_BxTxS


def attend(q_BxTxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, mask_BxTxS: jax.Array,
           scale: float, softcap: float | None = None) -> jax.Array:
    """Grouped-query softmax attention (softmax in fp32). Returns [B, T, N, H]."""
    B, T, N, H = q_BxTxNxH.shape
    K = k_BxSxKxH.shape[2]
    q_BxTxKxGxH = q_BxTxNxH.reshape(B, T, K, N // K, H)
    s_BxKxGxTxS = jnp.einsum("BTKGH,BSKH->BKGTS", q_BxTxKxGxH, k_BxSxKxH).astype(jnp.float32) * scale
    if softcap is not None:
        s_BxKxGxTxS = jnp.tanh(s_BxKxGxTxS / softcap) * softcap
    s_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], s_BxKxGxTxS, jnp.finfo(jnp.float32).min)
    p_BxKxGxTxS = jax.nn.softmax(s_BxKxGxTxS, axis=-1).astype(v_BxSxKxH.dtype)
    out_BxTxKxGxH = jnp.einsum("BKGTS,BSKH->BTKGH", p_BxKxGxTxS, v_BxSxKxH)
    return out_BxTxKxGxH.reshape(B, T, N, H)


class KVCache(NamedTuple):
    """Preallocated keys and values of every layer, [L, B, S, K, H] each (S = cache slots)."""

    k: jax.Array
    v: jax.Array


def init_cache(cfg: DecoderConfig, batch: int, max_len: int, dtype) -> KVCache:
    """An all-zero cache for `batch` sequences of up to `max_len` slots."""
    shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


# Muon (`OptimConfig.muon_in_axes`): the attention kernels are matrices over their input axes
# (the leading ones of [*in_shape, *out_shape]): q/k/v [D, N, H] are D x (N H), o [N, H, D] is (N H) x D.
MUON_IN_AXES = {r"attn\.[qkv]\.kernel$": 1, r"attn\.o\.kernel$": 2}


class Attention(nnx.Module):
    """Multi-head attention with GQA, optional q/k norms, partial rotary and sliding window.

    `project` (q, k, v after norms and rotary) and `attend` are separate so that a KV cache can
    be written between them.
    """

    def __init__(self, cfg: DecoderConfig, *, dtype, rngs: nnx.Rngs):
        D, N, K, H = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kw = dict(bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.q = Linear("BTD,DNH->BTNH", (D,), (N, H), ("embed", "q_heads", "head_dim"), **kw)
        self.k = Linear("BTD,DKH->BTKH", (D,), (K, H), ("embed", "kv_heads", "head_dim"), **kw)
        self.v = Linear("BTD,DKH->BTKH", (D,), (K, H), ("embed", "kv_heads", "head_dim"), **kw)
        self.o = Linear("BTNH,NHD->BTD", (N, H), (D,), ("q_heads", "head_dim", "embed"), **kw)
        norm = dict(kind=cfg.norm, eps=cfg.norm_eps, unit_offset=cfg.norm_unit_offset,
                    axis_name="head_dim", dtype=dtype)
        self.q_norm = Norm(cfg.qk_norm_dim, **norm) if cfg.qk_norm else None
        self.k_norm = Norm(cfg.qk_norm_dim, **norm) if cfg.qk_norm else None
        self.scale, self.softcap = cfg.attn_scale, cfg.attn_logit_softcap

    def project(self, x_BxTxD: jax.Array, cos_BxTxR: jax.Array, sin_BxTxR: jax.Array):
        """q [B,T,N,H], k and v [B,T,K,H], normed and rotated."""
        q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = self.q(x_BxTxD), self.k(x_BxTxD), self.v(x_BxTxD)
        if self.q_norm is not None:
            q_BxTxNxH, k_BxTxKxH = self.q_norm(q_BxTxNxH), self.k_norm(k_BxTxKxH)
        q_BxTxNxH = apply_rope(q_BxTxNxH, cos_BxTxR, sin_BxTxR)
        return q_BxTxNxH, apply_rope(k_BxTxKxH, cos_BxTxR, sin_BxTxR), v_BxTxKxH

    def __call__(self, x_BxTxD: jax.Array, rope: tuple[jax.Array, jax.Array],
                 mask_BxTxS: jax.Array) -> jax.Array:
        q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = self.project(x_BxTxD, *rope)
        out_BxTxNxH = attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask_BxTxS, self.scale, self.softcap)
        return self.o(out_BxTxNxH)

    def cached(self, x_BxTxD: jax.Array, rope: tuple[jax.Array, jax.Array], mask_BxTxS: jax.Array,
               cache: KVCache, layer: int, start: jax.Array) -> tuple[jax.Array, KVCache]:
        """Attention of T new tokens in cache slots start..start+T-1 over all S cache slots.

        The new keys/values are written in place into layer `layer` of the cache first;
        `mask_BxTxS` (slot-indexed: causal, window, padding) hides slots not yet written.
        """
        q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = self.project(x_BxTxD, *rope)
        at = (layer, 0, start, 0, 0)
        cache = KVCache(jax.lax.dynamic_update_slice(cache.k, k_BxTxKxH[None].astype(cache.k.dtype), at),
                        jax.lax.dynamic_update_slice(cache.v, v_BxTxKxH[None].astype(cache.v.dtype), at))
        out_BxTxNxH = attend(q_BxTxNxH, cache.k[layer], cache.v[layer], mask_BxTxS, self.scale,
                             self.softcap)
        return self.o(out_BxTxNxH), cache


class MLP(nnx.Module):
    """Gated (SwiGLU/GeGLU: down(act(gate x) * up x)) or dense (down(act(up x))) MLP."""

    def __init__(self, cfg: DecoderConfig, *, dtype, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        kw = dict(bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
        self.gate = Linear("BTD,DF->BTF", (D,), (F,), ("embed", "mlp"), **kw) if cfg.gated_mlp else None
        self.up = Linear("BTD,DF->BTF", (D,), (F,), ("embed", "mlp"), **kw)
        self.down = Linear("BTF,FD->BTD", (F,), (D,), ("mlp", "embed"), **kw)
        self.activation = cfg.activation

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        act = _ACT[self.activation]
        if self.gate is not None:
            h_BxTxF = act(self.gate(x_BxTxD)) * self.up(x_BxTxD)
        else:
            h_BxTxF = act(self.up(x_BxTxD))
        return self.down(h_BxTxF)
