"""Step schedules: values against plain-Python definitions, traceability, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsb_jax.data import schedules


def _doubling_ref(step, start, first_steps, every, maximum):
    if step < first_steps:
        return start
    return min(start * 2 ** ((step - first_steps) // every + 1), maximum)


def test_constant_and_as_schedule():
    assert int(schedules.constant(7)(123)) == 7
    assert float(schedules.as_schedule(0.5)(jnp.int32(9))) == 0.5
    fn = lambda s: s * 2  # noqa: E731
    assert schedules.as_schedule(fn) is fn
    assert schedules.constant(3) == schedules.constant(3)
    assert hash(schedules.doubling(32, 30, 20, 4096)) == hash(schedules.doubling(32, 30, 20, 4096))


def test_seed_004_task_curriculum():
    """32 tasks for 30 steps, then doubled every 20 steps keeping the old ones, capped at the pool."""
    sched = schedules.doubling(32, first_steps=30, every=20, maximum=2**14)
    steps = np.arange(400)
    got = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps, jnp.int32)))
    want = [_doubling_ref(s, 32, 30, 20, 2**14) for s in steps]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32
    assert [got[29], got[30], got[49], got[50], got[70]] == [32, 64, 64, 128, 256]
    assert int(sched(10**9)) == 2**14  # saturates, never wraps


@pytest.mark.parametrize("start", [1, 3, 32, 1000])
def test_doubling_is_exact_up_to_int32(start):
    """Every power-of-two multiple up to int32's largest value is exact (exp2 is not on XLA:CPU:
    exp2(15) = 32767.98), a cap equal to the pool is reached exactly, and past 2^31 it saturates."""
    steps = np.arange(64)
    want = [min(start * 2 ** (int(s) + 1), 2**31 - 1) for s in steps]
    for fn in (jax.jit(jax.vmap(schedules.doubling(start, 0, 1))), lambda s: [schedules.doubling(start, 0, 1)(i)
                                                                            for i in s]):
        np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(steps, jnp.int32)), np.int64), want)
    capped = jax.jit(jax.vmap(schedules.doubling(start, 0, 1, maximum=start * 2**20)))(jnp.asarray(steps, jnp.int32))
    np.testing.assert_array_equal(np.asarray(capped, np.int64), [min(w, start * 2**20) for w in want])
    floats = jax.jit(jax.vmap(schedules.doubling(float(start), 0, 1)))(jnp.asarray(steps, jnp.int32))
    np.testing.assert_array_equal(np.asarray(floats, np.float64)[:24], [start * 2.0 ** (s + 1) for s in range(24)])


def test_doubling_without_cap_and_float_start():
    sched = schedules.doubling(0.25, 0, 10)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 9, 10, 25)], [0.5, 0.5, 1.0, 2.0])


def test_piecewise_matches_definition():
    bounds, values = [10, 25, 40], [1, 2, 3, 4]
    sched = schedules.piecewise(bounds, values)
    steps = np.arange(60)
    got = np.asarray(jax.vmap(sched)(jnp.asarray(steps)))
    want = [values[sum(s >= b for b in bounds)] for s in steps]
    np.testing.assert_array_equal(got, want)
    assert float(schedules.piecewise([], [0.3])(5)) == pytest.approx(0.3)


def test_schedules_in_scan():
    sched = schedules.piecewise([3], [1.0, 2.0])

    def body(carry, step):
        return carry + sched(step), None

    total, _ = jax.lax.scan(body, jnp.float32(0), jnp.arange(6))
    assert float(total) == 3 * 1.0 + 3 * 2.0


def test_validation():
    with pytest.raises(ValueError, match="piecewise.values"):
        schedules.piecewise([1, 2], [0, 1])
    with pytest.raises(ValueError, match="piecewise.boundaries"):
        schedules.piecewise([5, 5], [0, 1, 2])
    with pytest.raises(ValueError, match="doubling.every"):
        schedules.doubling(1, 0, 0)
