"""Grids of MLSA runs (spectra x rho x seeds) in one vmapped program, and their learning times.

    grid = sweep(specs, rhos=(0.0, 0.02, 0.04), seeds=4, heads=4, init=Init("random", 0.05),
                 lr=0.02, num_steps=20_000, record_every=20, method="sam", norm="global")
    grid.times       # [S, P, n, D] learning times (steps; NaN = not learned)
    grid.entropy     # [S, P, n]

Every member of the grid shares one compiled program (`jax.vmap` of `dynamics.simulator`),
so a 64-member grid costs about one long run on a CPU.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.theory import dynamics, learning_times, mlsa
from lsb_jax.train.guard import trajectory_divergence


class Grid(NamedTuple):
    steps: np.ndarray      # [R+1]
    features: np.ndarray   # [S, P, n, R+1, D]  m_i(t)
    loss: np.ndarray       # [S, P, n, R+1]
    targets: np.ndarray    # [S, D] m*_i
    times: np.ndarray      # [S, P, n, D]
    entropy: np.ndarray    # [S, P, n]
    diverged: np.ndarray   # [S, P, n] bool (a recorded loss diverged: `train.guard.trajectory_divergence`)
    params: dict           # final parameters, leaves [S, P, n, ...]


def stack(specs: Sequence[mlsa.Spectrum]) -> mlsa.Spectrum:
    """A list of same-D spectra -> one Spectrum with a leading [S] axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *specs)


def init_members(seeds: int, heads: int, dim: int, init: mlsa.Init, seed: int = 0) -> dict:
    """[n] initial parameter sets (seed i uses PRNGKey(seed) folded with i, shared across the grid)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(seeds))
    return jax.vmap(lambda k: mlsa.init_params(k, heads, dim, init))(keys)


def sweep(specs: Sequence[mlsa.Spectrum], *, rhos: Sequence[float], seeds: int, heads: int, init: mlsa.Init,
          lr: float, num_steps: int, record_every: int, method: str = "sam", norm: str = "global",
          fraction: float = 0.5, seed: int = 0) -> Grid:
    """Runs every (spectrum, rho, seed) from the same per-seed initializations; see the module doc."""
    stacked = stack(specs)
    dim = stacked.lam.shape[-1]
    params0 = init_members(seeds, heads, dim, init, seed)
    run = dynamics.simulator(mlsa.population_loss, num_steps=num_steps, record_every=record_every,
                             method=method, norm=norm)
    over_seeds = jax.vmap(run, in_axes=(0, None, None, None))
    over_rho = jax.vmap(over_seeds, in_axes=(None, None, None, 0))
    over_spec = jax.jit(jax.vmap(over_rho, in_axes=(None, 0, None, None)))
    out = over_spec(params0, stacked, jnp.float32(lr), jnp.asarray(rhos, jnp.float32))
    feats = np.asarray(out.features, np.float64)
    loss = np.asarray(out.loss, np.float64)
    targets = np.asarray(jax.vmap(mlsa.optimal_features)(stacked), np.float64)
    times = learning_times.crossing_times(np.asarray(out.steps[0, 0, 0]), feats, targets[:, None, None, :], fraction)
    diverged = trajectory_divergence(loss)   # NaN/inf, or a loss 1000x its start (train.DivergenceGuard)
    times[diverged] = np.nan
    return Grid(np.asarray(out.steps[0, 0, 0]), feats, loss, targets, times, learning_times.entropy(times), diverged,
                out.params)
