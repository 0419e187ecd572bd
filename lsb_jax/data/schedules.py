"""Step schedules: callables `step -> value` that stay traceable in `step`.

A schedule is any callable mapping a (possibly traced int32) step to a jnp scalar, or a plain
number meaning "constant". The objects below are frozen dataclasses, so a sampler holding one
is hashable (and compares by value) whenever the schedule's numbers are Python numbers.

    constant(v)(s)                      = v
    piecewise(b, v)(s)                  = v[i]  for b[i-1] <= s < b[i]   (b[-1] = -inf, b[n] = +inf)
    doubling(k0, t0, T, kmax)(s)        = k0                                  for s < t0
                                        = min(k0 * 2^(floor((s - t0) / T) + 1), kmax)  for s >= t0

`doubling(32, 30, 20, N)` is seed 004's task curriculum: 32 tasks for 30 steps, then twice as
many every 20 steps (steps 30..49 -> 64, 50..69 -> 128, ...), capped at N.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np

Schedule = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Constant:
    """`step -> value` for every step. `value` may be a Python number or a (traced) array."""

    value: Any

    def __call__(self, step):
        del step
        return jnp.asarray(self.value)


@dataclasses.dataclass(frozen=True)
class Piecewise:
    """`values[i]` for `boundaries[i-1] <= step < boundaries[i]`; len(values) = len(boundaries) + 1."""

    boundaries: tuple[int, ...]
    values: tuple[Any, ...]

    def __post_init__(self):
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"piecewise.values: need len(boundaries) + 1 = {len(self.boundaries) + 1} values, "
                f"got {len(self.values)}"
            )
        if any(b1 <= b0 for b0, b1 in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"piecewise.boundaries: must be strictly increasing, got {self.boundaries}")

    def __call__(self, step):
        values = jnp.stack([jnp.asarray(v) for v in self.values])
        if not self.boundaries:
            return values[0]
        boundaries = jnp.asarray(self.boundaries, jnp.int32)
        segment = jnp.searchsorted(boundaries, jnp.asarray(step, jnp.int32), side="right")
        return values[segment]


@dataclasses.dataclass(frozen=True)
class Doubling:
    """`start` for `first_steps` steps, then doubled every `every` steps, capped at `maximum`."""

    start: Any
    first_steps: int
    every: int
    maximum: Any = None

    def __post_init__(self):
        if int(self.every) < 1:
            raise ValueError(f"doubling.every: must be >= 1, got {self.every}")
        if int(self.first_steps) < 0:
            raise ValueError(f"doubling.first_steps: must be >= 0, got {self.first_steps}")

    def __call__(self, step):
        step = jnp.asarray(step, jnp.int32)
        doublings = jnp.where(step < self.first_steps, 0, (step - self.first_steps) // self.every + 1)
        # ldexp scales by 2^n exactly (float32 holds start * 2^n exactly for start < 2^24) and
        # saturates to inf, never wraps; exp2 is not exact on XLA:CPU (exp2(15) = 32767.98...).
        value = jnp.ldexp(jnp.asarray(self.start, jnp.float32), doublings)
        is_int = isinstance(self.start, (int, np.integer)) and (
            self.maximum is None or isinstance(self.maximum, (int, np.integer))
        )
        if is_int:   # an exact int: saturate at int32 max before the cast, then cap in integers
            big = np.float32(2**31)
            value = jnp.where(value >= big, np.iinfo(np.int32).max, jnp.minimum(value, big).astype(jnp.int32))
            return value if self.maximum is None else jnp.minimum(value, jnp.asarray(self.maximum, jnp.int32))
        if self.maximum is not None:
            value = jnp.minimum(value, jnp.asarray(self.maximum, jnp.float32))
        return value


def constant(value) -> Constant:
    return Constant(value)


def piecewise(boundaries: Sequence[int], values: Sequence[Any]) -> Piecewise:
    return Piecewise(tuple(int(b) for b in boundaries), tuple(values))


def doubling(start, first_steps: int, every: int, maximum=None) -> Doubling:
    return Doubling(start, int(first_steps), int(every), maximum)


def as_schedule(x) -> Schedule:
    """A callable is returned as is; anything else becomes `constant(x)`."""
    return x if callable(x) else Constant(x)


def concrete_value(x):
    """`x` as a numpy array if it is a concrete number/array (or a `Constant` of one), else None.

    Used for construction-time validation: traced values and general schedules are not checked.
    """
    if isinstance(x, Constant):
        x = x.value
    if callable(x):
        return None
    try:
        return np.asarray(x)
    except Exception:  # tracers raise TracerArrayConversionError / ConcretizationTypeError
        return None
