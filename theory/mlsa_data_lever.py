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
Cost: quick ~45 s, full ~5 min on 2 CPU cores.

    lsb run mlsa_data_lever --config quick --set upsample_factor=3
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import plots
from lsb_jax.experiments import Experiment
from lsb_jax.theory import dynamics, learning_times, mlsa, sweeps
from lsb_jax.theory.setup import ModelConfig
from lsb_jax.tracking import TrajectoryStore, evenly_spaced_steps, pool_scorer, selection_counts
from lsb_jax.train.guard import TrainingDiverged, trajectory_divergence


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig(init="ansatz", init_noise=0.05, steps=8000, record_every=10)
    gammas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
    rhos: tuple[float, ...] = (0.0, 0.02, 0.04, 0.06)
    seeds: int = 3
    seed: int = 0
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


def _match(x_grid, h_grid, h_target):
    """Smallest x with h(x) = h_target on a piecewise-linear h over the grid (NaN if out of range)."""
    for i in range(len(x_grid) - 1):
        lo, hi = h_grid[i], h_grid[i + 1]
        if min(lo, hi) <= h_target <= max(lo, hi) and hi != lo:
            return float(x_grid[i] + (h_target - lo) / (hi - lo) * (x_grid[i + 1] - x_grid[i]))
    return float("nan")


def _seconds_per_step(method: str, spec, p0, lr, rho, steps=2000) -> float:
    run = dynamics.simulator(mlsa.population_loss, num_steps=steps, record_every=steps, method=method)
    jax.block_until_ready(run(p0, spec, lr, rho))
    t = time.perf_counter()
    jax.block_until_ready(run(p0, spec, lr, rho))
    return (time.perf_counter() - t) / steps


def distribution_lever(cfg: Config):
    m = cfg.model
    lam = np.asarray(m.eigenvalues)
    common = dict(seeds=cfg.seeds, heads=m.heads, init=m.init_spec(), lr=m.lr, num_steps=m.steps,
                  record_every=m.record_every, fraction=m.fraction, seed=cfg.seed)
    specs = [m.spectrum(omega=mlsa.reweighted_omega(lam, g)) for g in cfg.gammas]
    gd = sweeps.sweep(specs, rhos=(0.0,), method="gd", **common)                       # [G, 1, n]
    sam = sweeps.sweep([m.spectrum()], rhos=cfg.rhos, method="sam", **common)          # [1, P, n]
    base = m.spectrum()
    test_loss = jax.vmap(lambda p: mlsa.population_loss(p, base))
    flat = lambda tree: jax.tree.map(lambda x: x.reshape((-1,) + x.shape[3:]), tree)
    gd_test = np.asarray(test_loss(flat(gd.params))).reshape(len(cfg.gammas), cfg.seeds) / float(mlsa.null_loss(base))
    sam_test = np.asarray(test_loss(flat(sam.params))).reshape(len(cfg.rhos), cfg.seeds) / float(mlsa.null_loss(base))
    h_gd = np.nanmean(gd.entropy[:, 0], -1)                                            # [G]
    h_sam = np.nanmean(sam.entropy[0], -1)                                             # [P]
    gamma_star = [_match(cfg.gammas, h_gd, h) for h in h_sam]
    p0 = mlsa.init_params(jax.random.PRNGKey(cfg.seed), m.heads, m.dim, m.init_spec())
    cost = {"gd_s_per_step": _seconds_per_step("gd", base, p0, m.lr, 0.0),
            "sam_s_per_step": _seconds_per_step("sam", base, p0, m.lr, cfg.rhos[-1])}
    return gd, sam, h_gd, h_sam, gamma_star, gd_test, sam_test, cost


def pool_pipeline(cfg: Config, ctx):
    """Proxy -> trajectories -> k-means -> upsample -> GD; returns per-arm times, entropies, test losses."""
    m = cfg.model
    spec_n = mlsa.spectrum(m.eigenvalues, context=cfg.pool_context, noise=m.noise)
    seqs = mlsa.sample_sequences(jax.random.PRNGKey(cfg.pool_seed), spec_n, cfg.pool_size, cfg.pool_context)
    pool = {"c": seqs["c"], "xq": seqs["xq"], "yq": seqs["yq"], "weight": jnp.ones(cfg.pool_size)}
    params0 = sweeps.init_members(cfg.seeds, m.heads, m.dim, m.init_spec(), cfg.seed)

    # proxy: GD on the pool, every example's loss at K evenly spaced steps (seed 0's run)
    proxy_steps = max(cfg.track_points, int(m.steps * cfg.proxy_fraction))
    steps_K = evenly_spaced_steps(proxy_steps, cfg.track_points)
    store = TrajectoryStore(ctx.dir / "trajectories.npz", cfg.pool_size, steps_K)
    score = jax.jit(pool_scorer(mlsa.example_loss, 512))
    params = jax.tree.map(lambda x: x[0], params0)
    done, mean_K = 0, []
    for s in steps_K:
        if s > done:
            seg = dynamics.simulator(dynamics.pool_loss, num_steps=s - done, record_every=s - done, method="gd")
            params = seg(params, pool, m.lr, 0.0).params
            done = s
        losses = np.asarray(score(params, pool))
        mean_K.append(float(losses.mean()))
        if trajectory_divergence(np.asarray(mean_K)[None])[0]:   # never cluster a diverged proxy's losses
            raise TrainingDiverged(f"pool proxy: mean loss diverged at step {s} ({mean_K[-1]:.4g}, "
                                   f"started at {mean_K[0]:.4g}); lower model.lr")
        store.write(s, losses, save=False)
    store.save()
    select = {s: selection_counts(store.losses, s, factor=cfg.upsample_factor, features=cfg.cluster_on, seed=cfg.seed)
              for s in ("uniform", "hard", "easy", "random")}       # the LLM pipeline's selections
    hard = select["hard"][1]
    arms = {"GD": select["uniform"][0],
            **{f"GD, {s} x{cfg.upsample_factor}": select[s][0] for s in ("hard", "easy", "random")}}

    def train(method, weights_AxP, rho):
        run = dynamics.simulator(dynamics.pool_loss, num_steps=m.steps, record_every=m.record_every, method=method)
        data_axes = {"c": None, "xq": None, "yq": None, "weight": 0}
        over = jax.vmap(jax.vmap(run, in_axes=(0, None, None, None)), in_axes=(None, data_axes, None, None))
        return over(params0, dict(pool, weight=jnp.asarray(weights_AxP, jnp.float32)), m.lr, rho)

    out_gd = train("gd", np.stack(list(arms.values())), 0.0)
    out_sam = train("sam", np.ones((1, cfg.pool_size)), cfg.pool_rho)
    names = list(arms) + [f"SAM rho={cfg.pool_rho}"]
    feats = np.concatenate([np.asarray(out_gd.features), np.asarray(out_sam.features)])          # [A, n, R+1, D]
    finals = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out_gd.params, out_sam.params)
    targets = np.stack([mlsa.pool_optimal_features(dict(pool, weight=w))
                        for w in list(arms.values()) + [np.ones(cfg.pool_size)]])
    times = learning_times.crossing_times(np.asarray(out_gd.steps[0, 0]), feats, targets[:, None, :], m.fraction)
    diverged = trajectory_divergence(np.concatenate([np.asarray(out_gd.loss), np.asarray(out_sam.loss)]))  # [A, n]
    times[diverged] = np.nan
    test = jax.vmap(jax.vmap(lambda p: mlsa.population_loss(p, spec_n)))(finals)
    test = np.asarray(test) / float(mlsa.null_loss(spec_n))
    # which directions the hard cluster loads on: mean w_i^2 (hard) / mean w_i^2 (all)
    w2 = np.asarray(seqs["w"], np.float64) ** 2
    loading = w2[hard].mean(0) / w2.mean(0)
    return names, times, learning_times.entropy(times), test, hard, loading, store, steps_K, int(diverged.sum())


def run(cfg: Config, ctx) -> dict:
    m = cfg.model
    gd, sam, h_gd, h_sam, gamma_star, gd_test, sam_test, cost = distribution_lever(cfg)
    names, times, ent, test, hard, loading, store, steps_K, pool_diverged = pool_pipeline(cfg, ctx)

    fig, (ax0, ax1, ax2) = plots.figure(3)
    ax0.errorbar(cfg.gammas, h_gd, yerr=np.nanstd(gd.entropy[:, 0], -1), marker="o", label="GD, Omega_gamma")
    for p, rho in enumerate(cfg.rhos[1:], start=1):
        ax0.axhline(h_sam[p], color=f"C{p}", ls="--", lw=1, label=f"SAM rho={rho:g} (gamma*={gamma_star[p]:.2f})")
    ax0.set(xlabel="gamma (omega_i ~ lam_i^-gamma)", ylabel="entropy of learning times",
            title="(a) distribution lever vs SAM")
    ax0.legend(fontsize=6)
    lam = np.asarray(m.eigenvalues)
    for j, g in enumerate(cfg.gammas):
        ax1.plot(lam, np.nanmean(gd.times[j, 0], 0), marker="o", color=f"C{j}", label=f"GD gamma={g:g}")
    ax1.plot(lam, np.nanmean(sam.times[0, -1], 0), marker="s", color="k", ls="--", label=f"SAM rho={cfg.rhos[-1]:g}")
    ax1.set(xscale="log", yscale="log", xlabel="eigenvalue lam_i", ylabel="learning time (steps)",
            title="(a) learning time vs eigenvalue")
    ax1.legend(fontsize=6)
    ax2.bar(range(len(names)), np.nanmean(ent, -1), yerr=np.nanstd(ent, -1), color=[f"C{i}" for i in range(len(names))])
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels(names, rotation=30, ha="right", fontsize=6)
    ax2.set(ylabel="entropy of learning times", title="(b) pool: proxy -> k-means -> upsample")
    ctx.save_figure(fig, "data_lever")
    fig, (ax,) = plots.figure(1)
    plots.trajectory_heatmap(ax, store.losses, steps_K, title=f"proxy per-example losses ({int(hard.sum())} hard)")
    ctx.save_figure(fig, "proxy_trajectories")

    mean = lambda x: float(np.nanmean(x))
    headline = {f"entropy_gd_gamma{g:g}": float(h) for g, h in zip(cfg.gammas, h_gd)}
    headline.update({f"entropy_sam_rho{r:g}": float(h) for r, h in zip(cfg.rhos, h_sam)})
    headline.update({f"gamma_matching_rho{r:g}": gs for r, gs in zip(cfg.rhos[1:], gamma_star[1:])})
    headline.update({"test_loss_rel_gd": mean(gd_test[0]), "test_loss_rel_gd_max_gamma": mean(gd_test[-1]),
                     "test_loss_rel_sam_max_rho": mean(sam_test[-1]),
                     "sam_cost_per_step_vs_gd": cost["sam_s_per_step"] / cost["gd_s_per_step"]})
    headline.update({f"pool_entropy[{n}]": mean(e) for n, e in zip(names, ent)})
    headline.update({f"pool_test_loss_rel[{n}]": mean(t) for n, t in zip(names, test)})
    headline["pool_hard_fraction"] = float(hard.mean())
    headline["diverged_members"] = int(gd.diverged.sum() + sam.diverged.sum()) + pool_diverged
    g_last = gamma_star[-1]
    return {
        "headline": headline,
        "summary": (f"(a) GD's learning-time entropy rises from {h_gd[0]:.3f} (gamma=0) to {h_gd[-1]:.3f} "
                    f"(gamma={cfg.gammas[-1]:g}); SAM reaches {h_sam[-1]:.3f} at rho={cfg.rhos[-1]:g}, "
                    f"matched by gamma={g_last:.2f}, "
                    f"at {cost['sam_s_per_step'] / cost['gd_s_per_step']:.2f}x GD's time per step. "
                    f"(b) On a pool of {cfg.pool_size} sequences, upsampling the proxy's hard cluster "
                    f"({hard.mean():.0%} of the pool; "
                    f"it loads x{loading[-1]:.2f} on the smallest-eigenvalue direction) "
                    f"gives GD entropy {mean(ent[1]):.3f} vs {mean(ent[0]):.3f} (uniform), {mean(ent[2]):.3f} (easy), "
                    f"{mean(ent[3]):.3f} (random), {mean(ent[4]):.3f} (SAM)."),
        "gamma_star": dict(zip([str(r) for r in cfg.rhos], gamma_star)),
        "pool_arms": [{"arm": n, "entropy": e, "times": t, "test_loss_rel": tl}
                      for n, e, t, tl in zip(names, ent, times, test)],
        "hard_loading_per_direction": loading,
        "cost": cost,
    }


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
    cost={"quick": "~45 s CPU", "full": "~10 min CPU"},
    run=run,
    order=12,
)
