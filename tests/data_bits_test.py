"""Counter-based draws (lsb_jax.data.bits) against JAX's own jax.random.bits and threefry primitive."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p

from lsb_jax.data import stream_bits, stream_row
from lsb_jax.data.bits import _flat_index, threefry2x32

KEYS = [jax.random.PRNGKey(s) for s in (0, 1, 12345, 2**31 - 1)]


@pytest.mark.parametrize("key", KEYS)
def test_stream_row_is_a_row_of_one_long_draw(key):
    ref = np.asarray(jax.random.bits(key, (37, 20), jnp.uint32))
    rows = jax.jit(jax.vmap(lambda r: stream_row(key, r, 20)))(jnp.arange(37))
    np.testing.assert_array_equal(np.asarray(rows), ref)


@pytest.mark.parametrize("key", KEYS)
def test_stream_bits_is_an_element_of_one_long_draw(key):
    ref = np.asarray(jax.random.bits(key, (1000,), jnp.uint32))
    idx = np.array([0, 1, 2, 517, 998, 999])
    np.testing.assert_array_equal(np.asarray(jax.jit(stream_bits)(key, jnp.asarray(idx, jnp.int32))), ref[idx])
    # vmapped over member keys: each member's numbers are its own key's
    got = jax.vmap(lambda k: stream_bits(k, jnp.arange(5)))(jnp.stack(KEYS))
    for k, row in zip(KEYS, np.asarray(got)):
        np.testing.assert_array_equal(row, np.asarray(jax.random.bits(k, (5,), jnp.uint32)))
    typed = jax.random.wrap_key_data(key)
    np.testing.assert_array_equal(np.asarray(stream_bits(typed, jnp.arange(10))), ref[:10])


def test_threefry_matches_jax_primitive_on_high_counters():
    """Counters whose high word is set (positions past 2^32) against JAX's threefry2x32 primitive."""
    rng = np.random.default_rng(0)
    hi = jnp.asarray(rng.integers(0, 2**32, 64, dtype=np.uint64).astype(np.uint32))
    lo = jnp.asarray(rng.integers(0, 2**32, 64, dtype=np.uint64).astype(np.uint32))
    for key in KEYS:
        k1, k2 = (jnp.broadcast_to(key[i], hi.shape) for i in range(2))
        ref = threefry2x32_p.bind(k1, k2, hi, lo)
        got = threefry2x32(key, hi, lo)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("row,width", [(0, 1), (5, 20), (2**31 - 1, 2**31 - 1), (123456789, 40000),
                                       (70000, 70000), (65535, 65537), (2**20 + 3, 4096)])
def test_flat_index_is_exact_64_bit(row, width):
    col = np.unique(np.array([0, 1, width // 2, width - 2, width - 1]).clip(0, width - 1)).astype(np.int64)
    hi, lo = _flat_index(jnp.int32(row), width, jnp.asarray(col, jnp.uint32))
    got = np.asarray(hi).astype(np.uint64) * np.uint64(2**32) + np.asarray(lo).astype(np.uint64)
    want = [row * width + int(c) for c in col]          # Python ints: no wrap
    assert [int(g) for g in got] == want


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="width"):
        stream_row(KEYS[0], 0, 0)
    with pytest.raises(ValueError, match="raw threefry key"):
        stream_bits(jnp.zeros((3,), jnp.uint32), jnp.arange(2))
    with pytest.raises(ValueError, match="integers"):
        stream_bits(KEYS[0], jnp.arange(2.0))
