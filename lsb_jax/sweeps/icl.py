"""ICL sweeps (seed 004 Figs. 1-9): the sweep config, the presets, and the ICL task on the sweep engine.

`run_sweep(cfg, ctx, lever, arms, names, training=..., grad_cosine=...)` builds the ICL
`train.sweep.SweepTask` (GPT-2 init and loss, the lever's pool sampler from `tasks.icl_levers`, the
evaluation against ridge and each member's training-distribution Bayes predictor) and runs it with
`train.sweep.run`: seeds x arms in one vmapped program per static signature. Each seed draws its own
pool W_N ~ N(0, tau^2 I) (so error bars include the pool's randomness); seeds share the test set,
the direction v and the baselines' test sequences.

Evaluation (every `eval_every` steps, on the same test sequences for every member): the normalized
test loss under w ~ N(0, tau^2 I), its squared distance to the ridge predictions and to the Bayes
predictions of the member's own training distribution (finite pool: dMMSE with the sampler's
probabilities; correlated prior: the Gaussian posterior mean; infinite k: ridge). "Learned" = the
test loss falls below ridge + threshold_frac (zero - ridge); steps to it are right-censored at
`steps` (`analysis.censored_summary`: restricted mean, Kaplan-Meier median, seeds that reached).

Per-example loss trajectories: one fixed sequence for each of the first `track_tasks` tasks of
every seed's pool (rank order, i.e. the tasks every k-subset contains first) is scored at
`track_points` steps with `tracking.LossTracker`, then clustered into hard/easy with
`tracking.selection_counts`, as the LLM pipeline does with documents.

Optimizer arms (seed 004 Figs. 2, 3, 9, 12): `training=[ArmTraining(...), ...]` gives arm a its own
`OptimConfig` and batch size; curves are also reported against datapoints seen = step x the arm's
batch size (Fig. 9). The gradient-cosine diagnostic (Fig. 8) is `grad_cosine=GradCosine(...)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import analysis, plots
from lsb_jax.config import require_positive
from lsb_jax.data import Subset
from lsb_jax.models import gpt2
from lsb_jax.optim import OptimConfig
from lsb_jax.tasks import icl
from lsb_jax.tasks.icl_levers import (ARM_DEFAULTS, LEVERS, READOUT, GradCosine, draw_pools, gaussian_bayes,
                                      make_grad_cosine, make_loss_fn, make_predict, make_sample_batch,
                                      train_bayes_predictions, validate_arms)
from lsb_jax.tracking import LossTracker, TrajectoryStore, evenly_spaced_steps, pool_scorer, selection_counts
from lsb_jax.train import EvalHook, sweep
from lsb_jax.train.arms import ArmTraining, arm_training, check_base_seeds
from lsb_jax.train.state import jit_once
from lsb_jax.train.sweep import Arm, SweepSpec, SweepTask


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """GPT-2 shape (seed 004: 12 layers, 8 heads, width 256)."""

    num_layers: int = 12
    num_heads: int = 8
    width: int = 256

    def gpt2(self, task: icl.ICLTask) -> gpt2.GPT2Config:
        return gpt2.GPT2Config(num_layers=self.num_layers, num_heads=self.num_heads, width=self.width,
                               max_len=task.seq_len, input_dim=task.dim, output_dim=1)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything an ICL sweep shares (`--set sweep.steps=...`); the lever values live in each experiment."""

    dim: int = 20
    num_points: int = 41
    noise_var: float = 1.0
    prior_var: float = 1.0
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig(name="adam", lr=1e-4, b1=0.9, b2=0.999)
    batch_size: int = 128
    steps: int = 20_000
    seeds: int = 3                 # per base seed
    base_seeds: tuple[int, ...] = (0, 1)  # replicates: every claim is decided at each (init, pools, data)
    data_seed: int = 1234          # test set, direction v; pools fold in (base seed, seed index)
    pool_size: int = 2 ** 15       # N: tasks per seed's pool (largest k, Zipf pool, curriculum cap)
    test_size: int = 1024
    eval_every: int = 100
    threshold_frac: float = 0.5    # learned: loss <= ridge + frac (zero - ridge)
    curriculum_start: int = 32     # doubling curriculum: k0 tasks for t0 steps, x2 every T steps
    curriculum_first: int = 30
    curriculum_every: int = 20
    track_tasks: int = 256         # pool tasks whose per-example trajectories are recorded
    track_points: int = 12
    chunk_size: int = 100
    log_every: int = 10
    checkpoint_every: int = 0      # 0: no checkpoints
    bayes_chunk: int = 16

    def __post_init__(self):
        require_positive(self, ("dim", "num_points", "batch_size", "steps", "seeds", "pool_size", "test_size",
                                "eval_every", "curriculum_start", "curriculum_every", "track_tasks", "track_points",
                                "chunk_size", "log_every", "bayes_chunk"), "sweep")
        if not 0 < self.threshold_frac < 1:
            raise ValueError(f"sweep.threshold_frac must be in (0, 1), got {self.threshold_frac}")
        if self.track_tasks > self.pool_size:
            raise ValueError(f"sweep.track_tasks={self.track_tasks} exceeds sweep.pool_size={self.pool_size}")
        if self.checkpoint_every < 0 or self.curriculum_first < 0:
            raise ValueError("sweep.checkpoint_every and sweep.curriculum_first must be >= 0")
        icl.ICLTask(self.dim, self.num_points, self.noise_var, self.prior_var)  # validates
        check_base_seeds(self.base_seeds, "sweep.base_seeds")

    @property
    def total_seeds(self) -> int:
        """Seeds per arm over all base seeds (global seed index r * seeds + i)."""
        return self.seeds * len(self.base_seeds)

    @property
    def task(self) -> icl.ICLTask:
        return icl.ICLTask(self.dim, self.num_points, self.noise_var, self.prior_var)




def run_sweep(cfg: SweepConfig, ctx, lever: str, arms: Sequence[Mapping[str, float]], arm_names: Sequence[str],
              baseline_arm: int = 0, title: str = "", training: Sequence[ArmTraining | None] | None = None,
              grad_cosine: GradCosine | None = None) -> dict:
    """Trains seeds x arms, evaluates against ridge / training-distribution Bayes, tracks pool losses.

    Returns the results dict: per arm the censored steps to threshold (`steps_to_threshold_*`, see
    `SweepResult.threshold_columns`), datapoints to threshold, final and best test loss, distances
    to ridge and to the training Bayes predictor, mean gradient cosines; per-member rows; the
    clusters of the tracked tasks. Arrays behind the figures go to curves.npz ([E, M] in member
    order, as the per-member rows).
    """
    if lever not in LEVERS:
        raise ValueError(f"lever must be one of {LEVERS}, got '{lever}'")
    arms = validate_arms(arms, cfg.pool_size)
    training = arm_training(training, len(arms), arm_names)
    task = cfg.task
    model_cfg = cfg.model.gpt2(task)
    graphdef = gpt2.abstract_graphdef(model_cfg)
    loss_fn = make_loss_fn(graphdef, task.dim)
    predict = make_predict(graphdef)

    data_key = jax.random.PRNGKey(cfg.data_seed)
    v_D, test, pools = jit_once(lambda key: (icl.random_direction(jax.random.fold_in(key, 2), task.dim),
                                            task.test_set(jax.random.fold_in(key, 3), cfg.test_size),
                                            draw_pools(cfg)))(data_key)
    perm_seed = cfg.data_seed

    # --- baselines on the shared test sequences --------------------------------------------------
    ridge_SxT = np.asarray(gaussian_bayes(test["x"], test["y"], task.prior_cov(), task.noise_var))
    y_SxT = np.asarray(test["y"])
    ridge_loss = float(np.mean(icl.squared_errors(ridge_SxT, y_SxT, task.dim)))
    zero_loss = float(np.mean(icl.squared_errors(0.0 * y_SxT, y_SxT, task.dim)))
    bayes_at = cfg.steps if lever == "curriculum" else 0
    bayes_AxSxT = train_bayes_predictions(lever, cfg, arms, pools, v_D, test, perm_seed, bayes_at)
    m = cfg.total_seeds * len(arms)
    bayes_MxSxT = bayes_AxSxT.reshape((m,) + ridge_SxT.shape)   # seed-major = member order
    bayes_loss_M = np.mean((bayes_MxSxT - y_SxT) ** 2, axis=(1, 2)) / task.dim
    threshold = ridge_loss + cfg.threshold_frac * (zero_loss - ridge_loss)

    def evaluate(params, step, hp, x, y, ridge, bayes_SxT):
        pred = predict(params, x, y)
        return {"test_loss": jnp.mean(icl.squared_errors(pred, y, task.dim)),
                "dist_ridge": jnp.mean((pred - ridge) ** 2) / task.dim,
                "dist_train_bayes": jnp.mean((pred - bayes_SxT) ** 2) / task.dim}

    # --- per-example trajectories of the pool's first tasks ------------------------------------
    track_items = np.asarray(Subset(cfg.pool_size, 1, perm_seed=perm_seed).order())[np.arange(cfg.track_tasks)]
    k_track = jax.random.fold_in(data_key, 4)

    @jit_once
    def tracked_sequences(pools):
        track = jax.vmap(lambda s: task.sample_sequences(jax.random.fold_in(k_track, s), pools[s][track_items]))(
            jnp.arange(cfg.total_seeds))
        return {"tokens": jax.vmap(icl.to_tokens)(track["x"], track["y"]), "y": track["y"]}

    track_tok = tracked_sequences(pools)
    scorer = pool_scorer(loss_fn, batch_size=min(256, cfg.track_tasks))
    score = lambda params, seed_M, pool: jax.vmap(  # noqa: E731
        lambda p, s: scorer(p, jax.tree.map(lambda a: a[s], pool)))(params, seed_M)
    steps_K = evenly_spaced_steps(cfg.steps, cfg.track_points)

    def hooks(grun: sweep.GroupRun):
        out, hp = [], grun.members.hparams
        if grad_cosine is not None:
            diag = dataclasses.replace(grad_cosine, batch_size=grad_cosine.batch_size or grun.group.batch_size)
            cos_fn = make_grad_cosine(loss_fn, make_sample_batch(lever, cfg, perm_seed, diag.batch_size), diag)
            out.append(EvalHook(
                lambda s, hp, pools, v_D, cos_fn=cos_fn: jax.vmap(cos_fn, in_axes=(0, 0, 0, 0, None, None))(
                    s.params, s.rng, s.step, hp, pools, v_D),
                every=cfg.eval_every, name="grad_cosine", args=(hp, pools, v_D)))
        seed_G = jnp.asarray(hp["seed"], jnp.int32)
        directory = grun.ctx.dir if grun.ctx is not None else None
        store = TrajectoryStore(directory / "trajectories.npz" if directory is not None else None, cfg.track_tasks,
                                steps_K, member_shape=(grun.members.size,))
        out.append(LossTracker(score, store, args=(seed_G, track_tok)))
        return out

    sweep_task = SweepTask(init_params=lambda k: gpt2.init_params(model_cfg, k)[1], loss_fn=loss_fn,
                           sampler=lambda group: make_sample_batch(lever, cfg, perm_seed, group.batch_size),
                           evaluate=evaluate, data=(pools, v_D),
                           eval_data=(test["x"], test["y"], jnp.asarray(ridge_SxT)),
                           member_data=(bayes_MxSxT,), hooks=hooks)
    spec = SweepSpec(seeds=cfg.seeds, steps=cfg.steps, optim=cfg.optim, batch_size=cfg.batch_size,
                     eval_every=cfg.eval_every, seed=cfg.base_seeds, chunk_size=cfg.chunk_size, log_every=cfg.log_every,
                     checkpoint_every=cfg.checkpoint_every)
    res = sweep.run(sweep_task, [Arm(n, a, t) for n, a, t in zip(arm_names, arms, training)], spec, ctx,
                    desc=f"icl {lever}")
    traj_MxNxK = np.full((m, cfg.track_tasks, len(steps_K)), np.nan, np.float32)
    for grun in res.groups:
        traj_MxNxK[grun.index] = grun.real(grun.hooks[-1].store.losses)

    # --- numbers ---------------------------------------------------------------------------------
    steps_E, na = res.eval_steps, len(arms)
    cos_names = ([] if grad_cosine is None else
                 ["grad_cos"] + [f"grad_cos_{kind}_{p}" for kind in ("part", "within") for p in ("readout", "rest")])
    to_member = lambda v_AxSxE: np.swapaxes(v_AxSxE, 0, 1).reshape(m, -1).T  # noqa: E731  [E, M] member order
    loss_AxSxE = res.curves["test_loss"]
    loss_ExM = to_member(loss_AxSxE)
    batch_M = np.tile(res.batch_size, cfg.total_seeds)
    data_ExM = steps_E[:, None] * batch_M[None, :]
    reach_AxS = res.steps_to(loss_AxSxE, threshold)
    params_M = jax.tree.map(lambda x: jnp.asarray(np.swapaxes(x, 0, 1).reshape((m,) + x.shape[2:])), res.final_params)
    pred_MxSxT = np.asarray(jax.device_get(jax.jit(jax.vmap(predict, in_axes=(0, None, None)))(
        params_M, test["x"], test["y"])))
    per_len_MxT = np.mean((pred_MxSxT - y_SxT) ** 2, axis=1) / task.dim
    ridge_T = np.mean((ridge_SxT - y_SxT) ** 2, axis=0) / task.dim
    arm_of = np.tile(np.arange(na), cfg.total_seeds)
    group_of = {a: g.number for g in res.groups for a in g.group.arms}
    # the largest datapoint count every arm reaches (Fig. 9: arms compared at equal data, not steps)
    data_budget = int(steps_E[-1] * res.batch_size.min())
    reach_cols = res.threshold_columns("test_loss", threshold, baseline=baseline_arm)
    per_arm = {}
    for a, name in enumerate(arm_names):
        cols, b, final = arm_of == a, int(res.batch_size[a]), loss_AxSxE[a, :, -1]
        per_arm[name] = {
            **{k: v for k, v in arms[a].items()},
            "batch_size": b, "program_group": group_of[a], **reach_cols[name],
            "datapoints_to_threshold_rmean": reach_cols[name]["steps_to_threshold_rmean"] * b,
            "seeds": cfg.total_seeds, "diverged": int((res.diverged_at[a] >= 0).sum()),
            "final_test_loss_mean": float(np.nanmean(final)), "final_test_loss_std": analysis.mean_std(final)[1],
            "best_test_loss_mean": float(np.nanmean(np.nanmin(loss_AxSxE[a], axis=1))),
            "final_dist_ridge_mean": float(np.nanmean(res.curves["dist_ridge"][a, :, -1])),
            "final_dist_train_bayes_mean": float(np.nanmean(res.curves["dist_train_bayes"][a, :, -1])),
            "train_bayes_test_loss": float(np.mean(bayes_loss_M[cols])),
            "test_loss_at_data_budget": float(np.interp(data_budget, steps_E * b, np.nanmean(loss_AxSxE[a], axis=0))),
        }
        for n in cos_names:
            per_arm[name][n + "_mean"] = float(np.nanmean(res.curves[n][a]))   # over evaluations and seeds

    members = [{"seed": s, "arm": a, **arms[a]} for s in range(cfg.total_seeds) for a in range(na)]
    clusters = _cluster_tracked(traj_MxNxK, members, track_items, pools)

    # --- figures ---------------------------------------------------------------------------------
    lines = {"ridge (Bayes, test prior)": ridge_loss, "predict 0": zero_loss, "threshold": threshold}
    fig = plots.compare_arms(steps_E, arm_names, [
        plots.Panel(loss_AxSxE, "test loss (MSE / d)", lines=lines),
        plots.Panel(res.curves["dist_ridge"], "distance to ridge (MSE / d)", log=True)],
        title=title or f"{lever} lever, {cfg.total_seeds} seeds")
    ctx.save_figure(fig, "loss_curves")

    fig, (ax0, ax1, ax2) = plots.figure(3)
    plots.steps_to_threshold(ax0, arm_names, reach_AxS, cfg.steps, "steps to threshold")
    for a, name in enumerate(arm_names):
        ax1.plot(np.arange(task.num_points), per_len_MxT[arm_of == a].mean(0), label=name)
    ax1.plot(np.arange(task.num_points), ridge_T, "k--", lw=1, label="ridge")
    ax1.set(xlabel="context length k", ylabel=f"test loss at step {cfg.steps}")
    plots.legend(ax1)
    plots.trajectory_heatmap(ax2, traj_MxNxK[0], steps_K, title=f"tracked pool tasks, arm 0: {arm_names[0]}")
    ctx.save_figure(fig, "speed")

    if len(set(res.batch_size.tolist())) > 1:   # Fig. 9: arms with different batch sizes, x = datapoints seen
        fig = plots.compare_arms(steps_E, [f"{n} (B={b})" for n, b in zip(arm_names, res.batch_size)], [
            plots.Panel(loss_AxSxE, "test loss (MSE / d)", xlabel="datapoints seen (steps x batch size)",
                        x=steps_E[None, :] * res.batch_size[:, None], xlog=True, lines={"ridge": ridge_loss})],
            title=title)
        ctx.save_figure(fig, "loss_vs_datapoints")

    if grad_cosine is not None:   # Fig. 8 and App. C.5: the cosine and its readout / rest terms
        fig = plots.compare_arms(steps_E, arm_names, [
            plots.Panel(res.curves[n], ylabel) for n, ylabel in (
                ("grad_cos", "cos(g_1, g_2)"), ("grad_cos_part_readout", "readout term <g_1r, g_2r>/(|g_1||g_2|)"),
                ("grad_cos_part_rest", "rest term"))],
            title=f"gradient cosine of random batches ({grad_cosine.pairs} pairs / eval)")
        ctx.save_figure(fig, "grad_cosine")

    ctx.save_arrays("curves", steps=steps_E, test_loss=loss_ExM, dist_ridge=to_member(res.curves["dist_ridge"]),
                    dist_train_bayes=to_member(res.curves["dist_train_bayes"]), loss_per_context=per_len_MxT,
                    ridge_per_context=ridge_T, batch_size=batch_M, datapoints=data_ExM, arm=arm_of,
                    **{n: to_member(res.curves[n]) for n in cos_names})
    reach_M = np.swapaxes(reach_AxS, 0, 1).ravel()
    final = lambda name: res.curves[name][:, :, -1]   # noqa: E731  [A, S] at the last evaluation
    budget_AxS = np.asarray([[np.interp(data_budget, steps_E * res.batch_size[a], loss_AxSxE[a, s])
                              for s in range(loss_AxSxE.shape[1])] for a in range(na)])
    per_seed = {
        "steps_to_threshold": res.per_seed(reach_AxS, censored=True, unit="steps"),
        "final_test_loss": res.per_seed(final("test_loss"), unit="MSE/d"),
        # the share of the zero -> ridge gap closed at the seed's best evaluation (progress short of the threshold)
        "gap_closed": res.per_seed((zero_loss - np.nanmin(loss_AxSxE, axis=2)) / (zero_loss - ridge_loss)),
        "test_loss_at_data_budget": res.per_seed(budget_AxS, unit="MSE/d"),
        # < 0: the final predictor is nearer its training distribution's Bayes predictor than ridge (memorizing)
        "train_bayes_minus_ridge_distance": res.per_seed(final("dist_train_bayes") - final("dist_ridge"),
                                                         unit="MSE/d"),
        **{n: res.per_seed(np.nanmean(res.curves[n], axis=2)) for n in cos_names},
    }
    return {
        "per_seed": per_seed,
        "per_arm": per_arm,
        "baseline_arm": arm_names[baseline_arm],   # the speed-ups' reference
        "ridge_test_loss": ridge_loss, "zero_test_loss": zero_loss, "threshold": threshold,
        "data_budget": data_budget,
        "members": [dict(lab, steps_to_threshold=float(r), final_test_loss=float(loss_ExM[-1, i]))
                    for i, (lab, r) in enumerate(zip(members, reach_M))],
        "clusters": clusters,
        "trajectory_steps": list(steps_K),
        "num_params": gpt2.num_params(jax.tree.map(lambda x: x[0, 0], res.final_params)),
        "program_groups": res.program_groups(),
    }


def _cluster_tracked(losses_MxNxK: np.ndarray, members: Sequence[dict], track_items, pools) -> dict:
    """k-means (k = 2) on each member's log-loss trajectories of the tracked tasks.

    Returns, per arm (first seed), the hard cluster's size and the mean |w|^2 of hard vs easy
    tasks (in ICL the hard tasks are expected to be the large-norm ones: their targets carry
    the most variance).
    """
    out = {}
    for i, lab in enumerate(members):
        if lab["seed"] != 0:
            continue
        traj = losses_MxNxK[i]
        if not np.isfinite(traj).all():
            continue
        _, hard = selection_counts(traj, "hard", features="log", seed=i)
        w2 = np.sum(np.asarray(pools[lab["seed"]])[track_items] ** 2, axis=1)
        out[f"arm{lab['arm']}"] = {
            "hard_fraction": float(hard.mean()),
            "hard_w_norm2_mean": float(w2[hard].mean()) if hard.any() else math.nan,
            "easy_w_norm2_mean": float(w2[~hard].mean()) if (~hard).any() else math.nan,
            "final_loss_hard": float(traj[hard, -1].mean()) if hard.any() else math.nan,
            "final_loss_easy": float(traj[~hard, -1].mean()) if (~hard).any() else math.nan,
        }
    return out




def headline(res: dict) -> dict:
    """Flat headline numbers: per arm the censored steps to threshold (restricted mean, median,
    seeds reached), its speed-up vs the sweep's baseline arm (`run_sweep(baseline_arm=)`), final /
    best test loss, gap closed."""
    head = {"ridge_test_loss": res["ridge_test_loss"], "zero_test_loss": res["zero_test_loss"],
            "threshold": res["threshold"], "members": len(res["members"]), "num_params": res["num_params"]}
    for name, row in res["per_arm"].items():
        head[f"steps[{name}]"] = row["steps_to_threshold_rmean"]
        head[f"steps_median[{name}]"] = row["steps_to_threshold_median"]
        head[f"reached[{name}]"] = f"{row['steps_to_threshold_reached']}/{row['seeds']}"
        head[f"speedup[{name}]"] = row["steps_to_threshold_speedup"]
        head[f"final_loss[{name}]"] = row["final_test_loss_mean"]
        head[f"best_loss[{name}]"] = row["best_test_loss_mean"]
        # fraction of the zero -> ridge gap closed at the best evaluation (progress even below the threshold)
        head[f"gap_closed[{name}]"] = ((res["zero_test_loss"] - row["best_test_loss_mean"])
                                       / (res["zero_test_loss"] - res["ridge_test_loss"]))
    per = res["per_arm"]
    reached = {n: r for n, r in per.items() if r["steps_to_threshold_reached"] > 0}
    head["fastest_arm"] = min(reached, key=lambda n: reached[n]["steps_to_threshold_rmean"]) if reached else "none"
    head["baseline_arm"] = res["baseline_arm"]
    return head


def format_arm(name: str, row: dict) -> str:
    r, s = row["steps_to_threshold_rmean"], row["steps_to_threshold_rstd"]
    spread = f" +- {s:.0f}" if np.isfinite(s) else ""
    return (f"{name}: restricted mean {r:.0f}{spread} steps "
            f"({row['steps_to_threshold_reached']}/{row['seeds']} seeds reached)")


__all__ = ["ARM_DEFAULTS", "FULL", "LEVERS", "MEDIUM_SEEDS", "QUICK", "QUICK_ESCAPE", "READOUT", "ArmTraining",
           "GradCosine",
           "ModelConfig", "SweepConfig", "format_arm", "headline", "run_sweep"]


# Shared presets of the ICL experiments (synthetic/icl_*.py): the CPU quick scale and the paper's.
QUICK = SweepConfig(dim=4, num_points=9, model=ModelConfig(num_layers=2, num_heads=2, width=32),
                    optim=OptimConfig(name="adam", lr=1e-3), batch_size=32, steps=1500, seeds=2, base_seeds=(0, 1),
                    pool_size=1024, test_size=128, eval_every=50, threshold_frac=0.9, track_tasks=64,
                    track_points=6, chunk_size=100, log_every=50)
FULL = SweepConfig(steps=30_000, eval_every=250, log_every=50, chunk_size=250, checkpoint_every=5000)
# The quick scale of the optimizer experiments (icl_grad_bias, icl_interventions, icl_grad_cosine,
# icl_batch_scaling): at QUICK's d = 4, sigma^2 = 1 Adam stays on the initial plateau for 2000 steps
# at lr 1e-3..1e-2; at d = 2, 8 points, sigma^2 = 0.25, lr 1e-3 it leaves the plateau after ~600
# steps (lr 3e-3 and 1e-2 stay on it), so the interventions can change when that happens.
QUICK_ESCAPE = dataclasses.replace(QUICK, dim=2, num_points=8, noise_var=0.25, steps=1500, eval_every=100,
                                   threshold_frac=0.7, chunk_size=250, log_every=100)
# The medium scale (CPU, `lsb run NAME --config medium`): a quick config with more seeds per base seed,
# enough to decide claims whose effect the quick scale's 2 seeds cannot separate from the seed-to-seed
# spread of the escape step. (On CPU the cost of this GPT-2 grows about linearly with the seeds.)
MEDIUM_SEEDS = 16
