"""Keyed pseudo-random bijections on [0, n), evaluated pointwise in O(1) per element.

A balanced Feistel network on the domain [0, 2^(2h)), the smallest even-bit power of two >= n
(h >= 1). With x = (L, R) split into h-bit halves, one round with key k_j is

    (L, R) -> (R, L xor F(R, k_j) mod 2^h),        F(r, k) = mix32(r xor k)

where mix32 is an avalanching integer hash on uint32 (lowbias32: xorshift-multiply, twice).
Every round is invertible, so the network is a bijection on [0, 2^(2h)). Cycle walking
restricts it to [0, n): y = f(x); while y >= n: y = f(y). The orbit of x < n under f returns to
x, so the loop ends, and the restricted map is again a bijection (Black & Rogaway 2002). The
domain is at most 4n, so the expected number of walks is < 4.

No table of size n is ever built: the Epochs sampler permutes only the B positions of a batch,
and `Subset`/`Zipf` map B ranks to items. `permutation(key, n)` materializes the whole order
(O(n)) for `probs` and for tests.

Round keys come from a PRNG key (`round_keys`, one threefry call), from an int seed on the host
(`seed_round_keys`, a splitmix64 stream: a compile-time constant, no PRNG in the program), and
are specialized per tweak t (e.g. the epoch) by hashing, k_j(t) = mix32(k_j + mix32(t xor c)),
which keeps a batch of B epoch-specific key sets O(B) integer ops instead of B threefry calls.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NUM_ROUNDS = 6
SMALL_N = 64   # n <= SMALL_N: rank by a keyed hash (see the module docstring)

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)


def mix32(x_U: jax.Array) -> jax.Array:
    """lowbias32 integer hash (Wellons): a bijection on uint32 with strong avalanche."""
    x_U = x_U ^ (x_U >> np.uint32(16))
    x_U = x_U * _M1
    x_U = x_U ^ (x_U >> np.uint32(15))
    x_U = x_U * _M2
    return x_U ^ (x_U >> np.uint32(16))


def half_bits(n: int) -> int:
    """h such that 2^(2h) is the smallest even-bit power of two >= n (h >= 1)."""
    if not 1 <= n <= 2**31 - 1:
        raise ValueError(f"permutation.n: need 1 <= n < 2^31, got {n}")
    bits = max(1, int(n - 1).bit_length())
    return (bits + 1) // 2


def round_keys(key: jax.Array, num_rounds: int = NUM_ROUNDS) -> jax.Array:
    """[num_rounds] uint32 round keys drawn from a PRNG key (typed or raw uint32)."""
    return jax.random.bits(key, (num_rounds,), jnp.uint32)


def seed_round_keys(seed: int, num_rounds: int = NUM_ROUNDS) -> np.ndarray:
    """[num_rounds] uint32 round keys from an int seed, on the host (splitmix64, upper 32 bits)."""
    mask = (1 << 64) - 1
    state, keys = int(seed) & mask, []
    for _ in range(num_rounds):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        keys.append((z ^ (z >> 31)) >> 32)
    return np.array(keys, np.uint32)


def tweak_round_keys(round_keys_R: jax.Array, tweak) -> jax.Array:
    """tweak.shape + [R] keys k_j(t) = mix32(k_j + mix32(t xor 0x9E3779B9)); distinct t, distinct keys."""
    t_U = mix32(jnp.asarray(tweak).astype(jnp.uint32) ^ np.uint32(0x9E3779B9))
    return mix32(jnp.asarray(round_keys_R, jnp.uint32) + t_U[..., None])


def _rounds(x_U, round_keys_R, h: int, inverse: bool):
    mask = np.uint32((1 << h) - 1)
    shift = np.uint32(h)
    left, right = x_U >> shift, x_U & mask
    num_rounds = round_keys_R.shape[-1]
    order = range(num_rounds - 1, -1, -1) if inverse else range(num_rounds)
    for j in order:
        k = round_keys_R[..., j]
        if inverse:  # (L', R') = (R, L ^ F(R)) => R = L', L = R' ^ F(L')
            left, right = right ^ (mix32(left ^ k) & mask), left
        else:
            left, right = right, left ^ (mix32(right ^ k) & mask)
    return (left << shift) | right


def _rank(x, round_keys_R, n: int, inverse: bool):
    """pi(x) (or pi^{-1}(x)) where pi orders [0, n) by the keyed hash v_i; distinct v_i, no ties."""
    x_I = jnp.asarray(x).astype(jnp.int32)
    v_N = jnp.arange(n, dtype=jnp.uint32)          # [..., n]: one row per element's key set
    for j in range(round_keys_R.shape[-1]):
        v_N = mix32(v_N ^ round_keys_R[..., j, None])
    if inverse:   # the rank of y: how many items hash below it
        v_y = jnp.take_along_axis(jnp.broadcast_to(v_N, x_I.shape + (n,)), x_I[..., None], axis=-1)
        return jnp.sum(v_N < v_y, axis=-1, dtype=jnp.int32)
    order_N = jnp.argsort(v_N, axis=-1).astype(jnp.int32)
    if order_N.ndim == 1:
        return order_N[x_I]
    return jnp.take_along_axis(order_N, x_I[..., None], axis=-1)[..., 0]


def _walk(x, round_keys_R, n: int, inverse: bool):
    if n <= SMALL_N:
        return _rank(x, round_keys_R, n, inverse)
    h = half_bits(n)
    x_U = jnp.asarray(x).astype(jnp.uint32)
    n_u = np.uint32(n)
    y_U = _rounds(x_U, round_keys_R, h, inverse)
    if (1 << (2 * h)) == n:
        return y_U.astype(jnp.int32)

    def body(y_U):
        return jnp.where(y_U >= n_u, _rounds(y_U, round_keys_R, h, inverse), y_U)

    y_U = lax.while_loop(lambda y_U: jnp.any(y_U >= n_u), body, y_U)
    return y_U.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="n")
def permute_with_round_keys(x, round_keys_R: jax.Array, n: int) -> jax.Array:
    """pi(x) for x in [0, n); `round_keys_R` has shape [R] or x.shape + [R] (one key set per element)."""
    return _walk(x, jnp.asarray(round_keys_R, jnp.uint32), n, inverse=False)


@functools.partial(jax.jit, static_argnames="n")
def unpermute_with_round_keys(y, round_keys_R: jax.Array, n: int) -> jax.Array:
    """pi^{-1}(y): the inverse of `permute_with_round_keys` with the same round keys."""
    return _walk(y, jnp.asarray(round_keys_R, jnp.uint32), n, inverse=True)


@functools.partial(jax.jit, static_argnames=("n", "num_rounds"))
def permute(x, key: jax.Array, n: int, num_rounds: int = NUM_ROUNDS) -> jax.Array:
    """pi_key(x): a keyed bijection of [0, n), applied elementwise to int array `x` (values < n)."""
    return permute_with_round_keys(x, round_keys(key, num_rounds), n)


@functools.partial(jax.jit, static_argnames=("n", "num_rounds"))
def unpermute(y, key: jax.Array, n: int, num_rounds: int = NUM_ROUNDS) -> jax.Array:
    """pi_key^{-1}(y), so unpermute(permute(x, key, n), key, n) == x."""
    return unpermute_with_round_keys(y, round_keys(key, num_rounds), n)


@functools.partial(jax.jit, static_argnames=("n", "num_rounds"))
def permutation(key: jax.Array, n: int, num_rounds: int = NUM_ROUNDS) -> jax.Array:
    """[n] int32: the whole order, perm_N[i] = pi_key(i)."""
    return permute(jnp.arange(n, dtype=jnp.int32), key, n, num_rounds)


@functools.partial(jax.jit, static_argnames="n")
def permutation_with_round_keys(round_keys_R: jax.Array, n: int) -> jax.Array:
    """[n] int32 whole order for explicit round keys."""
    return permute_with_round_keys(jnp.arange(n, dtype=jnp.int32), round_keys_R, n)


def seed_permutation(seed: int, n: int) -> jax.Array:
    """[n] int32: the fixed order of a sampler's `perm_seed` (independent of the data key)."""
    return permutation_with_round_keys(seed_round_keys(seed), n)
