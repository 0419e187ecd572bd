"""`Decoder`: one Flax NNX causal LM for every family in `DecoderConfig`.

    model = Decoder(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
    logits_BxTxV = model(tokens_BxT, attention_mask_BxT=mask_BxT)

Pure use: `graphdef, params = nnx.split(model)`; `nnx.merge(graphdef, params)` inside a jitted fn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lsb_jax.models.lm.config import SLIDING, DecoderConfig
from lsb_jax.models.lm.layers import (
    MLP, Attention, KVCache, Linear, Norm, attention_mask, param, rope_tables,
)


class Block(nnx.Module):
    """One decoder layer: attention and MLP, sequential or parallel, with optional sandwich norms."""

    def __init__(self, cfg: DecoderConfig, *, dtype, rngs: nnx.Rngs):
        norm = lambda: Norm(cfg.hidden_size, cfg.norm, cfg.norm_eps,  # noqa: E731
                            unit_offset=cfg.norm_unit_offset, dtype=dtype)
        self.block = cfg.block
        self.attn_norm = norm()
        self.mlp_norm = norm() if cfg.block != "parallel_shared" else None
        self.post_attn_norm = norm() if cfg.sandwich_norms else None
        self.post_mlp_norm = norm() if cfg.sandwich_norms else None
        self.attn = Attention(cfg, dtype=dtype, rngs=rngs)
        self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array, rope, mask_BxTxS: jax.Array, kv=None):
        """New hidden states; with `kv=(cache, layer, start)` (KV-cache decoding) also the cache."""
        h_BxTxD = self.attn_norm(x_BxTxD)
        if kv is None:
            a_BxTxD = self.attn(h_BxTxD, rope, mask_BxTxS)
            return self._residual(x_BxTxD, h_BxTxD, a_BxTxD)
        a_BxTxD, cache = self.attn.cached(h_BxTxD, rope, mask_BxTxS, *kv)
        return self._residual(x_BxTxD, h_BxTxD, a_BxTxD), cache

    def _residual(self, x_BxTxD: jax.Array, h_BxTxD: jax.Array, a_BxTxD: jax.Array) -> jax.Array:
        if self.post_attn_norm is not None:
            a_BxTxD = self.post_attn_norm(a_BxTxD)
        if self.block == "parallel_shared":
            return x_BxTxD + a_BxTxD + self.mlp(h_BxTxD)
        if self.block == "parallel":
            return x_BxTxD + a_BxTxD + self.mlp(self.mlp_norm(x_BxTxD))
        x_BxTxD = x_BxTxD + a_BxTxD
        m_BxTxD = self.mlp(self.mlp_norm(x_BxTxD))
        if self.post_mlp_norm is not None:
            m_BxTxD = self.post_mlp_norm(m_BxTxD)
        return x_BxTxD + m_BxTxD


class Decoder(nnx.Module):
    """Decoder-only LM. Weights and activations in `dtype`; norms, softmax and rotary in fp32."""

    def __init__(self, cfg: DecoderConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.cfg, self.dtype = cfg, dtype
        V, D = cfg.vocab_size, cfg.hidden_size
        self.embed = param(jax.random.normal(rngs.params(), (V, D), dtype), ("vocab", "embed"))
        self.layers = nnx.List([Block(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = Norm(D, cfg.norm, cfg.norm_eps, unit_offset=cfg.norm_unit_offset, dtype=dtype)
        self.lm_head = None if cfg.tie_embeddings else Linear(
            "BTD,DV->BTV", (D,), (V,), ("embed", "vocab"), bias=cfg.lm_head_bias, dtype=dtype, rngs=rngs)

    def hidden(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array | None = None,
               attention_mask_BxT: jax.Array | None = None) -> jax.Array:
        """Final-normed hidden states [B, T, D].

        `attention_mask_BxT` (1 = real token) removes padding from the keys; `positions_BxT`
        feed the rotary embedding (default 0..T-1; use `positions_from_mask` for left padding).
        """
        cfg = self.cfg
        B, T = tokens_BxT.shape
        idx_BxT = jnp.broadcast_to(jnp.arange(T), (B, T))
        positions_BxT = idx_BxT if positions_BxT is None else positions_BxT
        valid_BxT = (jnp.ones((B, T), bool) if attention_mask_BxT is None
                     else attention_mask_BxT.astype(bool))
        x_BxTxD = self._embed(tokens_BxT)
        masks, ropes = {}, {}
        for t in dict.fromkeys(cfg.layer_types):   # first-seen order: the same program in every process
            window = cfg.sliding_window if t == SLIDING else None
            masks[t] = attention_mask(idx_BxT, idx_BxT, valid_BxT, window)
            ropes[t] = rope_tables(positions_BxT, cfg.rope_for(t), self.dtype)
        for layer, t in zip(self.layers, cfg.layer_types):
            x_BxTxD = layer(x_BxTxD, ropes[t], masks[t])
        return self.final_norm(x_BxTxD)

    def hidden_cached(self, tokens_BxT: jax.Array, positions_BxT: jax.Array, kv_valid_BxS: jax.Array,
                      cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
        """Final-normed hidden states [B, T, D] of tokens in cache slots start..start+T-1.

        Their keys/values are written into `cache` (returned updated); they attend to every
        earlier slot where `kv_valid_BxS` (1 = real token, S = cache slots) holds, causally and
        within the sliding window by slot index, as `hidden` does over a whole sequence.
        """
        cfg = self.cfg
        B, T = tokens_BxT.shape
        S = cache.k.shape[2]
        q_idx_BxT = jnp.broadcast_to(start + jnp.arange(T), (B, T))
        kv_idx_BxS = jnp.broadcast_to(jnp.arange(S), (B, S))
        x_BxTxD = self._embed(tokens_BxT)
        masks, ropes = {}, {}
        for t in dict.fromkeys(cfg.layer_types):   # first-seen order: the same program in every process
            window = cfg.sliding_window if t == SLIDING else None
            masks[t] = attention_mask(q_idx_BxT, kv_idx_BxS, kv_valid_BxS.astype(bool), window)
            ropes[t] = rope_tables(positions_BxT, cfg.rope_for(t), self.dtype)
        for i, (layer, t) in enumerate(zip(self.layers, cfg.layer_types)):
            x_BxTxD, cache = layer(x_BxTxD, ropes[t], masks[t], kv=(cache, i, start))
        return self.final_norm(x_BxTxD), cache

    def _embed(self, tokens_BxT: jax.Array) -> jax.Array:
        x_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0)
        if self.cfg.embed_scale is not None:
            x_BxTxD = x_BxTxD * jnp.asarray(self.cfg.embed_scale, jnp.float32).astype(self.dtype)
        return x_BxTxD

    def logits(self, h_BxTxD: jax.Array) -> jax.Array:
        """Vocabulary logits [B, T, V] of hidden states (any T: used chunk by chunk by the loss)."""
        if self.lm_head is None:
            logits_BxTxV = jnp.einsum("BTD,VD->BTV", h_BxTxD, self.embed[...])
        else:
            logits_BxTxV = self.lm_head(h_BxTxD)
        cap = self.cfg.final_logit_softcap
        return logits_BxTxV if cap is None else jnp.tanh(logits_BxTxV / cap) * cap

    def __call__(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array | None = None,
                 attention_mask_BxT: jax.Array | None = None) -> jax.Array:
        """Logits [B, T, V]."""
        return self.logits(self.hidden(tokens_BxT, positions_BxT=positions_BxT,
                                       attention_mask_BxT=attention_mask_BxT))


def positions_from_mask(attention_mask_BxT: jax.Array) -> jax.Array:
    """Rotary positions that skip padding: 0 at each sequence's first real token (left padding)."""
    return jnp.maximum(jnp.cumsum(attention_mask_BxT.astype(jnp.int32), axis=1) - 1, 0)
