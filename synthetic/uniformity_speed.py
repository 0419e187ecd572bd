"""Uniform training sets train faster: GD speed vs the minimum pairwise distance h_min (seed 003).

Reproduces: seed 003's claim that a larger h_min (more uniform data) speeds up gradient descent,
on a synthetic regression task. Candidates: N points on the unit sphere in R^d drawn from a
clustered distribution (so random subsets contain near-duplicates); labels = a random tanh
teacher + label noise. Training sets of n points are chosen by greedy k-center
(`lsb_jax.data.selection.kcenter_greedy`) from random candidate sub-pools of growing size m:
m = n is a plain random subset, m = N the greedy selection from the whole pool, sizes between
give intermediate h_min. A ReLU MLP is trained on each set by full-batch GD (one vmapped
program: training sets x init seeds). Inputs are unit-norm, so h_min changes only the spacing
of the points, not their scale.

Figures (uniformity_speed): training loss curves per sub-pool size; steps to reach the loss
threshold vs h_min; the smallest eigenvalue of the empirical NTK Gram matrix at initialization vs
h_min (the mechanism of the theory: well-separated points give a well-conditioned kernel).
Expected (quick): h_min grows with m; steps to threshold fall with h_min (negative Spearman rho),
greedy over the pool reaches it sooner than random. Claims (`sweeps.uniformity.speed_claims`, decided
at each base seed; each base seed draws its own sets and inits): greedy over the whole pool vs random
on censored steps to the threshold and on the NTK's smallest eigenvalue at init, with a training
set as the replicate (its init seeds averaged: they share its data). Cost: the
experiment's `cost` field (`lsb list`).

    lsb run uniformity_speed --config quick
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lsb_jax.config import require_positive
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import uniformity
from lsb_jax.train.arms import check_base_seeds


@dataclasses.dataclass(frozen=True)
class Config:
    seeds: int = 2                          # MLP initializations per training set
    base_seeds: tuple[int, ...] = (0, 1)    # replicates: each base seed draws its own sets and inits
    data_seed: int = 0
    dim: int = 6                            # inputs on the unit sphere S^{d-1}
    pool_size: int = 4096                   # N candidates
    clusters: int = 8
    cluster_spread: float = 0.35
    label_noise: float = 0.3
    train_size: int = 64                    # n
    subpools: tuple[int, ...] = (64, 128, 512, 4096)   # greedy over m random candidates (m = n: random)
    draws: int = 8                          # training sets per sub-pool size (per base seed)
    width: int = 128
    lr: float = 0.2
    steps: int = 1000
    threshold: float = 0.02                 # "trained": full-batch train MSE <= this
    log_every: int = 5
    chunk_size: int = 500

    def __post_init__(self):
        if any(m < self.train_size or m > self.pool_size for m in self.subpools) or not self.subpools:
            raise ValueError(f"subpools must lie in [train_size={self.train_size}, pool_size={self.pool_size}]")
        if list(self.subpools) != sorted(set(self.subpools)) or self.subpools[0] != self.train_size:
            raise ValueError(f"subpools must be increasing and start at train_size={self.train_size} (the random "
                             f"baseline: greedy over n candidates keeps them all), got {self.subpools}")
        require_positive(self, ("seeds", "dim", "clusters", "train_size", "draws", "width", "steps", "log_every",
                                "chunk_size"))
        if self.train_size < 2 or self.lr <= 0 or self.threshold <= 0 or self.label_noise < 0:
            raise ValueError("need train_size >= 2, lr > 0, threshold > 0, label_noise >= 0")
        check_base_seeds(self.base_seeds)


def run(cfg: Config, ctx) -> dict:
    x_NxD, y_N, _ = uniformity.clustered_sphere_pool(cfg.data_seed, cfg.dim, cfg.pool_size, cfg.clusters,
                                                     cfg.cluster_spread, cfg.label_noise)
    # per base seed: training sets by greedy k-center over random sub-pools of size m (its own draws)
    blocks = []
    for b in cfg.base_seeds:
        rng = np.random.default_rng((cfg.data_seed, b))
        set_SxN, group_S, h_min_S = uniformity.kcenter_training_sets(x_NxD, cfg.train_size, cfg.subpools, cfg.draws,
                                                                     rng)
        labels = [{"base_seed": b, "set": i, "subpool": int(group_S[i]), "h_min": float(h_min_S[i])}
                  for i in range(len(set_SxN))]
        blocks.append((x_NxD[set_SxN], y_N[set_SxN], labels))
    members = uniformity.set_members(cfg.base_seeds, cfg.seeds, blocks)   # base seeds x init seeds x sets
    result, ntk_M = uniformity.fit_full_batch(ctx, members, (cfg.dim, cfg.width, 1), lr=cfg.lr, steps=cfg.steps,
                                              chunk_size=cfg.chunk_size, log_every=cfg.log_every,
                                              desc="uniformity_speed")
    comparison = uniformity.SpeedComparison(
        subpools=cfg.subpools, train_size=cfg.train_size, pool_size=cfg.pool_size, width=cfg.width, steps=cfg.steps,
        threshold=cfg.threshold, group_M=np.asarray([lab["subpool"] for lab in members.labels]),
        h_min_M=np.asarray([lab["h_min"] for lab in members.labels]),
        ntk_M=ntk_M, steps_T=result.history["loss_step"], loss_TxM=result.history["loss"])
    rho = uniformity.spearman(comparison)
    ctx.save_figure(uniformity.plot_speed(comparison, rho), "uniformity_speed")
    return {**uniformity.speed_results(comparison, rho),
            "per_seed": uniformity.speed_tables(comparison, cfg.base_seeds, cfg.seeds)}


EXPERIMENT = Experiment(
    name="uniformity_speed",
    reproduces="seed 003: larger minimum pairwise distance h_min speeds up GD training",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(),
             "full": Config(seeds=3, draws=16, steps=3000, subpools=(64, 96, 128, 256, 512, 1024, 4096))},
    cost={"quick": "~20 s CPU", "full": "~3 min CPU (estimate)"},
    run=run,
    claims=lambda cfg: uniformity.speed_claims(cfg.subpools, cfg.train_size, cfg.pool_size),
    order=42,
)
