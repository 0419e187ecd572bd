"""The data lever in the MLSA model: reshaping the data gives GD the learning-time entropy of SAM.

Reproduces: arXiv 2602.00576's proposal (seeds 000/001) in its own theory model — upsampling
what is learned late lowers GD's simplicity bias like SAM does, at GD's cost per step.

(a) Distribution lever. Tasks w ~ N(0, Omega_gamma) with omega_i proportional to lam_i^-gamma
    (mean 1): the population optimum M* is unchanged for infinite context (only the speed of
    each feature changes: kappa_i = lam_i^2 omega_i), so the lever reshapes *when* features are
    learned, not *what* is learned. GD's entropy vs gamma is matched to SAM's entropy vs rho
    (global normalization): gamma*(rho) by interpolation. The final loss is measured on the
    original distribution (Omega = I).
(b) The paper's pipeline on a finite pool of sequences, with the same tracking code as the
    LLM path: a proxy GD run for a tenth of the training (before the last feature is learned),
    per-example losses at K checkpoints (`TrajectoryStore` + `pool_scorer`), k-means (k = 2) on
    the trajectories, the higher-loss cluster upsampled x factor (duplication = loss weights in
    full-batch GD); controls: the easy cluster, a random set of the same size; and SAM on the
    original pool.

Expected: GD's entropy rises with gamma and reaches SAM's at some gamma*(rho); upsampling the
hard cluster raises GD's entropy (easy lowers it), with one gradient per step against SAM's two.
Claims (decided per base seed, paired over the seeds' initializations): (a) the largest gamma raises
GD's entropy over gamma = 0; (b) upsampling the hard cluster raises it over the uniform pool and over
a random set of the same size, upsampling the easy cluster lowers it. Each base seed draws its own
pool, proxy and selections (a base seed replicates the whole pipeline); within one, the seeds'
initializations are the paired replicates. Cost: the experiment's `cost` field (`lsb list`).

    lsb run mlsa_data_lever --config quick --set upsample_factor=3
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from lsb_jax import claims as claims_lib
from lsb_jax.claims import Claim
from lsb_jax.experiments import Experiment
from lsb_jax.theory import data_lever, dynamics, figures, mlsa
from lsb_jax.theory.setup import ModelConfig
from lsb_jax.train.arms import check_base_seeds


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig(init="ansatz", init_noise=0.05, steps=8000, record_every=10)
    gammas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
    rhos: tuple[float, ...] = (0.0, 0.02, 0.04, 0.06)
    seeds: int = 6                       # per base seed
    base_seeds: tuple[int, ...] = (0, 1)  # replicates: each claim is decided at every base seed
    # (b) the pool pipeline
    pool_size: int = 1024
    pool_context: int = 32
    pool_seed: int = 7
    proxy_fraction: float = 0.1          # proxy trains this fraction of model.steps (before the last feature)
    cluster_on: str = "log"              # k-means features: none (raw losses) | log | final
    track_points: int = 6
    upsample_factor: int = 2
    pool_rho: float = 0.04

    def __post_init__(self):
        if not self.gammas or self.gammas[0] != 0.0 or not self.rhos or self.rhos[0] != 0.0:
            raise ValueError("gammas and rhos must start at 0 (plain GD)")
        if self.seeds < 1 or self.pool_size < 8 or self.pool_context < 1 or self.track_points < 2:
            raise ValueError("seeds >= 1, pool_size >= 8, pool_context >= 1, track_points >= 2 are required")
        if not 0 < self.proxy_fraction <= 1 or self.upsample_factor < 1 or self.pool_rho < 0:
            raise ValueError("0 < proxy_fraction <= 1, upsample_factor >= 1 and pool_rho >= 0 are required")
        check_base_seeds(self.base_seeds)


def _gd(gamma: float) -> str:
    return f"GD gamma={gamma:g}"


def _pool_arm(cfg: Config, selection: str) -> str:
    return f"GD, {selection} x{cfg.upsample_factor}"     # data_lever.pool_pipeline's arm names


def claims(cfg: Config) -> list[Claim]:
    """Seed 001's proposal in its theory model: reshaping the data lowers GD's simplicity bias."""
    hard = _pool_arm(cfg, "hard")
    return [
        Claim("reweighting_raises_gd_entropy", "001", "Sec. 5 (theory model)",
              "reweighting the data toward the late-learned directions raises GD's learning-time entropy",
              "entropy", _gd(cfg.gammas[-1]), _gd(0.0), expect="higher"),
        Claim("hard_upsampling_raises_gd_entropy", "001", "Sec. 5 (theory model)",
              "upsampling the proxy's hard cluster raises GD's learning-time entropy", "pool_entropy", hard, "GD",
              expect="higher"),
        Claim("hard_beats_random_upsampling", "001", "Sec. 5 (theory model)",
              "upsampling the hard cluster raises it more than upsampling a random set of the same size",
              "pool_entropy", hard, _pool_arm(cfg, "random"), expect="higher"),
        Claim("easy_upsampling_lowers_gd_entropy", "001", "Sec. 5 (theory model)",
              "upsampling the easy cluster does not help: it lowers GD's learning-time entropy", "pool_entropy",
              _pool_arm(cfg, "easy"), "GD", expect="lower"),
    ]


def pool_pipeline(cfg: Config, ctx) -> data_lever.PoolLever:
    """(b): proxy -> trajectories (`trajectories.npz`) -> k-means -> upsample -> GD, and SAM."""
    return data_lever.pool_pipeline(cfg.model, pool_size=cfg.pool_size, context=cfg.pool_context,
                                    pool_seed=cfg.pool_seed, seeds=cfg.seeds, seed=cfg.base_seeds,
                                    proxy_fraction=cfg.proxy_fraction, points=cfg.track_points,
                                    factor=cfg.upsample_factor, cluster_on=cfg.cluster_on, rho=cfg.pool_rho,
                                    path=ctx.dir / "trajectories.npz")


def run(cfg: Config, ctx) -> dict:
    m = cfg.model
    lever = data_lever.distribution_lever(m, cfg.gammas, cfg.rhos, seeds=cfg.seeds, seed=cfg.base_seeds)
    p0 = mlsa.init_params(jax.random.PRNGKey(cfg.base_seeds[0]), m.heads, m.dim, m.init_spec())
    cost = {"gd_s_per_step": dynamics.seconds_per_step("gd", m.spectrum(), p0, m.lr, 0.0),
            "sam_s_per_step": dynamics.seconds_per_step("sam", m.spectrum(), p0, m.lr, cfg.rhos[-1])}
    pool = pool_pipeline(cfg, ctx)

    ctx.save_figure(figures.data_lever(lever, pool, cfg.gammas, cfg.rhos, m.eigenvalues), "data_lever")
    ctx.save_figure(figures.proxy_trajectories(pool), "proxy_trajectories")

    headline = {**data_lever.distribution_headline(lever, cfg.gammas, cfg.rhos),
                "sam_cost_per_step_vs_gd": cost["sam_s_per_step"] / cost["gd_s_per_step"],
                **data_lever.pool_headline(pool),
                "diverged_members": int(lever.gd.diverged.sum() + lever.sam.diverged.sum()) + pool.diverged}
    per_seed = {
        "entropy": claims_lib.per_seed(np.concatenate([lever.seed_entropy_gd, lever.seed_entropy_sam]),
                                       [_gd(g) for g in cfg.gammas] + [f"SAM rho={r:g}" for r in cfg.rhos],
                                       cfg.base_seeds, unit="nats"),
        "pool_entropy": claims_lib.per_seed(pool.entropy, pool.names, cfg.base_seeds, unit="nats")}
    return {"headline": headline, "summary": summary(cfg, lever, pool, cost), "per_seed": per_seed,
            "gamma_star": dict(zip([str(r) for r in cfg.rhos], lever.gamma_star)),
            "pool_arms": [{"arm": n, "entropy": e, "times": t, "test_loss_rel": tl}
                          for n, e, t, tl in zip(pool.names, pool.entropy, pool.times, pool.test)],
            "hard_loading_per_direction": pool.loading, "cost": cost}


def summary(cfg: Config, lever: data_lever.DistributionLever, pool: data_lever.PoolLever, cost: dict) -> str:
    h_gd, h_sam, ent = lever.entropy_gd, lever.entropy_sam, [float(np.nanmean(e)) for e in pool.entropy]
    return (f"(a) GD's learning-time entropy rises from {h_gd[0]:.3f} (gamma=0) to {h_gd[-1]:.3f} "
            f"(gamma={cfg.gammas[-1]:g}); SAM reaches {h_sam[-1]:.3f} at rho={cfg.rhos[-1]:g}, "
            f"matched by gamma={lever.gamma_star[-1]:.2f}, "
            f"at {cost['sam_s_per_step'] / cost['gd_s_per_step']:.2f}x GD's time per step. "
            f"(b) On pools of {cfg.pool_size} sequences (one per base seed), upsampling the proxy's hard cluster "
            f"({np.mean(pool.hard_fraction):.0%} of the pool; "
            f"it loads x{pool.loading[-1]:.2f} on the smallest-eigenvalue direction) "
            f"gives GD entropy {ent[1]:.3f} vs {ent[0]:.3f} (uniform), {ent[2]:.3f} (easy), "
            f"{ent[3]:.3f} (random), {ent[4]:.3f} (SAM).")


EXPERIMENT = Experiment(
    name="mlsa_data_lever",
    reproduces="arXiv 2602.00576: reshaping the data mimics SAM's lower simplicity bias (seeds 000/001)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": Config(),
        "full": Config(model=ModelConfig(eigenvalues=(4.0, 2.0, 1.0, 0.5, 0.25, 0.125), heads=6, init="ansatz",
                                         steps=100_000, record_every=50),
                       gammas=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0), rhos=(0.0, 0.01, 0.02, 0.04, 0.06, 0.08),
                       seeds=8, pool_size=8192, track_points=15),
    },
    cost={"quick": "~30 s CPU", "full": "~8-9 min CPU"},
    run=run,
    claims=claims,
    order=12,
)
