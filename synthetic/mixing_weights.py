"""Sampling weights vs loss weights on multi-domain linear regression (seed 002, issue 9).

Reproduces: the complementary roles of sampling weights p and loss weights w (seed 002's linear
regression analysis), with closed forms from `lsb_jax.tasks.multidomain` beside SGD simulation.
Two domains: a large noisy pool (domain 0, "web") and a small clean pool whose teacher differs
(domain 1, "curated"); the target risk weighs both domains equally. SGD draws domains with
`Mixture(sizes, p, w)` from the finite pools; one vmapped program trains every configuration
of a grid over (p_1, a_1), where a = p * w (normalized to sum 1) is the product of the weights.
Each base seed draws its own pools (`sweeps.mixing.base_pools`) besides its own inits and SGD
noise, so a claim decided at every base seed holds across data draws of the same task.

Figures:
  complementary_roles: heatmaps over (p_1, a_1) of (a) the closed-form expected risk of the
    weighted least-squares solution (a function of the product a only: constant along rows),
    (b) the closed-form gradient variance at the fixed point (depends on the split: for a fixed
    a it is smallest at p ∝ a sqrt(m)), (c) the simulated SGD risk (both), with the jointly best
    configuration (simulated, and predicted in advance by the closed forms).
  theory_vs_simulation: predicted vs simulated SGD risk per configuration; the expected ERM
    excess risk and generalization gap vs a_1 (closed form vs Monte Carlo over fresh pools); the
    exact minibatch gradient variance at the trained weights vs the closed form at theta_inf.
Named arms (extra members): natural mixing (p = n/N, w = 1), and at the predicted best product
a*: sampling only (p = a*, w = 1), loss weights only (p = n/N, w = a*/p), joint (p ∝ a* sqrt(m)).

Expected (quick): the ERM risk is flat along rows, the gradient variance is not; the joint arm
has the lowest SGD risk, loss-weights-only the highest at the same a*. Claims (`sweeps.mixing.arm_claims`,
paired over seeds, decided at each base seed): the joint arm against each weight alone and against
natural mixing, on gradient variance and risk. Cost: the experiment's `cost` field (`lsb list`).

    lsb run mixing_weights --config quick
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.config import require_positive
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import mixing
from lsb_jax.tasks import multidomain as md
from lsb_jax.train.arms import check_base_seeds


@dataclasses.dataclass(frozen=True)
class Config:
    seeds: int = 6                          # per base seed
    base_seeds: tuple[int, ...] = (0, 1)    # replicates: each claim is decided at every base seed
    data_seed: int = 0
    dim: int = 8
    sizes: tuple[int, ...] = (2000, 100)    # examples per domain (0: web, 1: curated)
    noise: tuple[float, ...] = (1.0, 0.1)   # label noise sigma_k
    shift: tuple[float, ...] = (0.0, 0.5)   # |w*_k - w*|: teacher conflict between domains
    decay: float = 0.5                      # Sigma_k spectrum i^-decay, randomly rotated per domain
    target: tuple[float, ...] = (0.5, 0.5)  # q: the domains' weights in the test risk
    grid: int = 9                           # p_1 and a_1 on linspace(lo, 1 - lo, grid)
    grid_lo: float = 0.05
    lr: float = 0.05
    batch_size: int = 8
    steps: int = 3000
    eval_every: int = 100
    tail: float = 0.25                      # the SGD risk is averaged over this last fraction of steps
    erm_pools: int = 256                    # Monte Carlo pools for the ERM risk / gap curves
    erm_points: int = 13                    # a_1 values of those curves
    chunk_size: int = 500

    def __post_init__(self):
        k = len(self.sizes)
        if k != 2 or len(self.noise) != k or len(self.shift) != k or len(self.target) != k:
            raise ValueError("sizes, noise, shift and target need exactly 2 entries (two domains)")
        if min(self.sizes) < self.dim or min(self.noise) < 0 or min(self.target) < 0:
            raise ValueError("each domain needs >= dim examples; noise and target must be >= 0")
        require_positive(self, ("seeds", "grid", "batch_size", "steps", "eval_every", "erm_pools", "erm_points",
                                "chunk_size"))
        if not 0 < self.grid_lo < 0.5 or not 0 < self.tail <= 1 or self.lr <= 0:
            raise ValueError("need 0 < grid_lo < 0.5, 0 < tail <= 1, lr > 0")
        if self.steps % self.eval_every:
            raise ValueError("steps must be a multiple of eval_every")
        check_base_seeds(self.base_seeds)

    @property
    def total_seeds(self) -> int:
        return self.seeds * len(self.base_seeds)


def run(cfg: Config, ctx) -> dict:
    task = md.make_task(cfg.data_seed, cfg.dim, cfg.noise, decay=cfg.decay, shift=cfg.shift, rotate=True)
    pools = mixing.base_pools(task, cfg.data_seed, cfg.sizes, cfg.base_seeds)   # one data draw per base seed
    q_K = jnp.asarray(cfg.target, jnp.float32)
    bayes = float(md.bayes_risk(task, q_K))
    natural_1 = cfg.sizes[1] / sum(cfg.sizes)
    tail = mixing.tail_points(cfg.tail, cfg.steps, cfg.eval_every)
    predict = mixing.linear_predictor(task, q_K, bayes, sizes=cfg.sizes, lr=cfg.lr, batch_size=cfg.batch_size,
                                      steps=cfg.steps, every=cfg.eval_every, tail=tail)
    # the jointly best (a*, p*) predicted in advance by the closed forms, on a 4x finer line of products
    a_star, p_joint = mixing.best_joint(task, predict, jnp.linspace(cfg.grid_lo, 1 - cfg.grid_lo, 4 * cfg.grid - 3))

    # members: seeds x (the (p_1, a_1) grid, then the named arms), one vmapped SGD program
    axis = np.linspace(cfg.grid_lo, 1 - cfg.grid_lo, cfg.grid)
    configs = mixing.grid_configs(axis, axis) + list(mixing.arm_configs(natural_1, a_star, p_joint).values())
    p1_C, a1_C = (np.asarray(v, np.float32) for v in zip(*configs))
    members = mixing.mixing_members(cfg.base_seeds, cfg.seeds, configs)
    result = mixing.fit_mixture(
        ctx, members, pools, cfg.sizes, init_params=lambda k: {"w": jnp.zeros((cfg.dim,))}, loss_fn=md.loss_fn,
        evaluate=jax.vmap(lambda params: md.target_risk(task, params["w"], q_K) - bayes), lr=cfg.lr,
        batch_size=cfg.batch_size, steps=cfg.steps, every=cfg.eval_every, chunk_size=cfg.chunk_size,
        desc="mixing_weights")

    # ERM Monte Carlo over fresh pools: excess risk and generalization gap vs a_1
    a_line = np.linspace(cfg.grid_lo, 1 - cfg.grid_lo, cfg.erm_points).astype(np.float32)
    risk_RxA, gap_RxA = mixing.erm_monte_carlo(task, jax.random.PRNGKey(cfg.data_seed + 1), cfg.erm_pools, a_line,
                                               cfg.sizes, q_K, bayes)
    erm_pred = jax.vmap(lambda a1: md.erm_risk(task, mixing.two(a1), cfg.sizes, q_K))(a_line)
    var_M = mixing.linear_pool_grad_variance(result.state.params, members, pools, cfg.batch_size)
    risk_SxC, var_SxC = mixing.tail_mean(result.history["excess_risk"], tail, cfg.total_seeds), var_M.reshape(
        cfg.total_seeds, -1)
    arms = slice(cfg.grid ** 2, None)                     # the named arms follow the grid
    comparison = mixing.LinearComparison(
        grid=cfg.grid, axis=axis, p1_C=p1_C, a1_C=a1_C, natural_1=natural_1, a_star=a_star, p_joint=p_joint,
        bayes=bayes, sim_C=risk_SxC.mean(0), var_C=var_SxC.mean(0),
        pred={k: np.asarray(v) for k, v in predict(jnp.asarray(p1_C), jnp.asarray(a1_C)).items()},
        a_line=a_line, risk_RxA=risk_RxA, gap_RxA=gap_RxA, erm_pred={k: np.asarray(v) for k, v in erm_pred.items()},
        members=members.size)
    ctx.save_figure(mixing.plot_complementary_roles(comparison, cfg.grid_lo), "complementary_roles")
    ctx.save_figure(mixing.plot_theory_vs_simulation(comparison), "theory_vs_simulation")
    return {**mixing.linear_results(comparison),
            "per_seed": mixing.arm_tables(risk_SxC[:, arms], var_SxC[:, arms], cfg.base_seeds)}


EXPERIMENT = Experiment(
    name="mixing_weights",
    reproduces="seed 002: complementary roles of sampling and loss weights (linear regression)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(), "full": Config(seeds=4, grid=15, steps=10_000, eval_every=250, erm_pools=1024,
                                               erm_points=25, chunk_size=1000)},
    cost={"quick": "~45 s CPU", "full": "~5 min CPU (estimate)"},
    run=run,
    claims=mixing.arm_claims("linear regression"),
    order=40,
)
