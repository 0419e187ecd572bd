"""The train state: everything a run needs to continue bit-exactly from a checkpoint."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

# PRNG streams. The data stream's key is data_key(rng) = fold_in(rng, STREAM_DATA), constant over a
# run: samplers fold in the step (or the epoch) themselves, so per-epoch orders stay fixed within an
# epoch. Other per-step randomness uses step_key(rng, STREAM_STEP, step). Every draw is a function of
# (seed, step) alone, so a resumed run draws the same numbers.
STREAM_DATA = 0
STREAM_STEP = 1
STREAM_INIT = 2

# XLA:CPU spends seconds optimizing a threefry-heavy program that then runs in milliseconds (a vmapped
# model init, a sweep's data draw); at backend optimization level 0 it compiles several times faster.
_RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_once(fn: Callable, **jit_kwargs) -> Callable:
    """`jax.jit` for a program that runs once per run (initialization, data drawing), compiled for
    compile time rather than run time. Deterministic: the same inputs give the same outputs on every
    call, so a resumed run re-draws what the interrupted one drew.
    """
    return jax.jit(fn, compiler_options=_RUN_ONCE_OPTIONS, **jit_kwargs)


@struct.dataclass
class TrainState:
    """step: number of updates applied; rng: the run's base key (raw uint32[2], constant).

    Data-iterator state is (rng, step) for samplers that are pure functions of (key, step);
    host iterators store theirs in the checkpoint metadata (see `fit`).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def step_key(rng: jax.Array, stream: int, step: jax.Array) -> jax.Array:
    """The key of one stream at one step."""
    return jax.random.fold_in(jax.random.fold_in(rng, stream), step)


def data_key(rng: jax.Array) -> jax.Array:
    """The run's data-stream key (constant): what samplers and host loaders are given."""
    return jax.random.fold_in(rng, STREAM_DATA)


def init_state(init_params: Callable[[jax.Array], Any], tx, key: jax.Array) -> TrainState:
    """Initial state: params from fold_in(key, STREAM_INIT), the optimizer's state, step 0."""
    params = init_params(jax.random.fold_in(key, STREAM_INIT))
    # a copy: fit() donates the state, which must not delete the caller's key
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jnp.array(key, copy=True))


def seed_keys(seed: int, num: int) -> jax.Array:
    """[num, 2] independent raw keys for vmapped members (member i: fold_in(PRNGKey(seed), i))."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num))
