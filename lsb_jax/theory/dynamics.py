"""GD and SAM on the MLSA model: whole trajectories as one compiled `lax.scan` of the train core's step.

    run = simulator(mlsa.population_loss, num_steps=20_000, record_every=20)
    out = run(params0, spec, lr, rho)          # jitted; jax.vmap it over seeds, rho, spectra
    out.features  # [R+1, D] m_i = M_ii at steps out.steps [R+1];  out.loss [R+1]

Every update is `lsb_jax.train.make_train_step` with `lsb_jax.optim`'s SGD (method "gd") or its
SAM (method "sam", `OptimConfig(name="sgd", sam_rho=rho, sam_norm=norm)`), lr and rho traced:
SAM (Foret et al.): p <- p - lr * grad L(p + rho * g / ||g||), g = grad L(p). The norm is taken
over all parameters (`norm="global"`, what SAM and `optax.contrib.sam` do) or separately for
each head's (v_h, k_h, q_h) (`norm="per_head"`, the per-feature picture of the reduced ODEs).
SAM with rho = 0 computes GD's update with two gradients; `method="gd"` uses one. The loss is any
`loss(params, data) -> scalar`: the closed-form population loss (data = a `Spectrum`) or a
weighted loss on a finite pool of sequences (data = the pool); the train step sees it as a batch
of one loss.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.optim.transforms import SAM_NORMS
from lsb_jax.theory import mlsa
from lsb_jax.train.loop import cpu_compiler_options
from lsb_jax.train.state import TrainState
from lsb_jax.train.step import make_train_step

NORMS = SAM_NORMS
METHODS = ("gd", "sam")


class Trajectory(NamedTuple):
    steps: jax.Array      # [R+1] recorded steps (0, record_every, ..., num_steps)
    features: jax.Array   # [R+1, D] m_i = M_ii
    loss: jax.Array       # [R+1] loss at the recorded parameters
    params: dict          # final parameters


def _updater(loss: Callable, method: str, norm: str) -> Callable:
    """(init(params, lr, rho) -> TrainState, update(state, data, lr, rho) -> TrainState)."""
    if method not in METHODS or norm not in NORMS:
        raise ValueError(f"method must be in {METHODS} and norm in {NORMS}, got {method!r}, {norm!r}")
    sam = method == "sam"
    cfg = OptimConfig(name="sgd", lr=1.0, sam_rho=1.0 if sam else 0.0, sam_norm=norm)

    def optimizer(lr, rho):
        return make_optimizer(cfg, 1, lr=lr, **({"sam_rho": rho} if sam else {}))

    def init(params, lr, rho):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer(lr, rho).tx.init(params),
                          rng=jnp.zeros((2,), jnp.uint32))

    def update(state, data, lr, rho):
        step = make_train_step(lambda p, d: loss(p, d)[None], optimizer(lr, rho))
        return step(state, data)[0]

    return init, update


def make_step(loss: Callable, method: str = "gd", norm: str = "global") -> Callable:
    """step(params, data, lr, rho) -> params: one GD or SAM update (SGD's and SAM's optimizer
    states are empty, so a fresh state per call is exact)."""
    init, update = _updater(loss, method, norm)
    return lambda params, data, lr, rho: update(init(params, lr, rho), data, lr, rho).params


def simulator(loss: Callable, *, num_steps: int, record_every: int, method: str = "gd", norm: str = "global",
              features: Callable = mlsa.features) -> Callable:
    """A jitted run(params0, data, lr, rho) -> Trajectory of `num_steps` updates.

    Records `features(params)` and the loss every `record_every` steps (and at step 0): an
    outer `lax.scan` over records around an inner `fori_loop` of updates, so the program size
    does not grow with the step count. Pure: vmap it over seeds (params0), rho, lr or data (and
    jit a vmapped grid with `compiler_options=grid_compiler_options()`, as `theory.sweeps` does).
    """
    if num_steps < 1 or record_every < 1 or num_steps % record_every:
        raise ValueError(f"num_steps ({num_steps}) must be a positive multiple of record_every ({record_every})")
    init, update = _updater(loss, method, norm)

    def run(params0, data, lr, rho):
        def record(params):
            return features(params), loss(params, data)

        def segment(state, _):
            state = jax.lax.fori_loop(0, record_every, lambda _, s: update(s, data, lr, rho), state)
            return state, record(state.params)

        state, (feats_RxD, loss_R) = jax.lax.scan(segment, init(params0, lr, rho), None,
                                                  length=num_steps // record_every)
        f0, l0 = record(params0)
        steps_R = jnp.arange(0, num_steps + 1, record_every)
        return Trajectory(steps_R, jnp.concatenate([f0[None], feats_RxD]), jnp.concatenate([l0[None], loss_R]),
                          state.params)

    return jax.jit(run)   # no compiler options here: JAX refuses them on a jit nested in another


def grid_compiler_options() -> dict:
    """XLA options for the outermost jit of (a vmapped grid of) simulator runs: a compiled loop's,
    and dots-only YNN fusions (`train.cpu_compiler_options`: XLA:CPU's YNN reductions are several
    times slower on the D = 4 model's tiny per-member sums once a grid has a few dozen members)."""
    return cpu_compiler_options("loop", "tiny_reductions")


def pool_loss(params, pool) -> jax.Array:
    """Weighted mean squared error on a finite pool {"c","xq","yq","weight"} (the data lever's
    duplication counts are the weights: full-batch GD on a duplicated pool)."""
    w_B = pool["weight"]
    return jnp.sum(w_B * mlsa.example_loss(params, pool)) / jnp.sum(w_B)


def seconds_per_step(method: str, spec: mlsa.Spectrum, params0, lr: float, rho: float, steps: int = 2000) -> float:
    """Wall-clock seconds per update of a compiled population-loss run (`simulator`, one record):
    compiled and run once, then timed on a second run. A measurement, not a pure function."""
    run = simulator(mlsa.population_loss, num_steps=steps, record_every=steps, method=method)
    jax.block_until_ready(run(params0, spec, lr, rho))
    t = time.perf_counter()
    jax.block_until_ready(run(params0, spec, lr, rho))
    return (time.perf_counter() - t) / steps
