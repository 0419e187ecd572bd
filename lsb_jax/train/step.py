"""The pure train step shared by every part of the project.

A task provides a per-example loss `loss_fn(params, batch) -> [B]` (losses, not their mean:
the per-example values feed tracking, loss weights and PCGrad). The step reduces them as

    L = sum_b w_b * l_b / B          (w_b = batch["loss_weight"] if present, else 1)

i.e. loss weights are relative to 1 and the mean over the batch stays unbiased for mixture
loss weights. The optimizer bundle says which gradients it consumes:
  * grad_mode "mean":        dL/dparams;
  * grad_mode "per_example": d(w_b l_b)/dparams for every b (leading axis [B]), e.g. PCGrad.
The optimizer is always called as `tx.update(grads, opt_state, params, grad_fn=grad_fn)`, so
SAM (optax.contrib.sam, opaque mode) can evaluate the gradient at the adversarial point.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from lsb_jax.train.state import STREAM_STEP, TrainState, data_key, step_key

Batch = Any
LossFn = Callable[[Any, Batch], jax.Array]  # (params, batch) -> per-example losses [B]

LOSS_WEIGHT = "loss_weight"


def reduce_losses(loss_B: jax.Array, batch: Batch) -> jax.Array:
    weight_B = batch.get(LOSS_WEIGHT) if isinstance(batch, dict) else None
    if weight_B is None:
        return jnp.mean(loss_B)
    return jnp.sum(weight_B * loss_B) / loss_B.shape[0]


def _per_example_grads(loss_fn: LossFn, params, batch: Batch, rng=None):
    """(Gradients of w_b * l_b for each example b: a pytree with leading axis [B], losses l_b [B]).

    Each example is its own batch of one; with `rng` (step_rng) example b calls
    `loss_fn(params, example, fold_in(rng, b))`, its own noise in its loss and its gradient."""
    def single(p, example, b):
        ex = jax.tree.map(lambda x: x[None], example)
        loss_1 = loss_fn(p, ex) if rng is None else loss_fn(p, ex, jax.random.fold_in(rng, b))
        weight = ex.get(LOSS_WEIGHT) if isinstance(ex, dict) else None
        return jnp.sum(loss_1 if weight is None else weight * loss_1), loss_1[0]

    size = jax.tree.leaves(batch)[0].shape[0]
    return jax.vmap(jax.grad(single, has_aux=True), in_axes=(None, 0, 0))(params, batch, jnp.arange(size))


def make_train_step(loss_fn: LossFn, optimizer, grad_norm: bool = False,
                    step_rng: bool = False) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """train_step(state, batch) -> (state, metrics) with metrics {loss[, grad_norm]}.

    `optimizer` is a `lsb_jax.optim.Optimizer` (tx + grad_mode). Pure; jit/scan/vmap it.
    grad_norm=True also reports the global norm of the mean gradient; on tiny CPU models it
    costs more than half a step (one reduction per leaf), so it is off by default.
    step_rng=True calls `loss_fn(params, batch, rng)` with rng = step_key(state.rng, STEP, step)
    (dropout, noise): a function of (seed, step), so it resumes exactly; SAM's second gradient
    sees the same rng. Per-example gradients (PCGrad) call each example alone (with
    fold_in(rng, b): one batch's draw of shape [B] cannot be split into the examples' own draws),
    and the reported loss is of those same per-example forward passes (no second, full-batch one).
    """
    tx = optimizer.tx
    per_example = optimizer.grad_mode == "per_example"

    def train_step(state: TrainState, batch: Batch):
        rng = step_key(state.rng, STREAM_STEP, state.step) if step_rng else None
        lf = (lambda p, b: loss_fn(p, b, rng)) if step_rng else loss_fn  # noqa: E731

        def mean_loss(params):
            loss_B = lf(params, batch)
            return reduce_losses(loss_B, batch), loss_B

        def grads_at(params):
            if per_example:
                return _per_example_grads(loss_fn, params, batch, rng)[0]
            return jax.grad(lambda p: mean_loss(p)[0])(params)

        if per_example:   # the loss is of the per-example forward passes the gradients come from
            grads, loss_B = _per_example_grads(loss_fn, state.params, batch, rng)
            loss = reduce_losses(loss_B, batch)
            mean_grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
        else:
            (loss, _), grads = jax.value_and_grad(mean_loss, has_aux=True)(state.params)
            mean_grads = grads
        updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=lambda p, _: grads_at(p))
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss}
        if grad_norm:
            metrics["grad_norm"] = optax.tree.norm(mean_grads)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_sampled_step(loss_fn: LossFn, optimizer, sample_batch: Callable[[jax.Array, jax.Array], Batch],
                      grad_norm: bool = False, step_rng: bool = False):
    """step(state) -> (state, metrics) drawing its batch inside the step.

    sample_batch(key, step) must be pure. `key` is the run's data-stream key, the SAME at every
    step (`data_key(state.rng)`): pass it to a `lsb_jax.data` sampler, which folds in the step
    (or epoch) itself, or use `jax.random.fold_in(key, step)` for fresh per-step draws. The data
    stream is therefore a function of (rng, step) and resumes exactly.
    """
    train_step = make_train_step(loss_fn, optimizer, grad_norm, step_rng)

    def step(state: TrainState):
        batch = sample_batch(data_key(state.rng), state.step)
        return train_step(state, batch)

    return step
