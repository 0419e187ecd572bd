"""Sampling weights vs loss weights on multi-domain linear regression (seed 002, issue 9).

Reproduces: the complementary roles of sampling weights p and loss weights w (seed 002's linear
regression analysis), with closed forms from `lsb_jax.tasks.multidomain` beside SGD simulation.
Two domains: a large noisy pool (domain 0, "web") and a small clean pool whose teacher differs
(domain 1, "curated"); the target risk weighs both domains equally. SGD draws domains with
`Mixture(sizes, p, w)` from the finite pools; one vmapped program trains every configuration
of a grid over (p_1, a_1), where a = p * w (normalized to sum 1) is the product of the weights.

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
has the lowest SGD risk, loss-weights-only the highest at the same a*; predictions within ~10%.
Cost: quick ~30 s on 2 CPU cores (170 members x 3000 steps; 43 s user CPU measured on a loaded machine);
full (4 seeds, 15 x 15 grid, 10k steps) not measured yet, estimated ~3 min.

    lsb run mixing_weights --config quick
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import plots
from lsb_jax.config import require_positive
from lsb_jax.data import Mixture
from lsb_jax.experiments import Experiment
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.tasks import multidomain as md
from lsb_jax.train import EvalHook, Members, ensemble_init, ensemble_step, fit, init_state, make_sampled_step, seed_keys

ARMS = ("natural", "sampling_only", "loss_only", "joint")


@dataclasses.dataclass(frozen=True)
class Config:
    seeds: int = 2
    seed: int = 0
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


def _two(v1):
    return jnp.stack([1.0 - v1, v1])


def run(cfg: Config, ctx) -> dict:
    task = md.make_task(cfg.data_seed, cfg.dim, cfg.noise, decay=cfg.decay, shift=cfg.shift, rotate=True)
    pool = task.sample_pool(jax.random.PRNGKey(cfg.data_seed), cfg.sizes)
    q_K = jnp.asarray(cfg.target, jnp.float32)
    bayes = float(md.bayes_risk(task, q_K))
    natural_1 = cfg.sizes[1] / sum(cfg.sizes)

    # --- closed forms: predicted SGD risk = ERM risk(a) + online SGD excess over theta_inf(a) ----
    every = cfg.eval_every
    tail_points = max(1, int(round(cfg.tail * cfg.steps / every)))

    def predict(p1, a1):
        p_K, a_K = _two(p1), _two(a1)
        w_K = a_K / p_K
        erm = md.erm_risk(task, a_K, cfg.sizes, q_K)
        curve = md.sgd_risk_curve(task, p_K, w_K, q_K, lr=cfg.lr, batch_size=cfg.batch_size, steps=cfg.steps,
                                  every=every)
        sgd_excess = jnp.mean(curve[-tail_points:]) - erm["risk_inf"]
        theta_inf = md.fixed_point(task, a_K)
        return {"erm": erm["risk"] - bayes, "gap": erm["gap"], "sgd": erm["risk"] + sgd_excess - bayes,
                "grad_var": md.gradient_variance(task, theta_inf, p_K, w_K, cfg.batch_size)}

    predict_v = jax.jit(jax.vmap(predict))
    fine = jnp.linspace(cfg.grid_lo, 1 - cfg.grid_lo, 4 * cfg.grid - 3)
    p_opt_F = jax.vmap(lambda a1: md.optimal_split(task, _two(a1))[0][1])(fine)
    best_f = int(jnp.argmin(predict_v(p_opt_F, fine)["sgd"]))
    a_star, p_joint = float(fine[best_f]), float(p_opt_F[best_f])

    # --- members: the (p_1, a_1) grid, then the named arms ------------------------------------
    axis = np.linspace(cfg.grid_lo, 1 - cfg.grid_lo, cfg.grid)
    configs = [(p1, a1) for a1 in axis for p1 in axis]
    arms = {"natural": (natural_1, natural_1), "sampling_only": (a_star, a_star), "loss_only": (natural_1, a_star),
            "joint": (p_joint, a_star)}
    configs += list(arms.values())
    c = len(configs)
    p1_C, a1_C = (np.asarray(v, np.float32) for v in zip(*configs))
    labels = tuple({"seed": s, "p1": float(p1_C[i]), "a1": float(a1_C[i])} for s in range(cfg.seeds) for i in range(c))
    members = Members(keys=jnp.repeat(seed_keys(cfg.seed, cfg.seeds), c, axis=0),
                      hparams={"p1": jnp.tile(p1_C, cfg.seeds), "a1": jnp.tile(a1_C, cfg.seeds)}, labels=labels)

    opt = make_optimizer(OptimConfig(name="sgd", lr=cfg.lr), cfg.steps)

    def member_init(key, hp):
        return init_state(lambda k: {"w": jnp.zeros((cfg.dim,))}, opt.tx, key)

    def member_step(state, hp, pool):
        p_K, a_K = _two(hp["p1"]), _two(hp["a1"])
        mixture = Mixture(cfg.sizes, p_K, a_K / p_K)   # traced weights: one program for every member

        def sample_batch(key, step):
            draw = mixture.sample(key, step, cfg.batch_size)
            return {"x": pool["x"][draw.index], "y": pool["y"][draw.index], "loss_weight": draw.weight}

        return make_sampled_step(md.loss_fn, opt, sample_batch)(state)

    risk_v = jax.vmap(lambda params: md.target_risk(task, params["w"], q_K) - bayes)
    evals = EvalHook(lambda s: {"excess_risk": risk_v(s.params)}, every=every)
    result = fit(ensemble_step(member_step), ensemble_init(member_init, members), cfg.steps, ctx=ctx, hooks=[evals],
                 step_args=(members.hparams, pool), chunk_size=cfg.chunk_size, log_every=every, desc="mixing_weights")

    hist = result.history
    sim_M = np.mean(hist["excess_risk"][-tail_points:], axis=0)           # tail-averaged SGD excess risk
    sim_C = sim_M.reshape(cfg.seeds, c).mean(0)

    # exact minibatch gradient variance at the trained weights (finite pool, Mixture draws)
    def pool_var(params, p1, a1):
        resid_N = pool["x"] @ params["w"] - pool["y"]
        p_K, a_K = _two(p1), _two(a1)
        return md.pool_gradient_variance(pool["x"] * resid_N[:, None], pool["domain"], p_K, a_K / p_K,
                                         cfg.batch_size)[1]

    var_M = np.asarray(jax.jit(jax.vmap(pool_var))(result.state.params, members.hparams["p1"], members.hparams["a1"]))
    var_C = var_M.reshape(cfg.seeds, c).mean(0)
    pred = {k: np.asarray(v) for k, v in predict_v(jnp.asarray(p1_C), jnp.asarray(a1_C)).items()}

    # --- ERM Monte Carlo over fresh pools: excess risk and generalization gap vs a_1 -------------
    a_line = np.linspace(cfg.grid_lo, 1 - cfg.grid_lo, cfg.erm_points).astype(np.float32)

    def erm_mc(key, a1):
        fresh = task.sample_pool(key, cfg.sizes)
        a_K = _two(a1)
        theta = md.weighted_least_squares(fresh["x"], fresh["y"], fresh["domain"], a_K)
        cov, w_star, s = task.arrays()
        delta = theta[None] - w_star
        pop = 0.5 * jnp.sum(a_K * (jnp.einsum("ki,kij,kj->k", delta, cov, delta) + s ** 2))
        train = md.weighted_objective(theta, fresh["x"], fresh["y"], fresh["domain"], a_K)
        return md.target_risk(task, theta, q_K) - bayes, pop - train

    keys = jax.random.split(jax.random.PRNGKey(cfg.data_seed + 1), cfg.erm_pools)
    risk_RxA, gap_RxA = (np.asarray(v) for v in jax.jit(jax.vmap(jax.vmap(erm_mc, (None, 0)), (0, None)))(keys, a_line))
    erm_pred = {k: np.asarray(v)
                for k, v in jax.vmap(lambda a1: md.erm_risk(task, _two(a1), cfg.sizes, q_K))(a_line).items()}

    # --- figures -------------------------------------------------------------------------------
    g = cfg.grid
    grid_sl = slice(0, g * g)
    best_grid = int(np.argmin(sim_C[grid_sl]))
    fig, axes = plots.figure(3, width=5.4, height=4.0)
    panels = [(pred["erm"][grid_sl], "closed form: ERM excess risk (product only)"),
              (pred["grad_var"][grid_sl], "closed form: gradient variance at θ∞"),
              (sim_C[grid_sl], "simulated SGD excess risk (tail mean)")]
    ext = (cfg.grid_lo, 1 - cfg.grid_lo, cfg.grid_lo, 1 - cfg.grid_lo)
    for ax, (vals, title) in zip(axes, panels):
        img = ax.imshow(np.log10(vals.reshape(g, g)), origin="lower", extent=ext, aspect="auto", cmap="viridis")
        plots.plt.colorbar(img, ax=ax, label="log10")
        ax.plot(axis, axis, "w--", lw=1, label="w = 1 (sampling only)")
        ax.axvline(natural_1, color="w", ls=":", lw=1, label="p = n/N (loss weights only)")
        ax.plot(p1_C[best_grid], a1_C[best_grid], "r*", ms=12, label="best simulated")
        ax.plot(p_joint, a_star, "wx", ms=9, mew=2, label="best predicted (joint)")
        ax.set_xlabel("sampling weight p₁ (curated)")
        ax.set_ylabel("product a₁ = p₁w₁ / Σ pw")
        ax.set_title(title, fontsize=8)
    axes[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    ctx.save_figure(fig, "complementary_roles")

    fig, (ax0, ax1, ax2) = plots.figure(3, width=4.8, height=3.8)
    ax0.loglog(pred["sgd"], sim_C, ".", alpha=0.6)
    lo, hi = min(pred["sgd"].min(), sim_C.min()), max(pred["sgd"].max(), sim_C.max())
    ax0.plot([lo, hi], [lo, hi], "k--", lw=1)
    for name, i in zip(ARMS, range(g * g, c)):
        ax0.plot(pred["sgd"][i], sim_C[i], "o", label=name)
    ax0.set_xlabel("predicted SGD excess risk")
    ax0.set_ylabel("simulated")
    ax0.legend(fontsize=7)
    ax0.set_title("SGD risk: closed form vs simulation", fontsize=9)
    se = lambda v: v.std(0, ddof=1) / np.sqrt(v.shape[0])  # noqa: E731  (standard error, sample std)
    ax1.errorbar(a_line, risk_RxA.mean(0), se(risk_RxA), fmt="o", ms=3, label="ERM excess risk (MC)")
    ax1.plot(a_line, erm_pred["risk"] - bayes, "-", label="closed form")
    ax1.errorbar(a_line, gap_RxA.mean(0), se(gap_RxA), fmt="s", ms=3, label="generalization gap (MC)")
    ax1.plot(a_line, erm_pred["gap"], "-", label="tr(H⁻¹J)")
    ax1.set_yscale("log")
    ax1.set_xlabel("product a₁")
    ax1.legend(fontsize=7)
    ax1.set_title(f"weighted least squares, {cfg.erm_pools} fresh pools", fontsize=9)
    ax2.loglog(pred["grad_var"], var_C, ".", alpha=0.6)
    lo, hi = min(pred["grad_var"].min(), var_C.min()), max(pred["grad_var"].max(), var_C.max())
    ax2.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax2.set_xlabel("closed form at θ∞ (population)")
    ax2.set_ylabel("exact on the pool at the trained θ")
    ax2.set_title("minibatch gradient variance", fontsize=9)
    for ax in (ax0, ax2):
        ax.xaxis.set_minor_formatter(plots.plt.NullFormatter())
        ax.yaxis.set_minor_formatter(plots.plt.NullFormatter())
    fig.tight_layout()
    ctx.save_figure(fig, "theory_vs_simulation")

    # --- numbers -------------------------------------------------------------------------------
    arm = {name: float(sim_C[g * g + i]) for i, name in enumerate(ARMS)}
    arm_pred = {name: float(pred["sgd"][g * g + i]) for i, name in enumerate(ARMS)}
    rel_err = np.abs(pred["sgd"] - sim_C) / sim_C
    erm_rel = np.abs(erm_pred["risk"] - bayes - risk_RxA.mean(0)) / risk_RxA.mean(0)
    gap_rel = np.abs(erm_pred["gap"] - gap_RxA.mean(0)) / gap_RxA.mean(0)
    ratio = np.asarray(pred["grad_var"][grid_sl]).reshape(g, g)
    head = {
        "best_a1_predicted": a_star, "best_p1_predicted": p_joint,
        "best_grid_p1_simulated": float(p1_C[best_grid]), "best_grid_a1_simulated": float(a1_C[best_grid]),
        "best_grid_excess_risk": float(sim_C[best_grid]),
        **{f"excess_risk_{k}": v for k, v in arm.items()},
        **{f"predicted_excess_risk_{k}": v for k, v in arm_pred.items()},
        "sgd_prediction_median_rel_err": float(np.median(rel_err)),
        "erm_risk_max_rel_err": float(erm_rel.max()), "gap_max_rel_err": float(gap_rel.max()),
        "grad_var_spread_along_rows_max": float(np.max(ratio.max(1) / ratio.min(1))),
        "grad_var_log_corr": float(np.corrcoef(np.log(pred["grad_var"]), np.log(var_C))[0, 1]),
        "members": members.size,
    }
    summary = (f"Jointly best mixing (predicted a1*={a_star:.2f}, p1={p_joint:.2f}) reaches SGD excess risk "
               f"{arm['joint']:.4g} vs {arm['sampling_only']:.4g} (sampling only), "
               f"{arm['loss_only']:.4g} (loss weights only) "
               f"and {arm['natural']:.4g} (natural mixing); the product a fixes the ERM risk (closed form within "
               f"{100 * erm_rel.max():.0f}% of Monte Carlo), the split sets the gradient variance (up to "
               f"{head['grad_var_spread_along_rows_max']:.1f}x along a row).")
    return {"headline": head, "summary": summary,
            "configs": [dict(p1=float(p), a1=float(a), simulated=float(s), predicted=float(pr))
                        for p, a, s, pr in zip(p1_C, a1_C, sim_C, pred["sgd"])]}


EXPERIMENT = Experiment(
    name="mixing_weights",
    reproduces="seed 002: complementary roles of sampling and loss weights (linear regression)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(), "full": Config(seeds=4, grid=15, steps=10_000, eval_every=250, erm_pools=1024,
                                               erm_points=25, chunk_size=1000)},
    cost={"quick": "~30 s CPU", "full": "~3 min CPU (estimate)"},
    run=run,
    order=40,
)
