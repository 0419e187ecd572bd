"""The toy regression (foundation check): an MLP ensemble on `tasks.regression`, tracked and plotted.

The machinery behind `synthetic/toy_regression.py`. `make_sampler` names a data lever
(uniform, subset of k, Zipf, epochs without replacement, doubling curriculum); `fit_toy` trains
seeds x learning rates of an MLP on the pool as ONE vmapped `train.fit` with any optimizer of
`lsb_jax.optim`, test / pool MSE evaluations, and every pool example's loss recorded at K steps
into a `tracking.TrajectoryStore`; `plot_loss_curves` and `toy_results` turn the run into the
figure and the headline (final test MSE against the numpy least-squares fit on the same pool,
censored steps to a multiple of it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import analysis, plots
from lsb_jax.data import Epochs, Subset, Uniform, Zipf, doubling
from lsb_jax.models.mlp import init_mlp, squared_error
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.tracking import LossTracker, TrajectoryStore, evenly_spaced_steps, pool_scorer
from lsb_jax.train import EvalHook, Members, ensemble_init, fit, init_state, make_sampled_step, split_ensemble

SAMPLERS = ("uniform", "subset", "zipf", "epochs", "curriculum")


def make_sampler(kind: str, n: int, *, subset_k: int, zipf_alpha: float, curriculum_first: int,
                 curriculum_every: int, perm_seed: int):
    """The data lever `kind` (one of `SAMPLERS`) over a pool of n: all of it, its first `subset_k`
    (after a `perm_seed` permutation), Zipf(`zipf_alpha`), epochs without replacement, or a subset
    of `subset_k` doubling after `curriculum_first` steps and then every `curriculum_every`."""
    if kind == "uniform":
        return Uniform(n)
    if kind == "subset":
        return Subset(n, subset_k, perm_seed=perm_seed)
    if kind == "zipf":
        return Zipf(n, zipf_alpha, perm_seed=perm_seed)
    if kind == "epochs":
        return Epochs(np.ones(n, np.int32), perm_seed=perm_seed)
    if kind == "curriculum":
        return Subset(n, doubling(subset_k, curriculum_first, curriculum_every, n), perm_seed=perm_seed)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got '{kind}'")


@dataclasses.dataclass
class ToyRun:
    """A finished toy run: the fit, its members, the trajectory store and its K steps."""

    result: object
    members: Members
    store: TrajectoryStore
    steps_K: Sequence[int]
    loss_fn: Callable


def fit_toy(ctx, members: Members, pool: dict, test: dict, sampler, *, sizes: Sequence[int], activation: str,
            optim: OptimConfig, batch_size: int, steps: int, track_points: int, eval_every: int, chunk_size: int,
            checkpoint_every: int, log_every: int, on_divergence: str = "raise") -> ToyRun:
    """Trains every member (its hparams override `optim`'s numeric fields, e.g. lr) on `sampler`
    batches of `pool`, one vmapped `train.fit` on `ctx`: test / pool MSE every `eval_every` steps
    and the pool's per-example losses at `track_points` evenly spaced steps into
    `ctx.dir / "trajectories.npz"`."""
    loss_fn = squared_error(activation)

    def sample_batch(key, step, pool):
        draw = sampler.sample(key, step, batch_size)
        return {"x": pool["x"][draw.index], "y": pool["y"][draw.index], "loss_weight": draw.weight}

    def optimizer(hp):
        return make_optimizer(optim, steps, **hp)

    def member_init(key, hp):
        return init_state(lambda k: init_mlp(k, sizes), optimizer(hp).tx, key)

    def member_step(state, hp, pool):
        step = make_sampled_step(loss_fn, optimizer(hp), lambda k, s: sample_batch(k, s, pool))
        return step(state)

    step, state, hparams = split_ensemble(member_step, members, ensemble_init(member_init, members))
    mse = jax.vmap(lambda p, data: jnp.mean(loss_fn(p, data)), in_axes=(0, None))
    evals = EvalHook(lambda s, test, pool: {"test_mse": mse(s.params, test), "pool_mse": mse(s.params, pool)},
                     every=eval_every, args=(test, pool))
    steps_K = evenly_spaced_steps(steps, track_points)
    store = TrajectoryStore(ctx.dir / "trajectories.npz", len(pool["y"]), steps_K, member_shape=(members.size,))
    tracker = LossTracker(jax.vmap(pool_scorer(loss_fn, 512), in_axes=(0, None)), store, args=(pool,))
    result = fit(step, state, steps, ctx=ctx, hooks=[evals, tracker], step_args=(hparams, pool), chunk_size=chunk_size,
                 checkpoint_every=checkpoint_every, log_every=log_every, desc="toy_regression",
                 on_divergence=on_divergence)
    return ToyRun(result, members, store, steps_K, loss_fn)


def final_test_mse(run: ToyRun, test: dict) -> np.ndarray:
    """Each member's test MSE at its final parameters -> [M]."""
    mse = jax.vmap(lambda p, data: jnp.mean(run.loss_fn(p, data)), in_axes=(0, None))
    return np.asarray(jax.device_get(mse(run.result.state.params, test)))


def plot_loss_curves(run: ToyRun, ols: float, noise_floor: float, title: str):
    """Test MSE per hyperparameter group and the train batch loss (mean ± std) against the
    least-squares and noise-floor lines; member 0's pool-loss trajectories as a heatmap."""
    hist, members = run.result.history, run.members
    fig, (ax0, ax1) = plots.figure(2)
    labels = [", ".join(f"{k}={v}" for k, v in lab.items() if k != "seed") for lab in members.labels]
    for group in dict.fromkeys(labels):
        cols = [i for i, lab in enumerate(labels) if lab == group]
        plots.band(ax0, hist["test_mse_step"], hist["test_mse"][:, cols], label=f"test {group}".strip(), log=True)
    plots.band(ax0, hist["loss_step"], hist["loss"], label="train batch", log=True)
    ax0.axhline(ols, color="k", ls="--", lw=1, label="least squares (numpy)")
    ax0.axhline(noise_floor, color="gray", ls=":", lw=1, label="noise floor")
    ax0.set_xlabel("step")
    ax0.set_ylabel("MSE")
    ax0.set_title(title)
    ax0.legend(fontsize=7)
    plots.trajectory_heatmap(ax1, run.store.losses[0], run.steps_K, title="pool losses, member 0")
    return fig


def toy_results(run: ToyRun, final_M: np.ndarray, ols: float, *, threshold_factor: float, noise_floor: float,
                describe: str, steps: int) -> dict:
    """Headline (final test MSE mean ± std, least squares, censored steps to threshold_factor x
    least squares, diverged members), summary and the per-member table."""
    hist, members = run.result.history, run.members
    reach_M = analysis.steps_to_threshold(hist["test_mse_step"], hist["test_mse"], threshold_factor * ols)
    mean, std = analysis.mean_std(final_M)
    # seeds that never reach the threshold are censored at the last evaluation, not dropped
    reach = analysis.censored_summary(reach_M, float(np.asarray(hist["test_mse_step"])[-1]))
    return {
        "headline": {
            "test_mse_final_mean": mean, "test_mse_final_std": std, "least_squares_test_mse": ols,
            "noise_floor": noise_floor, "steps_to_threshold_rmean": reach["restricted_mean"],
            "steps_to_threshold_rstd": reach["restricted_std"], "steps_to_threshold_reached": reach["reached"],
            "threshold": threshold_factor * ols, "members": members.size,
            "diverged_members": int(np.sum(~np.isfinite(final_M))),  # excluded from the means above
        },
        "summary": (f"{members.size} members ({describe}) reach test MSE "
                    f"{mean:.4g} +- {std:.3g} after {steps} steps; "
                    f"least squares on the same pool gives {ols:.4g}."),
        "members": [dict(lab, test_mse=float(v), steps_to_threshold=float(r))
                    for lab, v, r in zip(members.labels, final_M, reach_M)],
        "trajectory_steps": list(run.steps_K),
    }
