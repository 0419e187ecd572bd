"""Toy: an MLP learns a linear teacher with a decaying input spectrum (foundation check).

Reproduces: no paper figure. It proves the machinery every reproduction uses: a vmapped
ensemble of seeds x learning rates trained by one compiled `lax.scan` program, a data-lever
sampler (uniform, subset of k, Zipf, epochs without replacement, doubling curriculum), any
optimizer of `lsb_jax.optim`, per-example loss trajectories of the whole training pool,
evaluation hooks, metrics (JSONL + TensorBoard), orbax checkpoints with bit-exact resume and
the NaN guard.

Expected (quick): every member's test MSE falls from ~sum(lambda) ~ 3.6 towards the
least-squares fit on the same pool (the reference computed in numpy), the pool's per-example
losses show which examples are learned late.
Cost: quick ~10 s on 2 CPU cores (4 seeds, 3k steps); full ~20 s on 2 CPU cores (16 seeds, 20k
steps, pool 4096). Measured: quick test MSE 0.028 +- 0.001 vs least squares 0.011 (8 s); full 0.016 +- 0.002 vs
0.010 (14 s).

    lsb run toy_regression --config quick --set sampler=zipf --set optim.name=adam --set optim.lr=0.01
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import analysis, io, plots
from lsb_jax.config import require_positive
from lsb_jax.data import Epochs, Subset, Uniform, Zipf, doubling
from lsb_jax.experiments import Experiment
from lsb_jax.models.mlp import ACTIVATIONS, init_mlp, mlp_apply
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.optim.factory import validate as validate_optim
from lsb_jax.tasks.regression import RegressionTask, least_squares_test_mse
from lsb_jax.tracking import LossTracker, TrajectoryStore, evenly_spaced_steps, pool_scorer
from lsb_jax.train import EvalHook, ensemble_init, ensemble_step, fit, init_state, make_sampled_step, member_grid

SAMPLERS = ("uniform", "subset", "zipf", "epochs", "curriculum")


@dataclasses.dataclass(frozen=True)
class Config:
    seeds: int = 4                      # vmapped members per learning rate
    seed: int = 0
    data_seed: int = 1234               # teacher, pool and test set (shared by all members)
    dim: int = 20
    spectrum_decay: float = 1.0         # lambda_i = i^-decay
    noise: float = 0.1
    hidden: tuple[int, ...] = (40, 40)
    activation: str = "tanh"
    pool_size: int = 512
    test_size: int = 2048
    batch_size: int = 32
    steps: int = 3000
    sampler: str = "uniform"            # uniform | subset | zipf | epochs | curriculum
    subset_k: int = 128                 # subset size; curriculum start size
    zipf_alpha: float = 1.0
    curriculum_first: int = 300         # curriculum: subset_k items for this many steps ...
    curriculum_every: int = 300         # ... then twice as many every this many steps
    lrs: tuple[float, ...] = ()         # optional learning-rate sweep (one member per seed x lr)
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.05)
    track_points: int = 8               # K steps at which every pool example's loss is recorded
    eval_every: int = 100
    chunk_size: int = 100
    checkpoint_every: int = 500
    log_every: int = 10
    threshold_factor: float = 3.0       # "learned" = test MSE <= this x the least-squares test MSE

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got '{self.sampler}'")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got '{self.activation}'")
        if not 1 <= self.subset_k <= self.pool_size:
            raise ValueError(f"subset_k must be in [1, pool_size={self.pool_size}], got {self.subset_k}")
        require_positive(self, ("seeds", "dim", "pool_size", "test_size", "batch_size", "steps", "track_points",
                                "eval_every", "chunk_size", "checkpoint_every", "log_every", "curriculum_first",
                                "curriculum_every"))
        if self.noise < 0 or any(h < 1 for h in self.hidden) or any(lr <= 0 for lr in self.lrs):
            raise ValueError("noise must be >= 0, hidden sizes >= 1 and lrs > 0")
        validate_optim(self.optim, self.steps, {"lr": self.lrs[0]} if self.lrs else {})


def make_sampler(cfg: Config):
    n = cfg.pool_size
    if cfg.sampler == "uniform":
        return Uniform(n)
    if cfg.sampler == "subset":
        return Subset(n, cfg.subset_k, perm_seed=cfg.data_seed)
    if cfg.sampler == "zipf":
        return Zipf(n, cfg.zipf_alpha, perm_seed=cfg.data_seed)
    if cfg.sampler == "epochs":
        return Epochs(np.ones(n, np.int32), perm_seed=cfg.data_seed)
    return Subset(n, doubling(cfg.subset_k, cfg.curriculum_first, cfg.curriculum_every, n), perm_seed=cfg.data_seed)


def run(cfg: Config, ctx) -> dict:
    task = RegressionTask(cfg.dim, cfg.spectrum_decay, cfg.noise)
    k_teacher, k_pool, k_test = jax.random.split(jax.random.PRNGKey(cfg.data_seed), 3)
    w_star = task.teacher(k_teacher)
    pool = task.sample(k_pool, cfg.pool_size, w_star)
    test = task.sample(k_test, cfg.test_size, w_star)
    sizes = (cfg.dim, *cfg.hidden, 1)
    sampler = make_sampler(cfg)

    def loss_fn(params, batch):
        pred_B = mlp_apply(params, batch["x"], cfg.activation)[:, 0]
        return (pred_B - batch["y"]) ** 2

    def sample_batch(key, step, pool):
        draw = sampler.sample(key, step, cfg.batch_size)
        return {"x": pool["x"][draw.index], "y": pool["y"][draw.index], "loss_weight": draw.weight}

    def optimizer(hp):
        return make_optimizer(cfg.optim, cfg.steps, **hp)

    def member_init(key, hp):
        return init_state(lambda k: init_mlp(k, sizes), optimizer(hp).tx, key)

    def member_step(state, hp, pool):
        step = make_sampled_step(loss_fn, optimizer(hp), lambda k, s: sample_batch(k, s, pool))
        return step(state)

    members = member_grid(cfg.seeds, cfg.seed, **({"lr": cfg.lrs} if cfg.lrs else {}))
    state = ensemble_init(member_init, members)

    mse = jax.vmap(lambda p, data: jnp.mean(loss_fn(p, data)), in_axes=(0, None))
    evals = EvalHook(lambda s, test, pool: {"test_mse": mse(s.params, test), "pool_mse": mse(s.params, pool)},
                     every=cfg.eval_every, args=(test, pool))
    steps_K = evenly_spaced_steps(cfg.steps, cfg.track_points)
    store = TrajectoryStore(ctx.dir / "trajectories.npz", cfg.pool_size, steps_K, member_shape=(members.size,))
    tracker = LossTracker(jax.vmap(pool_scorer(loss_fn, 512), in_axes=(0, None)), store, args=(pool,))

    result = fit(ensemble_step(member_step), state, cfg.steps, ctx=ctx, hooks=[evals, tracker],
                 step_args=(members.hparams, pool), chunk_size=cfg.chunk_size,
                 checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, desc="toy_regression",
                 on_divergence="continue" if cfg.lrs else "raise")  # in a sweep a diverging lr is a result

    # --- numbers and figures -----------------------------------------------------------------
    hist = result.history
    ols = least_squares_test_mse(np.asarray(pool["x"]), np.asarray(pool["y"]),
                                 np.asarray(test["x"]), np.asarray(test["y"]))
    final_M = np.asarray(jax.device_get(mse(result.state.params, test)))
    reach_M = analysis.steps_to_threshold(hist["test_mse_step"], hist["test_mse"], cfg.threshold_factor * ols)
    ctx.save_arrays("final_params", **io.flatten_tree(result.state.params))

    fig, (ax0, ax1) = plots.figure(2)
    labels = [", ".join(f"{k}={v}" for k, v in lab.items() if k != "seed") for lab in members.labels]
    for group in dict.fromkeys(labels):
        cols = [i for i, lab in enumerate(labels) if lab == group]
        plots.band(ax0, hist["test_mse_step"], hist["test_mse"][:, cols], label=f"test {group}".strip(), log=True)
    plots.band(ax0, hist["loss_step"], hist["loss"], label="train batch", log=True)
    ax0.axhline(ols, color="k", ls="--", lw=1, label="least squares (numpy)")
    ax0.axhline(cfg.noise ** 2, color="gray", ls=":", lw=1, label="noise floor")
    ax0.set_xlabel("step")
    ax0.set_ylabel("MSE")
    ax0.set_title(f"{cfg.sampler} sampler, {cfg.optim.name}, {members.size} members")
    ax0.legend(fontsize=7)
    plots.trajectory_heatmap(ax1, store.losses[0], steps_K, title="pool losses, member 0")
    ctx.save_figure(fig, "loss_curves")

    mean, std = analysis.mean_std(final_M)
    # seeds that never reach the threshold are censored at the last evaluation, not dropped
    reach = analysis.censored_summary(reach_M, float(np.asarray(hist["test_mse_step"])[-1]))
    return {
        "headline": {
            "test_mse_final_mean": mean, "test_mse_final_std": std, "least_squares_test_mse": ols,
            "noise_floor": cfg.noise ** 2, "steps_to_threshold_rmean": reach["restricted_mean"],
            "steps_to_threshold_rstd": reach["restricted_std"], "steps_to_threshold_reached": reach["reached"],
            "threshold": cfg.threshold_factor * ols, "members": members.size,
            "diverged_members": int(np.sum(~np.isfinite(final_M))),  # excluded from the means above
        },
        "summary": (f"{members.size} members ({cfg.sampler} sampler, {cfg.optim.name}) reach test MSE "
                    f"{mean:.4g} +- {std:.3g} after {cfg.steps} steps; "
                    f"least squares on the same pool gives {ols:.4g}."),
        "members": [dict(lab, test_mse=float(v), steps_to_threshold=float(r))
                    for lab, v, r in zip(members.labels, final_M, reach_M)],
        "trajectory_steps": list(steps_K),
    }


EXPERIMENT = Experiment(
    name="toy_regression",
    reproduces="foundation check (no paper figure)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": Config(),
        "full": Config(seeds=16, pool_size=4096, test_size=8192, steps=20_000, track_points=15,
                       eval_every=250, chunk_size=250, checkpoint_every=2500, log_every=50),
    },
    cost={"quick": "~10 s CPU", "full": "~20 s CPU"},
    run=run,
    order=0,
)
