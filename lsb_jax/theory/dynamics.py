"""GD and SAM on the MLSA model: whole trajectories as one compiled `lax.scan`.

    run = simulator(mlsa.population_loss, num_steps=20_000, record_every=20)
    out = run(params0, spec, lr, rho)          # jitted; jax.vmap it over seeds, rho, spectra
    out.features  # [R+1, D] m_i = M_ii at steps out.steps [R+1];  out.loss [R+1]

SAM (Foret et al.): p <- p - lr * grad L(p + rho * g / ||g||), g = grad L(p). The norm is taken
over all parameters (`norm="global"`, what SAM and `optax.contrib.sam` do) or separately for
each head's (v_h, k_h, q_h) (`norm="per_head"`, the per-feature picture of the reduced ODEs).
SAM with rho = 0 computes GD's update with two gradients; `method="gd"` uses one. The loss is any
`loss(params, data) -> scalar`: the closed-form population loss (data = a `Spectrum`) or a
weighted loss on a finite pool of sequences (data = the pool).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from lsb_jax.theory import mlsa

NORMS = ("global", "per_head")
METHODS = ("gd", "sam")


class Trajectory(NamedTuple):
    steps: jax.Array      # [R+1] recorded steps (0, record_every, ..., num_steps)
    features: jax.Array   # [R+1, D] m_i = M_ii
    loss: jax.Array       # [R+1] loss at the recorded parameters
    params: dict          # final parameters


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree)))


def _head_norms(grads) -> jax.Array:
    """||(dv_h, dk_h, dq_h)|| per head -> [H]."""
    return jnp.sqrt(grads["v"] ** 2 + jnp.sum(grads["k"] ** 2, -1) + jnp.sum(grads["q"] ** 2, -1))


def sam_perturbation(grads, rho, norm: str = "global", eps: float = 1e-12):
    """rho * g / ||g|| (global or per-head norm); zero where the gradient is zero."""
    if norm == "global":
        scale = rho / jnp.maximum(_global_norm(grads), eps)
        return jax.tree.map(lambda g: scale * g, grads)
    scale_H = rho / jnp.maximum(_head_norms(grads), eps)
    return {"v": scale_H * grads["v"], "k": scale_H[:, None] * grads["k"], "q": scale_H[:, None] * grads["q"]}


def make_step(loss: Callable, method: str = "gd", norm: str = "global") -> Callable:
    """step(params, data, lr, rho) -> params (one GD or SAM update)."""
    if method not in METHODS or norm not in NORMS:
        raise ValueError(f"method must be in {METHODS} and norm in {NORMS}, got {method!r}, {norm!r}")
    grad = jax.grad(loss)

    def step(params, data, lr, rho):
        g = grad(params, data)
        if method == "sam":
            eps = sam_perturbation(g, rho, norm)
            g = grad(jax.tree.map(jnp.add, params, eps), data)
        return jax.tree.map(lambda p, d: p - lr * d, params, g)

    return step


def simulator(loss: Callable, *, num_steps: int, record_every: int, method: str = "gd", norm: str = "global",
              features: Callable = mlsa.features) -> Callable:
    """A jitted run(params0, data, lr, rho) -> Trajectory of `num_steps` updates.

    Records `features(params)` and the loss every `record_every` steps (and at step 0): an
    outer `lax.scan` over records around an inner `fori_loop` of updates, so the program size
    does not grow with the step count. Pure: vmap it over seeds (params0), rho, lr or data.
    """
    if num_steps < 1 or record_every < 1 or num_steps % record_every:
        raise ValueError(f"num_steps ({num_steps}) must be a positive multiple of record_every ({record_every})")
    step = make_step(loss, method, norm)

    def run(params0, data, lr, rho):
        def record(params):
            return features(params), loss(params, data)

        def segment(params, _):
            params = jax.lax.fori_loop(0, record_every, lambda _, p: step(p, data, lr, rho), params)
            return params, record(params)

        params, (feats_RxD, loss_R) = jax.lax.scan(segment, params0, None, length=num_steps // record_every)
        f0, l0 = record(params0)
        steps_R = jnp.arange(0, num_steps + 1, record_every)
        return Trajectory(steps_R, jnp.concatenate([f0[None], feats_RxD]), jnp.concatenate([l0[None], loss_R]), params)

    return jax.jit(run)


def pool_loss(params, pool) -> jax.Array:
    """Weighted mean squared error on a finite pool {"c","xq","yq","weight"} (the data lever's
    duplication counts are the weights: full-batch GD on a duplicated pool)."""
    w_B = pool["weight"]
    return jnp.sum(w_B * mlsa.example_loss(params, pool)) / jnp.sum(w_B)
