"""Toy: an MLP learns a linear teacher with a decaying input spectrum (foundation check).

Reproduces: no paper figure. It proves the machinery every reproduction uses: a vmapped
ensemble of seeds x learning rates trained by one compiled program (a `fori_loop` per segment of steps), a data-lever
sampler (uniform, subset of k, Zipf, epochs without replacement, doubling curriculum), any
optimizer of `lsb_jax.optim`, per-example loss trajectories of the whole training pool,
evaluation hooks, metrics (JSONL + TensorBoard), orbax checkpoints with bit-exact resume and
the NaN guard.

Expected (quick): every member's test MSE falls from ~sum(lambda) ~ 3.6 towards the least-squares
fit on the same pool (the reference computed in numpy), the pool's per-example losses show which
examples are learned late (quick: 4 seeds, 3k steps; full: 16 seeds, 20k steps, pool 4096). Cost:
the experiment's `cost` field (`lsb list`).

    lsb run toy_regression --config quick --set sampler=zipf --set optim.name=adam --set optim.lr=0.01
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from lsb_jax import io
from lsb_jax.config import require_positive
from lsb_jax.experiments import Experiment
from lsb_jax.models.mlp import ACTIVATIONS
from lsb_jax.optim import OptimConfig
from lsb_jax.optim.factory import validate as validate_optim
from lsb_jax.sweeps import regression as toy
from lsb_jax.sweeps.regression import SAMPLERS
from lsb_jax.tasks.regression import RegressionTask, least_squares_test_mse
from lsb_jax.train import member_grid


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


def run(cfg: Config, ctx) -> dict:
    task = RegressionTask(cfg.dim, cfg.spectrum_decay, cfg.noise)
    k_teacher, k_pool, k_test = jax.random.split(jax.random.PRNGKey(cfg.data_seed), 3)
    w_star = task.teacher(k_teacher)
    pool = task.sample(k_pool, cfg.pool_size, w_star)
    test = task.sample(k_test, cfg.test_size, w_star)
    sampler = toy.make_sampler(cfg.sampler, cfg.pool_size, subset_k=cfg.subset_k, zipf_alpha=cfg.zipf_alpha,
                               curriculum_first=cfg.curriculum_first, curriculum_every=cfg.curriculum_every,
                               perm_seed=cfg.data_seed)
    members = member_grid(cfg.seeds, cfg.seed, **({"lr": cfg.lrs} if cfg.lrs else {}))
    fitted = toy.fit_toy(ctx, members, pool, test, sampler, sizes=(cfg.dim, *cfg.hidden, 1),
                         activation=cfg.activation, optim=cfg.optim, batch_size=cfg.batch_size, steps=cfg.steps,
                         track_points=cfg.track_points, eval_every=cfg.eval_every, chunk_size=cfg.chunk_size,
                         checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                         on_divergence="continue" if cfg.lrs else "raise")  # in a sweep a diverging lr is a result

    ols = least_squares_test_mse(np.asarray(pool["x"]), np.asarray(pool["y"]),
                                 np.asarray(test["x"]), np.asarray(test["y"]))
    final_M = toy.final_test_mse(fitted, test)
    ctx.save_arrays("final_params", **io.flatten_tree(fitted.result.state.params))
    describe = f"{cfg.sampler} sampler, {cfg.optim.name}"
    ctx.save_figure(toy.plot_loss_curves(fitted, ols, cfg.noise ** 2, f"{describe}, {members.size} members"),
                    "loss_curves")
    return toy.toy_results(fitted, final_M, ols, threshold_factor=cfg.threshold_factor, noise_floor=cfg.noise ** 2,
                           describe=describe, steps=cfg.steps)


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
