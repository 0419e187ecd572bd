"""Sampling vs loss weights beyond linear regression: an MLP on domains with nonlinear teachers (seed 002).

Reproduces: seed 002's complementary roles of sampling weights p and loss weights w, and its
joint prescription, on a task without closed forms. Two domains (`TeacherDomains`): a large
noisy pool (domain 0, "web") and a small clean pool whose tanh teacher differs (domain 1,
"curated"); the test risk weighs both domains equally and is measured on fresh noise-free data.
A tanh MLP is trained by SGD with `Mixture(sizes, p, w)` draws from the finite pools.

Phase 1 (one vmapped program): a grid over the curated domain's sampling weight p_1 (natural
n_1/N and a linspace) and the product a_1 = p_1 w_1 / sum p w. The diagonal p = a is the
common practice (sampling weights only); its best product a* is the tuned mixture.
Phase 2 (one vmapped program, fresh seeds, each base seed on its own pools, `sweeps.mixing.
base_pools`; phase 1 is the first base seed's): four arms at the same product a*:
  natural (p = n/N, w = 1; not at a*), sampling only (p = a*, w = 1),
  loss weights only (p = n/N, w = a*/p), and joint: p ∝ a* sqrt(m), w = a*/p, where
  m_k = E_k ||g||^2 is each domain's per-example gradient second moment measured on the pool at
  the phase-1 model (`multidomain.importance_split`, the linear theory's variance-optimal split).
For each arm: the tail-mean test excess risk and the exact minibatch gradient variance on the
pool at the final weights (`multidomain.pool_gradient_variance`, per-example gradients).

Figures (mixing_mlp): heatmap of the phase-1 test risk over (p_1, a_1) with the diagonal and
the loss-only column marked; phase-2 risk curves per arm; risk and gradient variance per arm.
Expected (quick): along a row (same a) the risk varies with the split; loss weights only at a*
are noisier and worse than sampling at a*; the joint split lowers the gradient variance below
sampling-only and is at least as good. The linear closed forms' variance ordering carries over.
Claims (`sweeps.mixing.arm_claims`, on phase 2, paired over its seeds, decided at each base seed).
Cost: the experiment's `cost` field (`lsb list`).

    lsb run mixing_mlp --config quick
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.config import require_positive
from lsb_jax.experiments import Experiment
from lsb_jax.models.mlp import init_mlp
from lsb_jax.sweeps import mixing
from lsb_jax.tasks import multidomain as md
from lsb_jax.train.arms import check_base_seeds


@dataclasses.dataclass(frozen=True)
class Config:
    seeds: int = 2                          # phase-1 seeds per grid point
    arm_seeds: int = 4                      # phase-2 seeds per arm (fresh) per base seed
    base_seeds: tuple[int, ...] = (0, 1)    # phase 2's replicates (claims decided at each); phase 1 uses the first
    data_seed: int = 0
    dim: int = 16
    teacher_hidden: int = 32
    width: int = 64                         # student MLP dim -> width -> 1 (tanh)
    sizes: tuple[int, ...] = (4000, 200)    # examples per domain (0: web, 1: curated)
    noise: tuple[float, ...] = (1.0, 0.1)   # label noise sigma_k
    shift: tuple[float, ...] = (0.0, 0.5)   # teacher perturbation per domain
    target: tuple[float, ...] = (0.5, 0.5)  # q: the domains' weights in the test risk
    grid: int = 5                           # a_1 (and p_1) on linspace(lo, 1 - lo, grid); p_1 also n_1/N
    grid_lo: float = 0.1
    lr: float = 0.02
    batch_size: int = 16
    steps: int = 3000
    eval_every: int = 100
    tail: float = 0.2                       # risk averaged over this last fraction of the evaluations
    test_size: int = 2000                   # fresh test points per domain
    chunk_size: int = 1000

    def __post_init__(self):
        k = len(self.sizes)
        if k != 2 or len(self.noise) != k or len(self.shift) != k or len(self.target) != k:
            raise ValueError("sizes, noise, shift and target need exactly 2 entries (two domains)")
        require_positive(self, ("seeds", "arm_seeds", "dim", "teacher_hidden", "width", "grid", "batch_size", "steps",
                                "eval_every", "test_size", "chunk_size"))
        if min(self.sizes) < 1 or min(self.noise) < 0 or min(self.target) < 0:
            raise ValueError("sizes must be >= 1, noise and target >= 0")
        if not 0 < self.grid_lo < 0.5 or not 0 < self.tail <= 1 or self.lr <= 0:
            raise ValueError("need 0 < grid_lo < 0.5, 0 < tail <= 1, lr > 0")
        if self.steps % self.eval_every:
            raise ValueError("steps must be a multiple of eval_every")
        check_base_seeds(self.base_seeds)


def run(cfg: Config, ctx) -> dict:
    task = md.make_teacher_domains(cfg.data_seed, cfg.dim, cfg.teacher_hidden, cfg.noise, cfg.shift)
    pools = mixing.base_pools(task, cfg.data_seed, cfg.sizes, cfg.base_seeds)   # one data draw per base seed
    test = task.sample_pool(jax.random.PRNGKey(cfg.data_seed + 1), (cfg.test_size,) * 2)
    q_K = jnp.asarray(cfg.target, jnp.float32) / sum(cfg.target)
    natural_1 = cfg.sizes[1] / sum(cfg.sizes)
    tail = mixing.tail_points(cfg.tail, cfg.steps, cfg.eval_every)
    grads = [mixing.per_example_grads(mixing.mlp_loss, mixing.pool_of(pools, r)) for r in range(len(cfg.base_seeds))]

    def train(child, seed, configs, num_seeds, pools):  # (base seeds x) seeds x configs -> (fit, members, tail [S, C])
        members = mixing.mixing_members(seed, num_seeds, configs)
        result = mixing.fit_mixture(
            ctx.child(child), members, pools, cfg.sizes, init_params=lambda k: init_mlp(k, (cfg.dim, cfg.width, 1)),
            loss_fn=mixing.mlp_loss, evaluate=jax.vmap(mixing.mlp_test_risk(q_K, cfg.test_size), (0, None)),
            eval_args=(test,), lr=cfg.lr, batch_size=cfg.batch_size, steps=cfg.steps, every=cfg.eval_every,
            chunk_size=cfg.chunk_size, desc=f"mixing_mlp/{child}")
        return result, members, mixing.tail_mean(result.history["excess_risk"], tail, members.size // len(configs))

    # phase 1: the (p_1, a_1) grid; a* = the best product of sampling only (p = a)
    axis = np.linspace(cfg.grid_lo, 1 - cfg.grid_lo, cfg.grid)
    p_axis = np.concatenate([[natural_1], axis])
    first = {k: v[:1] for k, v in pools.items()}                      # phase 1: the first base seed's pool
    res1, _, tail1_SxC = train("grid", cfg.base_seeds[0], mixing.grid_configs(p_axis, axis), cfg.seeds, first)
    risk_AxP = tail1_SxC.mean(0).reshape(len(axis), len(p_axis))
    i_star = int(np.argmin(mixing.sampling_only_diagonal(risk_AxP)))
    star = [s * risk_AxP.size + i_star * len(p_axis) + 1 + i_star for s in range(cfg.seeds)]  # its models
    m_K = mixing.domain_moments(res1.state.params, star, grads[0], pools["domain"][0])  # -> joint split p ∝ a* sqrt(m)
    p_joint = float(md.importance_split(mixing.two(float(axis[i_star])), m_K)[0][1])

    # phase 2: the arms at a*, fresh seeds; gradient variance on the pool at the final weights
    arms = list(mixing.arm_configs(natural_1, float(axis[i_star]), p_joint).values())
    arm_seeds = cfg.arm_seeds * len(cfg.base_seeds)
    res2, members2, tail2_SxC = train("arms", tuple(b + 10_000 for b in cfg.base_seeds), arms, cfg.arm_seeds, pools)
    grad_var_SxC = mixing.arm_gradient_variance(res2.state.params, members2, arms, grads, pools, cfg.batch_size)
    comparison = mixing.MLPComparison(
        p_axis=p_axis, a_axis=axis, risk_AxP=risk_AxP, m_K=m_K, p_joint=p_joint,
        risk_TxSxC=np.asarray(res2.history["excess_risk"]).reshape(-1, arm_seeds, len(arms)),
        steps_T=res2.history["excess_risk_step"], tail_SxC=tail2_SxC, grad_var_SxC=grad_var_SxC,
        members=risk_AxP.size * cfg.seeds + len(arms) * arm_seeds)
    ctx.save_figure(mixing.plot_mlp(comparison), "mixing_mlp")
    return {**mixing.mlp_results(comparison),
            "per_seed": mixing.arm_tables(tail2_SxC, grad_var_SxC, cfg.base_seeds)}


EXPERIMENT = Experiment(
    name="mixing_mlp",
    reproduces="seed 002: sampling vs loss weights beyond linear regression (MLP, nonlinear teachers)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(), "medium": Config(arm_seeds=16),
             "full": Config(seeds=8, arm_seeds=16, grid=9, steps=20_000, eval_every=500,
                                               chunk_size=2000)},
    cost={"quick": "~40 s CPU", "medium": "~1.5 min CPU (4x quick's phase 2)", "full": "~10 min CPU (estimate)"},
    run=run,
    claims=mixing.arm_claims("beyond linear regression: an MLP"),
    order=41,
)
