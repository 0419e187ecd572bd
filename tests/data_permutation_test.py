"""Keyed Feistel bijections on [0, n): bijectivity, inverse, key dependence, uniformity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lsb_jax.data import permutation as perm_lib

SIZES = [1, 2, 3, 4, 5, 7, 17, 1000, 4097, 10**5]


def _perm_and_inverse(key, n):
    perm_N = perm_lib.permutation(key, n)
    return perm_N, perm_lib.unpermute(perm_N, key, n)


@pytest.mark.parametrize("n", SIZES)
def test_bijection_and_inverse(n):
    perm_N, back_N = jax.jit(_perm_and_inverse, static_argnums=1)(jax.random.key(n), n)
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


def test_raw_and_typed_keys_agree_and_jit_matches_eager():
    n = 333
    eager = perm_lib.permutation(jax.random.key(3), n)
    typed = jax.jit(lambda k: perm_lib.permutation(k, n))(jax.random.key(3))
    raw = jax.jit(lambda k: perm_lib.permutation(k, n))(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(typed, raw)
    np.testing.assert_array_equal(typed, eager)


@pytest.mark.parametrize("n", [5, 8])
def test_position_distribution_is_uniform(n):
    """Over 4000 keys, perm[i] is uniform on [0, n) for every i (chi-square per row, p > 1e-6)."""
    num_keys = 4000
    keys = jax.random.split(jax.random.key(7), num_keys)
    perms_KxN = np.asarray(jax.jit(jax.vmap(lambda k: perm_lib.permutation(k, n)))(keys))
    for i in range(n):
        counts = np.bincount(perms_KxN[:, i], minlength=n)
        assert stats.chisquare(counts).pvalue > 1e-6, (i, counts)
    # all n! orders should be reachable for tiny n: 4000 draws over 120 orders of n = 5
    if n == 5:
        assert len({tuple(p) for p in perms_KxN}) == 120


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
