"""Keyed Feistel bijections on [0, n): bijectivity, inverse, key dependence, uniformity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lsb_jax.data import permutation as perm_lib

SIZES = [1, 2, 3, 4, 5, 7, 17, 64, 65, 1000, 4097, 10**5]


def _perm_and_inverse(key, n):
    perm_N = perm_lib.permutation(key, n)
    return perm_N, perm_lib.unpermute(perm_N, key, n)


@pytest.mark.parametrize("n", SIZES)
def test_bijection_and_inverse(n):
    perm_N, back_N = _perm_and_inverse(jax.random.key(n), n)
    assert perm_N.dtype == np.int32
    np.testing.assert_array_equal(np.sort(perm_N), np.arange(n))
    np.testing.assert_array_equal(back_N, np.arange(n))


def test_half_bits_domain_is_smallest_even_power_of_two():
    for n in [1, 2, 4, 5, 16, 17, 64, 65, 2**20, 2**31 - 1]:
        h = perm_lib.half_bits(n)
        assert 2 ** (2 * h) >= n and (h == 1 or 2 ** (2 * (h - 1)) < n)
    with pytest.raises(ValueError, match="permutation.n"):
        perm_lib.half_bits(0)


def test_different_keys_give_different_orders():
    n = 1000
    keys = jax.random.split(jax.random.key(1), 4)
    orders = np.asarray(jax.jit(jax.vmap(lambda k: perm_lib.permutation(k, n)))(keys))
    for i in range(4):
        assert np.mean(orders[i] == np.arange(n)) < 0.02  # not close to the identity
        for j in range(i):
            assert np.mean(orders[i] == orders[j]) < 0.02  # ~1/n agree by chance


def test_raw_and_typed_keys_agree_and_nested_jit_matches():
    n = 333
    typed = perm_lib.permutation(jax.random.key(3), n)
    raw = perm_lib.permutation(jax.random.PRNGKey(3), n)
    inside = jax.jit(lambda k: perm_lib.permute(jnp.arange(n), k, n) + 0)(jax.random.key(3))
    np.testing.assert_array_equal(typed, raw)
    np.testing.assert_array_equal(typed, inside)


@pytest.mark.parametrize("source, n", [("keys", 8), ("keys", 5), ("tweaks", 5)])
def test_position_distribution_is_uniform(source, n):
    """Over 4000 PRNG keys (or 4000 epoch tweaks of one key), perm[i] is uniform on [0, n).

    Chi-square per position i, rejecting only at p < 1e-6; for n = 5 every one of the 120 orders
    must also occur (each has probability 1/120 per draw, so all appear with overwhelming odds).
    """
    num = 4000
    if source == "keys":
        round_keys_KxR = jax.vmap(perm_lib.round_keys)(jax.random.split(jax.random.key(7), num))
    else:
        round_keys_KxR = perm_lib.tweak_round_keys(perm_lib.round_keys(jax.random.key(7)), jnp.arange(num))
    perms_KxN = np.asarray(jax.jit(jax.vmap(lambda rk: perm_lib.permutation_with_round_keys(rk, n)))(round_keys_KxR))
    for i in range(n):
        counts = np.bincount(perms_KxN[:, i], minlength=n)
        assert stats.chisquare(counts).pvalue > 1e-6, (i, counts)
    if n == 5:
        assert len({tuple(p) for p in perms_KxN}) == 120


def test_seed_round_keys_are_deterministic_and_seed_dependent():
    keys = [perm_lib.seed_round_keys(s) for s in (0, 1, 2, -1)]
    assert all(k.dtype == np.uint32 and k.shape == (perm_lib.NUM_ROUNDS,) for k in keys)
    np.testing.assert_array_equal(keys[0], perm_lib.seed_round_keys(0))
    assert len({tuple(k) for k in keys}) == 4
    order_N = np.asarray(perm_lib.seed_permutation(3, 500))
    np.testing.assert_array_equal(np.sort(order_N), np.arange(500))
    assert not np.array_equal(order_N, np.asarray(perm_lib.seed_permutation(4, 500)))


def test_per_element_round_keys_match_per_key_calls():
    n = 50
    keys = jax.random.split(jax.random.key(0), 6)
    x_B = jnp.array([0, 1, 2, 47, 48, 49], jnp.int32)
    round_keys_BxR = jax.vmap(perm_lib.round_keys)(keys)
    got_B = jax.jit(perm_lib.permute_with_round_keys, static_argnums=2)(x_B, round_keys_BxR, n)
    want_B = jax.jit(jax.vmap(lambda x, k: perm_lib.permute(x, k, n)))(x_B, keys)
    np.testing.assert_array_equal(got_B, want_B)
    back_B = jax.jit(perm_lib.unpermute_with_round_keys, static_argnums=2)(got_B, round_keys_BxR, n)
    np.testing.assert_array_equal(back_B, x_B)


@pytest.mark.parametrize("source", ["keys", "tweaks"])
def test_small_domains_give_every_order_equally_often(source):
    """For n <= 6 all n! orders are equally likely, and for n = 8, 12 the joint law of (pi(0), pi(1))
    is uniform on the n(n-1) ordered pairs (chi-square over 20000 key sets, rejecting at p < 1e-6).

    A Feistel network with 1- or 2-bit halves fails this (e.g. p ~ 1e-100 for the orders of n = 5);
    small domains rank by a keyed hash instead.
    """
    import itertools
    import math

    num = 20000
    if source == "keys":
        round_keys_KxR = jax.vmap(perm_lib.round_keys)(jax.random.split(jax.random.key(11), num))
    else:
        round_keys_KxR = perm_lib.tweak_round_keys(perm_lib.round_keys(jax.random.key(11)), jnp.arange(num))
    for n in (2, 3, 4, 5, 6, 8, 12):
        perms_KxN = np.asarray(jax.jit(jax.vmap(lambda rk: perm_lib.permutation_with_round_keys(rk, n)))(
            round_keys_KxR))
        if n <= 6:
            index = {p: i for i, p in enumerate(itertools.permutations(range(n)))}
            counts = np.bincount([index[tuple(p)] for p in perms_KxN], minlength=math.factorial(n))
        else:
            counts = np.bincount(perms_KxN[:, 0] * n + perms_KxN[:, 1], minlength=n * n)
            counts = counts[[a * n + b for a in range(n) for b in range(n) if a != b]]
        assert stats.chisquare(counts).pvalue > 1e-6, (n, counts)
        back_KxN = np.asarray(jax.vmap(lambda p, rk: perm_lib.unpermute_with_round_keys(p, rk, n))(
            jnp.asarray(perms_KxN[:50]), round_keys_KxR[:50]))
        np.testing.assert_array_equal(back_KxN, np.broadcast_to(np.arange(n), (50, n)))
