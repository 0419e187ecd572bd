"""GPT-2 (Hugging Face `GPT2Model` semantics) for the synthetic tasks, as one Flax NNX module.

Float inputs [B, T, input_dim] go through a linear read-in (Garg et al. 2022, seed 004's ICL
model); int tokens [B, T] through a token embedding (the fact-memorization task). Then

    h_0 = read_in(x) + wpe[t]                                   (learned positions, t < max_len)
    h   = h + attn(LN_1(h));  h = h + mlp(LN_2(h))               (pre-LN blocks, L of them)
    attn(u) = concat_n softmax(q_n k_n^T / sqrt(Dh) + causal) v_n @ W_o + b_o
    mlp(u)  = gelu_tanh(u W_fc + b_fc) W_proj + b_proj
    out = LN_f(h) W_out + b_out      (output_dim) or LN_f(h) wte^T (tied logits over the vocab)

LayerNorm eps 1e-5, GELU the tanh approximation (HF "gelu_new"), no dropout. Initialization as
HF GPT2: every weight ~ N(0, 0.02^2) (read-in/read-out included), the two residual projections
per block (attention out, MLP out) ~ N(0, (0.02 / sqrt(2L))^2), biases 0, LayerNorms (1, 0).

Axis letters: B batch, T positions, D width, N heads, H head dim (D / N), F MLP width, V vocab,
I input dim, O output dim.

The query/key/value projection is one fused [D, 3, N, H] kernel (HF `c_attn`, [D, 3D]).
`init_params(cfg, key) -> (graphdef, params)` and `apply(graphdef, params, inputs)` are the pure
forms for `jit`/`vmap` over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lsb_jax.config import require_positive
from lsb_jax.models.lm.layers import param


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """GPT-2 shape. Exactly one of `input_dim` (float inputs) / `vocab_size` (token inputs).

    `output_dim` -> a linear read-out [B, T, output_dim]; without it the outputs are logits over
    the vocabulary (tied to the token embedding unless `tie_embeddings=False`).
    """

    num_layers: int
    num_heads: int
    width: int
    max_len: int
    input_dim: int | None = None
    output_dim: int | None = None
    vocab_size: int | None = None
    mlp_ratio: int = 4
    tie_embeddings: bool = True
    init_std: float = 0.02
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        require_positive(self, ("num_layers", "num_heads", "width", "max_len", "mlp_ratio"), "GPT2Config")
        if (self.input_dim is None) == (self.vocab_size is None):
            raise ValueError("GPT2Config: give exactly one of input_dim (float inputs) and vocab_size "
                             f"(token inputs); got input_dim={self.input_dim}, vocab_size={self.vocab_size}")
        if self.width % self.num_heads:
            raise ValueError(f"GPT2Config.width={self.width} is not divisible by num_heads={self.num_heads}")
        if self.vocab_size is None and self.output_dim is None:
            raise ValueError("GPT2Config: float inputs (input_dim) need an output_dim for the read-out")
        for name in ("input_dim", "output_dim", "vocab_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"GPT2Config.{name} must be >= 1, got {v}")

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_ratio * self.width


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float) -> jax.Array:
    return std * jax.random.normal(rngs.params(), shape, jnp.float32)


def layer_norm(x_BxTxD: jax.Array, scale_D: jax.Array, bias_D: jax.Array, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (biased variance, as torch)."""
    mean = jnp.mean(x_BxTxD, -1, keepdims=True)
    xc = x_BxTxD - mean
    var = jnp.mean(xc * xc, -1, keepdims=True)
    return xc * jax.lax.rsqrt(var + eps) * scale_D + bias_D


# On CPU, attention scores [B, N, T, T] bigger than _BLOCK_ABOVE are computed a block of examples at a
# time (`lax.map`, each block rematerialized in the backward pass), so that a block's scores stay in
# cache instead of streaming through memory several times per layer. Paper-size ICL (12 layers,
# B 128, 8 heads, T 82: 27 MB of scores per layer) trains markedly faster so; small ones gain nothing
# and are left whole (`benchmarks/gpt2_step.py` measures it). GPUs keep the whole batch.
_BLOCK_BYTES = 4 << 20
_BLOCK_ABOVE = 16 << 20


def attention_block(batch: int, heads: int, length: int, itemsize: int = 4, backend: str | None = None) -> int:
    """Examples per attention block: `batch` (no blocking) unless the scores exceed _BLOCK_ABOVE on CPU;
    then the largest divisor of `batch` whose scores fit _BLOCK_BYTES (no blocking if that divisor is
    under a quarter of what would fit: tiny blocks cost more in loop overhead than they save)."""
    per_example = heads * length * length * itemsize
    if (backend or jax.default_backend()) != "cpu" or batch * per_example <= _BLOCK_ABOVE:
        return batch
    fit = max(1, _BLOCK_BYTES // per_example)
    block = max(d for d in range(1, min(fit, batch) + 1) if batch % d == 0)
    return block if 4 * block >= fit else batch


def _attend(q_BxTxNxH: jax.Array, k_BxTxNxH: jax.Array, v_BxTxNxH: jax.Array) -> jax.Array:
    T, H = q_BxTxNxH.shape[1], q_BxTxNxH.shape[-1]
    s_BxNxTxT = jnp.einsum("BTNH,BSNH->BNTS", q_BxTxNxH * (1.0 / math.sqrt(H)), k_BxTxNxH)
    # the mask as an additive bias: masked weights are exactly 0 after the softmax (as HF's
    # where(mask, s, min)), and the backward pass needs no select over the scores
    mask_TxT = jnp.where(jnp.tril(jnp.ones((T, T), bool)), 0.0, jnp.finfo(s_BxNxTxT.dtype).min)
    p_BxNxTxT = jax.nn.softmax(s_BxNxTxT + mask_TxT.astype(s_BxNxTxT.dtype), axis=-1)
    return jnp.einsum("BNTS,BSNH->BTNH", p_BxNxTxT, v_BxTxNxH)


def causal_attention(q_BxTxNxH: jax.Array, k_BxTxNxH: jax.Array, v_BxTxNxH: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(H) with keys s > t masked) v per head. Returns [B, T, N, H].

    Large batches on CPU go through in blocks of examples (`attention_block`); the numbers are the
    same either way (per-example math, recomputed rather than stored for the backward pass)."""
    B, T, N, H = q_BxTxNxH.shape
    block = attention_block(B, N, T, q_BxTxNxH.dtype.itemsize)
    if block == B:
        return _attend(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH)
    split = lambda a: a.reshape(B // block, block, *a.shape[1:])  # noqa: E731
    out = jax.lax.map(jax.checkpoint(lambda qkv: _attend(*qkv)), tuple(map(split, (q_BxTxNxH, k_BxTxNxH, v_BxTxNxH))))
    return out.reshape(B, T, N, H)


class Block(nnx.Module):
    """Pre-LN transformer block: h + attn(LN_1 h), then + mlp(LN_2 h)."""

    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        D, N, H, F = cfg.width, cfg.num_heads, cfg.head_dim, cfg.mlp_width
        std, res_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.num_layers)
        self.eps = cfg.layer_norm_eps
        self.ln1_scale = param(jnp.ones((D,)), ("embed",))
        self.ln1_bias = param(jnp.zeros((D,)), ("embed",))
        self.qkv_kernel = param(_normal(rngs, (D, 3, N, H), std), ("embed", None, "q_heads", "head_dim"))
        self.qkv_bias = param(jnp.zeros((3, N, H)), (None, "q_heads", "head_dim"))
        self.out_kernel = param(_normal(rngs, (N, H, D), res_std), ("q_heads", "head_dim", "embed"))
        self.out_bias = param(jnp.zeros((D,)), ("embed",))
        self.ln2_scale = param(jnp.ones((D,)), ("embed",))
        self.ln2_bias = param(jnp.zeros((D,)), ("embed",))
        self.fc_kernel = param(_normal(rngs, (D, F), std), ("embed", "mlp"))
        self.fc_bias = param(jnp.zeros((F,)), ("mlp",))
        self.proj_kernel = param(_normal(rngs, (F, D), res_std), ("mlp", "embed"))
        self.proj_bias = param(jnp.zeros((D,)), ("embed",))

    def __call__(self, h_BxTxD: jax.Array) -> jax.Array:
        u_BxTxD = layer_norm(h_BxTxD, self.ln1_scale[...], self.ln1_bias[...], self.eps)
        qkv_BxTx3xNxH = jnp.einsum("BTD,DCNH->BTCNH", u_BxTxD, self.qkv_kernel[...]) + self.qkv_bias[...]
        q, k, v = qkv_BxTx3xNxH[:, :, 0], qkv_BxTx3xNxH[:, :, 1], qkv_BxTx3xNxH[:, :, 2]
        a_BxTxNxH = causal_attention(q, k, v)
        h_BxTxD = h_BxTxD + jnp.einsum("BTNH,NHD->BTD", a_BxTxNxH, self.out_kernel[...]) + self.out_bias[...]
        u_BxTxD = layer_norm(h_BxTxD, self.ln2_scale[...], self.ln2_bias[...], self.eps)
        f_BxTxF = jax.nn.gelu(u_BxTxD @ self.fc_kernel[...] + self.fc_bias[...], approximate=True)
        return h_BxTxD + f_BxTxF @ self.proj_kernel[...] + self.proj_bias[...]


class GPT2(nnx.Module):
    """`GPT2(cfg, rngs=nnx.Rngs(seed))`; `model(inputs)` -> outputs (see the module docstring)."""

    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        self.cfg = cfg
        D, std = cfg.width, cfg.init_std
        if cfg.vocab_size is not None:
            self.wte = param(_normal(rngs, (cfg.vocab_size, D), std), ("vocab", "embed"))
        else:
            self.read_in_kernel = param(_normal(rngs, (cfg.input_dim, D), std), (None, "embed"))
            self.read_in_bias = param(jnp.zeros((D,)), ("embed",))
        self.wpe = param(_normal(rngs, (cfg.max_len, D), std), (None, "embed"))
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.lnf_scale = param(jnp.ones((D,)), ("embed",))
        self.lnf_bias = param(jnp.zeros((D,)), ("embed",))
        if cfg.output_dim is not None:
            self.read_out_kernel = param(_normal(rngs, (D, cfg.output_dim), std), ("embed", None))
            self.read_out_bias = param(jnp.zeros((cfg.output_dim,)), (None,))
        elif not cfg.tie_embeddings:
            self.lm_head = param(_normal(rngs, (D, cfg.vocab_size), std), ("embed", "vocab"))

    def embed(self, inputs: jax.Array) -> jax.Array:
        """h_0 [B, T, D]: read-in (or token embedding) plus learned positions."""
        cfg = self.cfg
        if cfg.vocab_size is not None:
            if inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.integer):
                raise ValueError(f"GPT2 with vocab_size expects int tokens [B, T], got {inputs.dtype}{inputs.shape}")
            h_BxTxD = jnp.take(self.wte[...], inputs, axis=0)
        else:
            if inputs.ndim != 3 or inputs.shape[-1] != cfg.input_dim:
                raise ValueError(f"GPT2 with input_dim={cfg.input_dim} expects [B, T, {cfg.input_dim}], "
                                 f"got {inputs.shape}")
            h_BxTxD = inputs.astype(jnp.float32) @ self.read_in_kernel[...] + self.read_in_bias[...]
        T = inputs.shape[1]
        if T > cfg.max_len:
            raise ValueError(f"GPT2: sequence length {T} exceeds max_len={cfg.max_len}")
        return h_BxTxD + self.wpe[...][:T]

    def hidden(self, inputs: jax.Array) -> jax.Array:
        """LN_f of the last block's output [B, T, D] (HF `GPT2Model.last_hidden_state`)."""
        h_BxTxD = self.embed(inputs)
        for block in self.blocks:
            h_BxTxD = block(h_BxTxD)
        return layer_norm(h_BxTxD, self.lnf_scale[...], self.lnf_bias[...], self.cfg.layer_norm_eps)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        h_BxTxD = self.hidden(inputs)
        if self.cfg.output_dim is not None:
            return h_BxTxD @ self.read_out_kernel[...] + self.read_out_bias[...]
        if self.cfg.tie_embeddings:
            return jnp.einsum("BTD,VD->BTV", h_BxTxD, self.wte[...])
        return h_BxTxD @ self.lm_head[...]


def init_params(cfg: GPT2Config, key: jax.Array) -> tuple[nnx.GraphDef, Any]:
    """(graphdef, params) of a freshly initialized model; params is an `nnx.State` pytree.

    Under `jax.vmap` over keys keep only the params: `jax.vmap(lambda k: init_params(cfg, k)[1])`.
    """
    return nnx.split(GPT2(cfg, rngs=nnx.Rngs(params=key)))


def abstract_graphdef(model_cfg: GPT2Config) -> nnx.GraphDef:
    """The model's graphdef without materializing (or compiling) an eager initialization."""
    box = {}

    def init(key):
        box["graphdef"], params = init_params(model_cfg, key)
        return params

    jax.eval_shape(init, jax.random.PRNGKey(0))
    return box["graphdef"]


def apply(graphdef: nnx.GraphDef, params: Any, inputs: jax.Array) -> jax.Array:
    """model(inputs) for the model `nnx.merge(graphdef, params)`; pure (jit/vmap/grad over params)."""
    return nnx.merge(graphdef, params)(inputs)


def num_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
