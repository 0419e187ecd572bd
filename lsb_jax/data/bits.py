"""Counter-based random bits that fuse into the computation that uses them.

    stream_bits(key, index)       element `index` of jax.random.bits(key, (N,), uint32), any N > index
    stream_row(key, row, width)   row `row` of jax.random.bits(key, (R, width), uint32), any R > row

Both give exactly JAX's numbers (its threefry-2x32 under the default `jax_threefry_partitionable`
mode: the bits of flat position n are hi ^ lo of threefry2x32(key, (n >> 32, n mod 2^32))), so a
stream drawn in pieces, step by step, is the same stream as one long draw, and a resumed run draws
what the interrupted one drew. What differs is the cost of a small draw: XLA:CPU lowers JAX's
threefry as a rolled five-trip while loop, a loop of its own for every draw, which a small vmapped
training step pays on every step (`benchmarks/vmap_seeds.py` times its share). Here the twenty
rounds are plain uint32 arithmetic: one elementwise kernel on every backend. Its result is divided
by a traced one, because XLA duplicates cheap elementwise producers into each consumer (and a
broadcasting consumer, such as bits -> ±1 coordinates, would recompute the hash for every reuse)
but treats a division as expensive and does not: the hash is computed once per draw (one fusion in
the compiled parity step; a speed matter only, the numbers are the same either way).

Keys are raw uint32[2] threefry keys (`jax.random.PRNGKey`, `jax.random.key_data` of a typed key).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KS_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key: jax.Array, hi: jax.Array, lo: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011) of the counters (hi, lo) under key: the hash
    of `jax.extend.random.threefry2x32_p`, written out so that it fuses."""
    key = jnp.asarray(key, jnp.uint32)
    ks = (key[0], key[1], key[0] ^ key[1] ^ _KS_PARITY)
    x0, x1 = hi + ks[0], lo + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ _rotl(x1, r)
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _computed_once(bits: jax.Array, key: jax.Array) -> jax.Array:
    """bits // 1 with a 1 that XLA cannot fold away (see the module doc)."""
    return bits // jnp.minimum(key[0] | np.uint32(1), np.uint32(1))


def _as_key(key) -> jax.Array:
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(f"stream bits: want a raw threefry key uint32[2], got {key.dtype}{list(key.shape)}")
    return key


def stream_bits(key, index) -> jax.Array:
    """uint32 [*index.shape]: element `index` of jax.random.bits(key, (N,), uint32) for any N > index.

    index: non-negative integers (int32 or uint32, so below 2^32); traced values are fine.
    """
    index = jnp.asarray(index)
    if not jnp.issubdtype(index.dtype, jnp.integer):
        raise ValueError(f"stream_bits: index must be integers, got {index.dtype}")
    key, lo = _as_key(key), index.astype(jnp.uint32)
    x0, x1 = threefry2x32(key, jnp.zeros_like(lo), lo)
    return _computed_once(x0 ^ x1, key)


def _flat_index(row: jax.Array, width: int, col: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hi, lo) uint32 words of the 64-bit row * width + col, exactly (row < 2^31, width and col < 2^31)."""
    row = jnp.asarray(row).astype(jnp.uint32)
    r1, r0 = row >> np.uint32(16), row & np.uint32(0xFFFF)
    w1, w0 = np.uint32(width >> 16), np.uint32(width & 0xFFFF)
    mid = r0 * w1 + r1 * w0                  # each term < 2^31: no wrap
    low = r0 * w0                            # < 2^32
    lo = low + (mid << np.uint32(16))
    hi = r1 * w1 + (mid >> np.uint32(16)) + (lo < low).astype(jnp.uint32)
    lo_col = lo + col.astype(jnp.uint32)
    return hi + (lo_col < lo).astype(jnp.uint32), lo_col


def stream_row(key, row, width: int) -> jax.Array:
    """uint32 [width]: row `row` of jax.random.bits(key, (R, width), uint32) for any R > row, i.e. the
    draws row * width ... row * width + width - 1 of one long stream (64-bit positions: no wrap).

    row: a non-negative int32 (a training step, typically; traced is fine); width: a static int.
    """
    if not (isinstance(width, (int, np.integer)) and 1 <= width < 2 ** 31):
        raise ValueError(f"stream_row: width must be an int in [1, 2^31), got {width!r}")
    key = _as_key(key)
    hi, lo = _flat_index(row, int(width), jnp.arange(width, dtype=jnp.uint32))
    x0, x1 = threefry2x32(key, hi, lo)
    return _computed_once(x0 ^ x1, key)


__all__ = ["stream_bits", "stream_row", "threefry2x32"]
