"""Per-example next-token loss over masked (response) tokens, chunked over the sequence.

The vocabulary projection and log-softmax run on `chunk_size` positions at a time inside a
`lax.scan` whose body is rematerialized, so neither the forward nor the backward pass holds
the full [B, T, V] fp32 logits.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from lsb_jax.models.lm.model import Decoder, positions_from_mask


def chunked_cross_entropy(h_BxLxD: jax.Array, logits_fn: Callable[[jax.Array], jax.Array],
                          targets_BxL: jax.Array, weights_BxL: jax.Array, chunk_size: int = 128):
    """Weighted sums of -log p(target) and of the weights per example: ([B], [B]) in fp32.

    `logits_fn` maps hidden states [B, C, D] to logits [B, C, V]; it is applied per chunk.
    """
    B, L, D = h_BxLxD.shape
    C = max(1, min(chunk_size, L))
    n = -(-L // C)
    pad = n * C - L
    h_NxBxCxD = jnp.pad(h_BxLxD, ((0, 0), (0, pad), (0, 0))).reshape(B, n, C, D).swapaxes(0, 1)
    t_NxBxC = jnp.pad(targets_BxL, ((0, 0), (0, pad))).reshape(B, n, C).swapaxes(0, 1)
    w_NxBxC = jnp.pad(weights_BxL.astype(jnp.float32), ((0, 0), (0, pad))).reshape(B, n, C).swapaxes(0, 1)

    @jax.checkpoint
    def chunk_nll(h_BxCxD, t_BxC):
        logits_BxCxV = logits_fn(h_BxCxD).astype(jnp.float32)
        lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
        return lse_BxC - jnp.take_along_axis(logits_BxCxV, t_BxC[..., None], axis=-1)[..., 0]

    def body(sum_B, chunk):
        h_BxCxD, t_BxC, w_BxC = chunk
        return sum_B + jnp.sum(chunk_nll(h_BxCxD, t_BxC) * w_BxC, axis=1), None

    sum_B, _ = jax.lax.scan(body, jnp.zeros((B,), jnp.float32), (h_NxBxCxD, t_NxBxC, w_NxBxC))
    return sum_B, w_NxBxC.sum(axis=(0, 2))


def sequence_loss(model: Decoder, batch: dict, *, chunk_size: int = 128):
    """Per-example mean loss over response tokens and their counts: (loss_B, count_B).

    batch: "tokens" [B, T] int; "loss_mask" [B, T] (1 where the token is a target, e.g. the
    response; token t is predicted from tokens < t); optional "attention_mask" [B, T] (1 = real
    token; left or right padding) and "positions" [B, T] (default: `positions_from_mask`).
    An example without targets has loss 0 and count 0.
    """
    tokens_BxT = batch["tokens"]
    attn_BxT = batch.get("attention_mask")
    positions_BxT = batch.get("positions")
    if positions_BxT is None and attn_BxT is not None:
        positions_BxT = positions_from_mask(attn_BxT)
    h_BxTxD = model.hidden(tokens_BxT, positions_BxT=positions_BxT, attention_mask_BxT=attn_BxT)
    sum_B, count_B = chunked_cross_entropy(h_BxTxD[:, :-1], model.logits, tokens_BxT[:, 1:],
                                           batch["loss_mask"][:, 1:], chunk_size)
    return sum_B / jnp.maximum(count_B, 1.0), count_B


def make_loss_fn(graphdef: nnx.GraphDef, *, chunk_size: int = 128):
    """`loss_fn(params, batch) -> loss_B` for `graphdef, params = nnx.split(model)` (jit-able)."""

    def loss_fn(params, batch):
        return sequence_loss(nnx.merge(graphdef, params), batch, chunk_size=chunk_size)[0]

    return loss_fn
