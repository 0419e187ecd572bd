"""Jitted autoregressive decoding with a preallocated KV cache (greedy or sampled).

    tokens_BxN, lengths_B = generate(model, prompt_BxP, mask_BxP, max_new_tokens=64)
    tokens_BxN, lengths_B = generate(model, prompt_BxP, mask_BxP, max_new_tokens=64,
                                     key=jax.random.key(0), temperature=0.7, top_p=0.9)

Prompts are LEFT-padded (`mask_BxP` 1 = real token; rotary positions come from the mask) so
that every row's next token goes to the same cache slot. One compiled program per (batch,
prompt bucket, max_new_tokens, greedy or not, stop sequences): the prompt length is padded up
to a multiple of `bucket`; temperature / top-k / top-p are traced, not static. The program runs
the prompt once through the model (prefill: keys and values of all prompt tokens into a cache
[layers, B, P + N, K, H]), then a `lax.while_loop` of one-token steps that stops when every row
has hit a stop sequence or N tokens are out. Sliding-window layers attend only to the last
`sliding_window` cache slots (slot-indexed, as transformers does).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsb_jax.models.lm.layers import init_cache
from lsb_jax.models.lm.model import Decoder, positions_from_mask
from lsb_jax.train.hosts import to_host


def sample_logits(logits_BxV: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array,
                  top_p: jax.Array) -> jax.Array:
    """Token ids [B] sampled from softmax(logits / temperature) restricted to the top-k tokens
    (`top_k` <= 0: all) and then to the smallest set of most likely tokens whose probability
    reaches `top_p` (transformers' order: temperature, top-k, top-p). At least one token is kept.
    """
    B, V = logits_BxV.shape
    logits_BxV = logits_BxV.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    order_BxV = jnp.argsort(-logits_BxV, axis=-1)  # descending
    sorted_BxV = jnp.take_along_axis(logits_BxV, order_BxV, axis=-1)
    rank_V = jnp.arange(V)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
    sorted_BxV = jnp.where(rank_V < k, sorted_BxV, -jnp.inf)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # mass of the more likely tokens
    keep_BxV = (before_BxV < top_p) | (rank_V == 0)
    sorted_BxV = jnp.where(keep_BxV, sorted_BxV, -jnp.inf)
    pick_B = jax.random.categorical(key, sorted_BxV, axis=-1)
    return jnp.take_along_axis(order_BxV, pick_B[:, None], axis=-1)[:, 0]


def _stop_hit(out_BxN: jax.Array, i: jax.Array, stop_sequences: tuple[tuple[int, ...], ...]) -> jax.Array:
    """[B] whether the tokens generated up to step i end with one of the stop sequences."""
    B = out_BxN.shape[0]
    hit_B = jnp.zeros((B,), bool)
    for seq in stop_sequences:
        m = len(seq)
        if m > out_BxN.shape[1]:   # longer than the whole output: it can never be hit
            continue
        tail_Bxm = jax.lax.dynamic_slice_in_dim(out_BxN, jnp.maximum(i + 1 - m, 0), m, axis=1)
        hit_B |= (i + 1 >= m) & jnp.all(tail_Bxm == jnp.asarray(seq, out_BxN.dtype), axis=1)
    return hit_B


def decode(graphdef: nnx.GraphDef, params: nnx.State, prompt_BxP: jax.Array, mask_BxP: jax.Array,
           key: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, *,
           max_new_tokens: int, greedy: bool, stop_sequences: tuple[tuple[int, ...], ...] = (),
           pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Pure decoding (jit with the keyword arguments and `graphdef` static).

    Returns the generated tokens [B, N] (`pad_id` after a row's stop sequence) and their
    lengths [B] (stop sequence included). `key` holds one key per row ([B]); row b's step i samples
    with `jax.random.fold_in(key[b], i)`, so a row's draw does not depend on the other rows.
    """
    model: Decoder = nnx.merge(graphdef, params)
    B, P = prompt_BxP.shape
    N = max_new_tokens
    mask_BxP = mask_BxP.astype(jnp.int32)
    valid_BxS = jnp.concatenate([mask_BxP, jnp.ones((B, N), jnp.int32)], axis=1)
    cache = init_cache(model.cfg, B, P + N, model.dtype)
    h_BxPxD, cache = model.hidden_cached(prompt_BxP, positions_from_mask(mask_BxP), valid_BxS,
                                         cache, jnp.int32(0))
    logits_BxV = model.logits(h_BxPxD[:, -1:])[:, 0]
    next_pos_B = mask_BxP.sum(axis=1)

    def choose(logits_BxV, i):
        if greedy:
            return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        def row(logits_V, key_b):
            return sample_logits(logits_V[None], jax.random.fold_in(key_b, i), temperature, top_k, top_p)[0]
        return jax.vmap(row)(logits_BxV, key).astype(jnp.int32)

    def cond(carry):
        i, _, _, _, done_B, _ = carry
        return (i < N) & ~jnp.all(done_B)

    def body(carry):
        i, logits_BxV, cache, out_BxN, done_B, lengths_B = carry
        tok_B = jnp.where(done_B, pad_id, choose(logits_BxV, i))
        out_BxN = jax.lax.dynamic_update_slice_in_dim(out_BxN, tok_B[:, None], i, axis=1)
        lengths_B = jnp.where(done_B, lengths_B, i + 1)
        done_B = done_B | _stop_hit(out_BxN, i, stop_sequences)
        h_Bx1xD, cache = model.hidden_cached(tok_B[:, None], (next_pos_B + i)[:, None], valid_BxS,
                                             cache, P + i)
        return i + 1, model.logits(h_Bx1xD)[:, 0], cache, out_BxN, done_B, lengths_B

    carry = (jnp.int32(0), logits_BxV, cache, jnp.full((B, N), pad_id, jnp.int32),
             jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32))
    _, _, _, out_BxN, _, lengths_B = jax.lax.while_loop(cond, body, carry)
    return out_BxN, lengths_B


_STATIC = ("max_new_tokens", "greedy", "stop_sequences", "pad_id")


@functools.lru_cache(maxsize=None)
def _compiled_decode(compiler_options: tuple | None):
    options = dict(compiler_options) if compiler_options else None
    return jax.jit(decode, static_argnums=0, static_argnames=_STATIC, compiler_options=options)


def generate(model: Decoder, prompt_BxP, attention_mask_BxP=None, *, max_new_tokens: int,
             key: jax.Array | None = None, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, stop_token_ids: Sequence[int] = (),
             stop_sequences: Sequence[Sequence[int]] = (), pad_id: int = 0, bucket: int = 16,
             compiler_options: dict | None = None) -> tuple[jax.Array, jax.Array]:
    """Generate up to `max_new_tokens` tokens after left-padded prompts.

    `temperature` 0 decodes greedily (argmax); otherwise tokens are sampled with `key`
    (required: one key, whose row b draws with `fold_in(key, b)`, or one key per row, [B]),
    optionally restricted by `top_k` / `top_p` (see `sample_logits`). A row stops
    after any of `stop_token_ids` or of the token-id `stop_sequences` (kept in its output).
    The prompt is left-padded further to a multiple of `bucket` so that nearby prompt lengths
    share one compiled program. Returns (tokens [B, N] padded with `pad_id`, lengths [B]).
    """
    prompt_BxP = np.asarray(prompt_BxP)
    B, P = prompt_BxP.shape
    mask_BxP = np.ones((B, P), np.int32) if attention_mask_BxP is None else np.asarray(attention_mask_BxP)
    if mask_BxP.shape != (B, P) or not mask_BxP[:, -1].all():
        raise ValueError("attention_mask_BxP must match the prompts and end with a real token in "
                         "every row (prompts are left-padded)")
    greedy = temperature == 0.0
    if not greedy and key is None:
        raise ValueError("sampling (temperature > 0) needs a PRNG `key`")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if max_new_tokens == 0:
        return jnp.zeros((B, 0), jnp.int32), jnp.zeros((B,), jnp.int32)
    row_keys = _row_keys(jax.random.key(0) if key is None else key, B)
    pad = -P % max(bucket, 1)
    prompt_BxP = np.pad(prompt_BxP, ((0, 0), (pad, 0)), constant_values=pad_id)
    mask_BxP = np.pad(mask_BxP, ((0, 0), (pad, 0)))
    stops = tuple(tuple(int(t) for t in s) for s in stop_sequences if len(s)) + tuple(
        (int(t),) for t in stop_token_ids)
    graphdef, params = nnx.split(model)
    run = _compiled_decode(tuple(sorted(compiler_options.items())) if compiler_options else None)
    return run(graphdef, params, jnp.asarray(prompt_BxP, jnp.int32), jnp.asarray(mask_BxP, jnp.int32),
               row_keys, jnp.float32(temperature), jnp.int32(top_k),
               jnp.float32(top_p), max_new_tokens=max_new_tokens, greedy=greedy, stop_sequences=stops,
               pad_id=pad_id)


def _row_keys(key: jax.Array, batch: int) -> jax.Array:
    """[B] typed keys: `key`'s `fold_in(key, b)` for one key (typed or raw uint32 [2]), or the given per-row keys."""
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    if key.ndim == 0:
        return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))
    if key.shape != (batch,):
        raise ValueError(f"key: one key or one per row ({batch}), got shape {key.shape}")
    return key


def truncate_at_stop_strings(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to (excluding) the earliest occurrence of any stop string (host-side)."""
    cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=len(text))
    return text[:cut]


def generate_text(model: Decoder, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                  stop_strings: Sequence[str] = (), **kwargs) -> list[str]:
    """Decoded continuations of text prompts (left-padded batch; eos stops a row; stop strings
    trimmed on the host). `kwargs` go to `generate` (key, temperature, top_k, top_p, ...)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    P = max(len(x) for x in ids)
    prompt_BxP = np.array([[pad_id] * (P - len(x)) + x for x in ids], np.int32)
    mask_BxP = np.array([[0] * (P - len(x)) + [1] * len(x) for x in ids], np.int32)
    eos = kwargs.pop("stop_token_ids", None)
    if eos is None:
        eos = () if tokenizer.eos_token_id is None else (tokenizer.eos_token_id,)
    tokens_BxN, lengths_B = to_host(generate(
        model, prompt_BxP, mask_BxP, max_new_tokens=max_new_tokens, stop_token_ids=eos, pad_id=pad_id,
        **kwargs))
    texts = [tokenizer.decode(t[:n], skip_special_tokens=True) for t, n in zip(tokens_BxN, lengths_B)]
    return [truncate_at_stop_strings(t, stop_strings) for t in texts]
