"""Sampling weights p vs loss weights w on two domains (seed 002): training, statistics, figures.

The machinery behind `synthetic/mixing_weights.py` (linear Gaussian domains with closed forms,
`tasks.multidomain.MultiDomainTask`) and `synthetic/mixing_mlp.py` (a tanh MLP on nonlinear
teachers, `tasks.multidomain.TeacherDomains`). A configuration is the curated domain's sampling
weight p_1 and the product a_1 = p_1 w_1 / sum_k p_k w_k (`two(v1) = [1 - v1, v1]` for both
domains). `fit_mixture` trains seeds x configurations as ONE vmapped program of SGD on
`data.Mixture(sizes, p, a / p)` draws from the finite pool (p, a traced per member, members from
`train.arms.member_arms`: seed-major, common random numbers across configurations) and logs each
member's `excess_risk` every `every` steps; `tail_mean` averages its last evaluations.

Linear domains: `linear_predictor` gives the closed-form predicted SGD risk (weighted
least-squares ERM risk of the product a plus the online SGD excess over theta_inf(a), from
`multidomain.sgd_risk_curve`), the generalization gap and the fixed-point gradient variance;
`erm_monte_carlo` checks the ERM risk and gap on fresh pools; `linear_pool_grad_variance` is the
exact minibatch gradient variance on the pool at trained weights. MLP: `per_example_grads` and
`arm_gradient_variance` / `domain_moments` measure the same quantities from per-example
gradients. The figure and results functions turn these arrays into each experiment's figures and
headline numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lsb_jax import analysis, plots
from lsb_jax.claims import Claim, per_seed
from lsb_jax.data import Mixture
from lsb_jax.models.mlp import mlp_apply
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.tasks import multidomain as md
from lsb_jax.train import EvalHook, Members, ensemble_init, fit, init_state, make_sampled_step, split_ensemble
from lsb_jax.train.arms import member_arms

ARMS = ("natural", "sampling_only", "loss_only", "joint")


def arm_claims(setting: str) -> tuple[Claim, ...]:
    """Seed 002's comparisons of the named arms (all at the product a* but natural mixing), paired over
    seeds: the split of a* into sampling and loss weights sets the gradient variance, the product
    the risk, so the joint prescription should beat either weight alone and natural mixing."""
    src = f"abstract ({setting})"
    return (
        Claim("joint_lower_variance_than_loss_only", "002", src,
              "sampling + loss weights (joint) give lower gradient variance than loss weights alone at the same a*",
              "grad_variance", "joint", "loss_only"),
        Claim("joint_lower_variance_than_sampling_only", "002", src,
              "the joint split (p ~ a* sqrt(m)) gives lower gradient variance than sampling weights alone",
              "grad_variance", "joint", "sampling_only"),
        Claim("joint_lower_risk_than_loss_only", "002", src,
              "the joint weights reach lower SGD excess risk than loss weights alone", "excess_risk", "joint",
              "loss_only"),
        Claim("joint_lower_risk_than_sampling_only", "002", src,
              "the joint weights reach lower SGD excess risk than sampling weights alone", "excess_risk", "joint",
              "sampling_only"),
        Claim("joint_beats_natural_mixing", "002", src,
              "the joint weights generalize better than natural mixing (p = n/N, w = 1)", "excess_risk", "joint",
              "natural"),
    )


def arm_tables(risk_SxA, grad_var_SxA, base_seeds: Sequence[int]) -> dict:
    """The per-seed tables of `arm_claims`: [S, ARMS] values (seed-major over the base seeds)."""
    return {"excess_risk": per_seed(np.asarray(risk_SxA).T, ARMS, base_seeds),
            "grad_variance": per_seed(np.asarray(grad_var_SxA).T, ARMS, base_seeds)}


def two(v1):
    """The two-domain weight vector [1 - v1, v1] (v1: the curated domain's share)."""
    return jnp.stack([1.0 - v1, v1])


def arm_configs(natural_1: float, a_star: float, p_joint: float) -> dict[str, tuple[float, float]]:
    """The named arms as (p_1, a_1): natural mixing (p = n/N, w = 1), and at the product a*:
    sampling only (p = a*, w = 1), loss weights only (p = n/N, w = a*/p), joint (p = p_joint)."""
    return {"natural": (natural_1, natural_1), "sampling_only": (a_star, a_star), "loss_only": (natural_1, a_star),
            "joint": (p_joint, a_star)}


def grid_configs(p_axis: Sequence[float], a_axis: Sequence[float]) -> list[tuple[float, float]]:
    """Every (p_1, a_1) of the two axes, a_1-major (row = one product, column = one split)."""
    return [(p1, a1) for a1 in a_axis for p1 in p_axis]


def mixing_members(seed: int | Sequence[int], num_seeds: int, configs: Sequence[tuple[float, float]]) -> Members:
    """Seeds (of each base seed) x configurations (seed-major) with traced hparams p1, a1 (float32)
    and "base", the index of the member's base seed (which pool of `base_pools` it trains on)."""
    members = member_arms(num_seeds, seed, [{"p1": float(p1), "a1": float(a1)} for p1, a1 in configs])
    base = jnp.asarray([lab["seed"] // num_seeds for lab in members.labels], jnp.int32)
    return dataclasses.replace(members, hparams={**members.hparams, "base": base})


def base_pools(task, data_seed: int, sizes: Sequence[int], base_seeds: Sequence[int]) -> dict:
    """One finite pool per base seed b, drawn with fold_in(PRNGKey(data_seed), b) -> leaves [R, N, ...]:
    a base seed replicates the data draw too, not only the inits and SGD noise (the task itself,
    its teachers and covariances, is the data seed's)."""
    pools = [task.sample_pool(jax.random.fold_in(jax.random.PRNGKey(data_seed), b), sizes) for b in base_seeds]
    return {k: jnp.stack([p[k] for p in pools]) for k in pools[0]}


def pool_of(pools: dict, r: int) -> dict:
    """Base seed number r's pool of `base_pools`."""
    return {k: v[r] for k, v in pools.items()}


def tail_points(tail: float, steps: int, every: int) -> int:
    """How many of the evaluations (every `every` of `steps`) make up the last `tail` fraction (>= 1)."""
    return max(1, int(round(tail * steps / every)))


def tail_mean(values_TxM, points: int, num_seeds: int) -> np.ndarray:
    """The mean of the last `points` evaluations per member, reshaped seed-major -> [S, C]."""
    return np.asarray(values_TxM)[-points:].mean(0).reshape(num_seeds, -1)


def fit_mixture(ctx, members: Members, pools: dict, sizes: Sequence[int], *, init_params: Callable,
                loss_fn: Callable, evaluate: Callable, eval_args: tuple = (), lr: float, batch_size: int, steps: int,
                every: int, chunk_size: int, desc: str):
    """SGD (lr) of every member on `Mixture(sizes, p, a / p)` batches of its base seed's pool
    (`base_pools`: {"x", "y"} [R, N, ...], domains in order; member hparam "base"), one vmapped
    `train.fit` on `ctx`; `evaluate(params_M, *eval_args) -> [M]` is logged as `excess_risk` every
    `every` steps (and at the start). Returns the `FitResult`."""
    opt = make_optimizer(OptimConfig(name="sgd", lr=lr), steps)

    def member_init(key, hp):
        return init_state(init_params, opt.tx, key)

    def member_step(state, hp, pools):
        p_K, a_K = two(hp["p1"]), two(hp["a1"])
        mixture = Mixture(sizes, p_K, a_K / p_K)   # traced weights: one program for every member

        def sample_batch(key, step):
            draw = mixture.sample(key, step, batch_size)
            r = hp["base"]
            return {"x": pools["x"][r, draw.index], "y": pools["y"][r, draw.index], "loss_weight": draw.weight}

        return make_sampled_step(loss_fn, opt, sample_batch)(state)

    evals = EvalHook(lambda s, *args: {"excess_risk": evaluate(s.params, *args)}, every=every, args=eval_args)
    step, state, hparams = split_ensemble(member_step, members, ensemble_init(member_init, members))
    return fit(step, state, steps, ctx=ctx, hooks=[evals], step_args=(hparams, pools), chunk_size=chunk_size,
               log_every=every, desc=desc)


# --- linear domains: closed forms -----------------------------------------------------------------

def linear_predictor(task: md.MultiDomainTask, q_K, bayes: float, *, sizes: Sequence[int], lr: float,
                     batch_size: int, steps: int, every: int, tail: int) -> Callable:
    """A jitted predict(p1_C, a1_C) -> {"erm", "gap", "sgd", "grad_var"} [C] of the closed forms.

    erm: the weighted least-squares excess risk over `bayes` (`multidomain.erm_risk`, product a
    only); gap: its generalization gap; sgd: erm + the exact expected online SGD risk averaged over
    the last `tail` evaluations minus its limit (`multidomain.sgd_risk_curve`), over `bayes`;
    grad_var: the population minibatch gradient variance at theta_inf(a) (`gradient_variance`).
    """
    def predict(p1, a1):
        p_K, a_K = two(p1), two(a1)
        w_K = a_K / p_K
        erm = md.erm_risk(task, a_K, sizes, q_K)
        curve = md.sgd_risk_curve(task, p_K, w_K, q_K, lr=lr, batch_size=batch_size, steps=steps, every=every)
        sgd_excess = jnp.mean(curve[-tail:]) - erm["risk_inf"]
        theta_inf = md.fixed_point(task, a_K)
        return {"erm": erm["risk"] - bayes, "gap": erm["gap"], "sgd": erm["risk"] + sgd_excess - bayes,
                "grad_var": md.gradient_variance(task, theta_inf, p_K, w_K, batch_size)}

    return jax.jit(jax.vmap(predict))


def best_joint(task: md.MultiDomainTask, predict: Callable, a_line) -> tuple[float, float]:
    """(a*, p*): over the products `a_line`, each at its variance-optimal split p ∝ a sqrt(m)
    (`multidomain.optimal_split`), the one of lowest predicted SGD risk."""
    p_opt_F = jax.vmap(lambda a1: md.optimal_split(task, two(a1))[0][1])(a_line)
    best = int(jnp.argmin(predict(p_opt_F, a_line)["sgd"]))
    return float(a_line[best]), float(p_opt_F[best])


def linear_pool_grad_variance(params_M: dict, members: Members, pools: dict, batch_size: int) -> np.ndarray:
    """Each member's exact minibatch gradient variance on its base seed's pool (`base_pools`; `Mixture`
    draws at its own p, w) at its weights params_M["w"] [M, D], from the per-example gradients
    x (x.w - y) -> [M]."""
    pools = {k: jnp.asarray(v) for k, v in pools.items()}

    def pool_var(params, p1, a1, r):
        x, y, domain = pools["x"][r], pools["y"][r], pools["domain"][r]
        resid_N = x @ params["w"] - y
        p_K, a_K = two(p1), two(a1)
        return md.pool_gradient_variance(x * resid_N[:, None], domain, p_K, a_K / p_K, batch_size)[1]

    hp = members.hparams
    return np.asarray(jax.jit(jax.vmap(pool_var))(params_M, hp["p1"], hp["a1"], hp["base"]))


def erm_monte_carlo(task: md.MultiDomainTask, key, num_pools: int, a_line, sizes: Sequence[int], q_K,
                    bayes: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares on `num_pools` fresh pools at each product a_1 of `a_line`: its target
    excess risk over `bayes` and its generalization gap (population minus training weighted
    objective) -> ([R, A], [R, A])."""
    def erm_mc(key, a1):
        fresh = task.sample_pool(key, sizes)
        a_K = two(a1)
        theta = md.weighted_least_squares(fresh["x"], fresh["y"], fresh["domain"], a_K)
        cov, w_star, s = task.arrays()
        delta = theta[None] - w_star
        pop = 0.5 * jnp.sum(a_K * (jnp.einsum("ki,kij,kj->k", delta, cov, delta) + s ** 2))
        train = md.weighted_objective(theta, fresh["x"], fresh["y"], fresh["domain"], a_K)
        return md.target_risk(task, theta, q_K) - bayes, pop - train

    keys = jax.random.split(key, num_pools)
    risk, gap = jax.jit(jax.vmap(jax.vmap(erm_mc, (None, 0)), (0, None)))(keys, a_line)
    return np.asarray(risk), np.asarray(gap)


@dataclasses.dataclass(frozen=True)
class LinearComparison:
    """The mixing_weights arrays: the g x g grid (a_1-major) then the `ARMS`, as configurations C."""

    grid: int
    axis: np.ndarray        # [g] the grid's p_1 (= a_1) values
    p1_C: np.ndarray
    a1_C: np.ndarray
    natural_1: float
    a_star: float           # predicted best product
    p_joint: float          # its variance-optimal split
    bayes: float
    sim_C: np.ndarray       # simulated tail-mean SGD excess risk, mean over seeds
    var_C: np.ndarray       # exact pool gradient variance at the trained weights, mean over seeds
    pred: dict              # `linear_predictor` at the configurations
    a_line: np.ndarray      # [A] products of the ERM Monte Carlo
    risk_RxA: np.ndarray
    gap_RxA: np.ndarray
    erm_pred: dict          # `multidomain.erm_risk` at a_line
    members: int

    @property
    def best_grid(self) -> int:
        return int(np.argmin(self.sim_C[:self.grid ** 2]))


def plot_complementary_roles(c: LinearComparison, grid_lo: float):
    """Heatmaps over (p_1, a_1) of the closed-form ERM excess risk, the closed-form gradient variance
    and the simulated SGD risk, with the sampling-only diagonal, the loss-only column, the best
    simulated and the predicted joint configuration marked."""
    g, best = c.grid, c.best_grid
    grid_sl = slice(0, g * g)
    fig, axes = plots.figure(3, width=5.4, height=4.0)
    panels = [(c.pred["erm"][grid_sl], "closed form: ERM excess risk (product only)"),
              (c.pred["grad_var"][grid_sl], "closed form: gradient variance at θ∞"),
              (c.sim_C[grid_sl], "simulated SGD excess risk (tail mean)")]
    ext = (grid_lo, 1 - grid_lo, grid_lo, 1 - grid_lo)
    for ax, (vals, title) in zip(axes, panels):
        img = ax.imshow(np.log10(vals.reshape(g, g)), origin="lower", extent=ext, aspect="auto", cmap="viridis")
        plots.plt.colorbar(img, ax=ax, label="log10")
        ax.plot(c.axis, c.axis, "w--", lw=1, label="w = 1 (sampling only)")
        ax.axvline(c.natural_1, color="w", ls=":", lw=1, label="p = n/N (loss weights only)")
        ax.plot(c.p1_C[best], c.a1_C[best], "r*", ms=12, label="best simulated")
        ax.plot(c.p_joint, c.a_star, "wx", ms=9, mew=2, label="best predicted (joint)")
        ax.set_xlabel("sampling weight p₁ (curated)")
        ax.set_ylabel("product a₁ = p₁w₁ / Σ pw")
        ax.set_title(title, fontsize=8)
    axes[0].legend(fontsize=6, loc="upper left")
    return fig


def _identity_scatter(ax, x, y):
    ax.loglog(x, y, ".", alpha=0.6)
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)


def plot_theory_vs_simulation(c: LinearComparison):
    """Predicted vs simulated SGD risk per configuration (arms marked); the ERM excess risk and gap
    vs a_1 (Monte Carlo ± s.e. vs closed form); pool gradient variance vs the closed form at θ∞."""
    g = c.grid
    fig, (ax0, ax1, ax2) = plots.figure(3, width=4.8, height=3.8)
    _identity_scatter(ax0, c.pred["sgd"], c.sim_C)
    for name, i in zip(ARMS, range(g * g, len(c.sim_C))):
        ax0.plot(c.pred["sgd"][i], c.sim_C[i], "o", label=name)
    ax0.set_xlabel("predicted SGD excess risk")
    ax0.set_ylabel("simulated")
    ax0.legend(fontsize=7)
    ax0.set_title("SGD risk: closed form vs simulation", fontsize=9)
    se = analysis.standard_error
    ax1.errorbar(c.a_line, c.risk_RxA.mean(0), se(c.risk_RxA), fmt="o", ms=3, label="ERM excess risk (MC)")
    ax1.plot(c.a_line, c.erm_pred["risk"] - c.bayes, "-", label="closed form")
    ax1.errorbar(c.a_line, c.gap_RxA.mean(0), se(c.gap_RxA), fmt="s", ms=3, label="generalization gap (MC)")
    ax1.plot(c.a_line, c.erm_pred["gap"], "-", label="tr(H⁻¹J)")
    plots.log_axis(ax1)
    ax1.set_xlabel("product a₁")
    ax1.legend(fontsize=7)
    ax1.set_title(f"weighted least squares, {len(c.risk_RxA)} fresh pools", fontsize=9)
    _identity_scatter(ax2, c.pred["grad_var"], c.var_C)
    ax2.set_xlabel("closed form at θ∞ (population)")
    ax2.set_ylabel("exact on the pool at the trained θ")
    ax2.set_title("minibatch gradient variance", fontsize=9)
    for ax in (ax0, ax2):
        ax.xaxis.set_minor_formatter(plots.plt.NullFormatter())
        ax.yaxis.set_minor_formatter(plots.plt.NullFormatter())
    return fig


def linear_results(c: LinearComparison) -> dict:
    """Headline (best configurations, each arm's simulated and predicted risk, relative errors of the
    closed forms, the gradient variance's spread along a row and its log correlation), summary and
    the per-configuration table of mixing_weights."""
    g, best = c.grid, c.best_grid
    arm = {name: float(c.sim_C[g * g + i]) for i, name in enumerate(ARMS)}
    arm_pred = {name: float(c.pred["sgd"][g * g + i]) for i, name in enumerate(ARMS)}
    rel_err = np.abs(c.pred["sgd"] - c.sim_C) / c.sim_C
    erm_rel = np.abs(c.erm_pred["risk"] - c.bayes - c.risk_RxA.mean(0)) / c.risk_RxA.mean(0)
    gap_rel = np.abs(c.erm_pred["gap"] - c.gap_RxA.mean(0)) / c.gap_RxA.mean(0)
    ratio = np.asarray(c.pred["grad_var"][:g * g]).reshape(g, g)
    head = {
        "best_a1_predicted": c.a_star, "best_p1_predicted": c.p_joint,
        "best_grid_p1_simulated": float(c.p1_C[best]), "best_grid_a1_simulated": float(c.a1_C[best]),
        "best_grid_excess_risk": float(c.sim_C[best]),
        **{f"excess_risk_{k}": v for k, v in arm.items()},
        **{f"predicted_excess_risk_{k}": v for k, v in arm_pred.items()},
        "sgd_prediction_median_rel_err": float(np.median(rel_err)),
        "erm_risk_max_rel_err": float(erm_rel.max()), "gap_max_rel_err": float(gap_rel.max()),
        "grad_var_spread_along_rows_max": float(np.max(ratio.max(1) / ratio.min(1))),
        "grad_var_log_corr": float(np.corrcoef(np.log(c.pred["grad_var"]), np.log(c.var_C))[0, 1]),
        "members": c.members,
    }
    summary = (f"Jointly best mixing (predicted a1*={c.a_star:.2f}, p1={c.p_joint:.2f}) reaches SGD excess risk "
               f"{arm['joint']:.4g} vs {arm['sampling_only']:.4g} (sampling only), "
               f"{arm['loss_only']:.4g} (loss weights only) "
               f"and {arm['natural']:.4g} (natural mixing); the product a fixes the ERM risk (closed form within "
               f"{100 * erm_rel.max():.0f}% of Monte Carlo), the split sets the gradient variance (up to "
               f"{head['grad_var_spread_along_rows_max']:.1f}x along a row).")
    return {"headline": head, "summary": summary,
            "configs": [dict(p1=float(p), a1=float(a), simulated=float(s), predicted=float(pr))
                        for p, a, s, pr in zip(c.p1_C, c.a1_C, c.sim_C, c.pred["sgd"])]}


# --- MLP on nonlinear teachers: measured gradient statistics --------------------------------------

def mlp_loss(params: dict, batch: dict) -> jax.Array:
    """Per-example squared error / 2 of the tanh MLP on {"x", "y"} -> [B]."""
    return 0.5 * (mlp_apply(params, batch["x"], "tanh")[:, 0] - batch["y"]) ** 2


def mlp_test_risk(q_K, test_size: int) -> Callable:
    """risk(params, test) -> the q-weighted noise-free test risk of the tanh MLP (test["f"]: teacher
    outputs, `test_size` points per domain)."""
    def risk(params, test):
        err_N = 0.5 * (mlp_apply(params, test["x"], "tanh")[:, 0] - test["f"]) ** 2
        return jnp.sum(q_K * jax.ops.segment_sum(err_N, test["domain"], 2) / test_size)
    return risk


def per_example_grads(loss_fn: Callable, pool: dict) -> Callable:
    """A jitted grads(params) -> [N, P]: each pool example's loss gradient, raveled (`ravel_pytree`)."""
    def one(params, x, y):
        return ravel_pytree(jax.grad(lambda p: loss_fn(p, {"x": x[None], "y": y[None]})[0])(params))[0]
    return jax.jit(lambda params: jax.vmap(lambda x, y: one(params, x, y))(pool["x"], pool["y"]))


def member_params(params_M: dict, m: int) -> dict:
    """Member m of a stacked (vmapped) parameter tree."""
    return jax.tree_util.tree_map(lambda v: v[m], params_M)


def domain_moments(params_M: dict, members: Sequence[int], grads: Callable, domain_N) -> np.ndarray:
    """m_k = E_k ||g||^2 per domain on the pool (`multidomain.pool_domain_moments`), averaged over
    the listed members -> [K=2]."""
    return np.mean([np.asarray(md.pool_domain_moments(grads(member_params(params_M, m)), domain_N, 2))
                    for m in members], axis=0)


def arm_gradient_variance(params_M: dict, members: Members, configs: Sequence[tuple[float, float]],
                          grads: Sequence[Callable], pools: dict, batch_size: int) -> np.ndarray:
    """Each member's exact minibatch gradient variance on its base seed's pool at its own (p_1, a_1)
    (`multidomain.pool_gradient_variance` of per-example gradients; grads[r] those of pool r) ->
    [S, C] (seed-major members)."""
    c = len(configs)
    out_SxC = np.zeros((members.size // c, c))
    for m in range(members.size):
        s, i = divmod(m, c)
        r = int(members.hparams["base"][m])
        p_K, a_K = two(jnp.float32(configs[i][0])), two(jnp.float32(configs[i][1]))
        out_SxC[s, i] = float(md.pool_gradient_variance(grads[r](member_params(params_M, m)), pools["domain"][r], p_K,
                                                        a_K / p_K, batch_size)[1])
    return out_SxC


@dataclasses.dataclass(frozen=True)
class MLPComparison:
    """The mixing_mlp arrays: the phase-1 grid and the phase-2 arms at a*."""

    p_axis: np.ndarray           # [P] the grid's p_1 (n_1/N first)
    a_axis: np.ndarray           # [A] the grid's a_1
    risk_AxP: np.ndarray         # phase-1 tail-mean test excess risk, mean over seeds
    m_K: np.ndarray              # per-domain gradient second moments at the sampling-only a* models
    p_joint: float
    risk_TxSxC: np.ndarray       # phase-2 test excess risk curves
    steps_T: np.ndarray
    tail_SxC: np.ndarray         # phase-2 tail-mean test excess risk
    grad_var_SxC: np.ndarray     # phase-2 pool gradient variance at the final weights
    members: int

    @property
    def diagonal(self) -> np.ndarray:
        """The sampling-only risks (p = a: row i, column 1 + i) -> [A]."""
        return sampling_only_diagonal(self.risk_AxP)

    @property
    def i_star(self) -> int:
        """The row of a*: the best product on the sampling-only diagonal."""
        return int(np.argmin(self.diagonal))

    @property
    def a_star(self) -> float:
        return float(self.a_axis[self.i_star])


def sampling_only_diagonal(risk_AxP) -> np.ndarray:
    """The sampling-only entries of a phase-1 grid whose column 0 is p = n/N and column 1 + i is
    p_1 = a_1 of row i -> [A]."""
    return np.array([risk_AxP[i, 1 + i] for i in range(len(risk_AxP))])


def plot_mlp(c: MLPComparison):
    """Phase-1 heatmap (diagonal, loss-only column and a* marked), phase-2 risk curves per arm, and
    each arm's test risk and gradient variance (± s.e.)."""
    i_star, (s, c2) = c.i_star, c.tail_SxC.shape
    fig, (ax0, ax1, ax2) = plots.figure(3, width=4.8, height=3.8)
    img = ax0.imshow(np.log10(c.risk_AxP), origin="lower", aspect="auto", cmap="viridis")
    plots.plt.colorbar(img, ax=ax0, label="log10 test excess risk")
    ax0.set_xticks(range(len(c.p_axis)), [f"{v:.2f}" for v in c.p_axis], fontsize=6, rotation=60)
    ax0.set_yticks(range(len(c.a_axis)), [f"{v:.2f}" for v in c.a_axis], fontsize=6)
    ax0.plot(np.arange(len(c.a_axis)) + 1, np.arange(len(c.a_axis)), "w--", lw=1, label="w = 1 (sampling only)")
    ax0.axvline(0, color="w", ls=":", lw=1.5, label="p = n/N (loss weights only)")
    ax0.plot(1 + i_star, i_star, "r*", ms=12, label="a* (best sampling only)")
    ax0.set_xlabel("sampling weight p₁ (curated)")
    ax0.set_ylabel("product a₁")
    ax0.legend(fontsize=6, loc="upper left")
    ax0.set_title("phase 1: test risk (tail mean)", fontsize=9)
    for i, name in enumerate(ARMS):
        ax1.plot(c.steps_T, c.risk_TxSxC[:, :, i].mean(1), label=name)
    plots.log_axis(ax1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("test excess risk")
    ax1.legend(fontsize=7)
    ax1.set_title(f"phase 2 at a₁* = {c.a_star:.2f} ({s} seeds)", fontsize=9)
    x = np.arange(c2)
    se = analysis.standard_error
    ax2.bar(x - 0.2, c.tail_SxC.mean(0), 0.4, yerr=se(c.tail_SxC), label="test excess risk")
    ax2b = ax2.twinx()
    ax2b.bar(x + 0.2, c.grad_var_SxC.mean(0), 0.4, yerr=se(c.grad_var_SxC), color="C1", label="gradient variance")
    ax2.set_xticks(x, ARMS, fontsize=7, rotation=20)
    ax2.set_ylabel("test excess risk")
    ax2b.set_ylabel("minibatch gradient variance", color="C1")
    ax2.set_title("per arm (± s.e.)", fontsize=9)
    return fig


def mlp_results(c: MLPComparison) -> dict:
    """Headline (a*, the joint split, m_k, each arm's risk ± s.e. and gradient variance, the grid's
    best per lever and its spread along a row), summary and the phase-1 grid table of mixing_mlp."""
    risk_mean, risk_se = c.tail_SxC.mean(0), analysis.standard_error(c.tail_SxC)
    var_mean = c.grad_var_SxC.mean(0)
    a_star, p_joint = c.a_star, c.p_joint
    row_spread = float(np.max(c.risk_AxP.max(1) / c.risk_AxP.min(1)))
    head = {
        "a1_star": a_star, "p1_joint": p_joint, "m_web": float(c.m_K[0]), "m_curated": float(c.m_K[1]),
        **{f"excess_risk_{n}": float(risk_mean[i]) for i, n in enumerate(ARMS)},
        **{f"excess_risk_{n}_se": float(risk_se[i]) for i, n in enumerate(ARMS)},
        **{f"grad_var_{n}": float(var_mean[i]) for i, n in enumerate(ARMS)},
        "grid_best_sampling_only": float(c.diagonal.min()), "grid_best_loss_only": float(c.risk_AxP[:, 0].min()),
        "grid_best_any": float(c.risk_AxP.min()), "grid_risk_spread_along_rows_max": row_spread,
        "members": c.members,
    }
    summary = (f"MLP on nonlinear domains: at the tuned product a1*={a_star:.2f}, the joint split (p1={p_joint:.2f}, "
               f"from measured gradient moments) reaches test excess risk {risk_mean[3]:.4g}±{risk_se[3]:.2g} with "
               f"gradient variance {var_mean[3]:.3g}, vs sampling only {risk_mean[1]:.4g}±{risk_se[1]:.2g} "
               f"({var_mean[1]:.3g}), loss weights only {risk_mean[2]:.4g}±{risk_se[2]:.2g} ({var_mean[2]:.3g}) and "
               f"natural mixing {risk_mean[0]:.4g}; the same product with another split changes the risk up to "
               f"{row_spread:.1f}x.")
    grid = grid_configs(c.p_axis, c.a_axis)
    return {"headline": head, "summary": summary,
            "grid": [dict(p1=float(p), a1=float(a), risk=float(r)) for (p, a), r in zip(grid, c.risk_AxP.ravel())]}
