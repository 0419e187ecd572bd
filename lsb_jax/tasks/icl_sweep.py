"""One compiled program trains seeds x arms of a data lever on in-context linear regression.

The ICL experiments of seed 004 (Figs. 1, 4, 5, 6, 7, 9) differ only in the task distribution
each arm trains on. An arm is a dict of lever values, all traced (so every arm of a sweep runs
in the same `jax.vmap`ped step; common random numbers across arms of one seed):

    k           tasks in the pool (inf or 0 = a fresh w ~ N(0, tau^2 C_beta) for every sequence)
    alpha       Zipf exponent over the pool (lever "zipf")
    beta        correlated task prior C_beta = (1 - beta) I + beta v v^T (fresh tasks)
    curriculum  1 = the doubling task curriculum (lever "curriculum"), 0 = fixed k

Which `lsb_jax.data` sampler draws pool indices is the sweep's static `lever`: "subset"
(`Subset(N, k)`: the first k tasks of a fixed random order), "zipf" (`Zipf(N, alpha)`),
"curriculum" (`Subset(N, k(step))` with k(step) = `doubling(k0, t0, T, N)` or the arm's k), or
"fresh" (no pool: beta only). Each seed draws its own pool W_N ~ N(0, tau^2 I) (so error bars
include the pool's randomness); seeds share the test set, the direction v and the baselines'
test sequences.

Evaluation (every `eval_every` steps, on the same test sequences for every member): the
normalized test loss under w ~ N(0, tau^2 I), its squared distance to the ridge predictions
and to the Bayes predictions of the member's own training distribution (finite pool: dMMSE with
the sampler's probabilities, `icl.pool_bayes_predictions`; correlated prior: the Gaussian
posterior mean; infinite k: ridge). "Learned" = the test loss falls below
ridge + threshold_frac (zero - ridge), both measured on the test set.

Per-example loss trajectories: one fixed sequence for each of the first `track_tasks` tasks of
every seed's pool (rank order, i.e. the tasks every k-subset contains first) is scored at
`track_points` steps with `tracking.LossTracker`, then clustered into hard/easy with
`tracking.kmeans`, as the LLM pipeline does with documents.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import analysis, plots
from lsb_jax.data import Subset, Zipf, doubling
from lsb_jax.models import gpt2
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.tasks import icl
from lsb_jax.tracking import LossTracker, TrajectoryStore, evenly_spaced_steps, hard_mask, kmeans, normalize, pool_scorer
from lsb_jax.train import EvalHook, Members, ensemble_init, ensemble_step, fit, init_state, make_sampled_step
from lsb_jax.train.state import seed_keys

LEVERS = ("subset", "zipf", "curriculum", "fresh")
ARM_DEFAULTS = {"k": math.inf, "alpha": 0.0, "beta": 0.0, "curriculum": 0.0}


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
    seeds: int = 3
    seed: int = 0
    data_seed: int = 1234          # test set, direction v, pools (folded with the seed index)
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
        for name in ("dim", "num_points", "batch_size", "steps", "seeds", "pool_size", "test_size", "eval_every",
                     "curriculum_start", "curriculum_every", "track_tasks", "track_points", "chunk_size",
                     "log_every", "bayes_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"sweep.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.threshold_frac < 1:
            raise ValueError(f"sweep.threshold_frac must be in (0, 1), got {self.threshold_frac}")
        if self.track_tasks > self.pool_size:
            raise ValueError(f"sweep.track_tasks={self.track_tasks} exceeds sweep.pool_size={self.pool_size}")
        if self.checkpoint_every < 0 or self.curriculum_first < 0:
            raise ValueError("sweep.checkpoint_every and sweep.curriculum_first must be >= 0")
        icl.ICLTask(self.dim, self.num_points, self.noise_var, self.prior_var)  # validates

    @property
    def task(self) -> icl.ICLTask:
        return icl.ICLTask(self.dim, self.num_points, self.noise_var, self.prior_var)


def validate_arms(arms: Sequence[Mapping[str, float]], pool_size: int, field: str = "arms") -> list[dict]:
    """Fills defaults and checks the lever values (error names the arm and the field)."""
    out = []
    for i, arm in enumerate(arms):
        unknown = set(arm) - set(ARM_DEFAULTS)
        if unknown:
            raise ValueError(f"{field}[{i}]: unknown lever(s) {sorted(unknown)}; known {sorted(ARM_DEFAULTS)}")
        a = {**ARM_DEFAULTS, **{k: float(v) for k, v in arm.items()}}
        if a["k"] == 0:
            a["k"] = math.inf  # configs hold finite floats: k = 0 means infinitely many tasks
        if not (math.isinf(a["k"]) or (a["k"] == round(a["k"]) and 1 <= a["k"] <= pool_size)):
            raise ValueError(f"{field}[{i}].k: must be an integer in [1, pool_size={pool_size}] or inf, got {a['k']}")
        if not (math.isfinite(a["alpha"]) and a["alpha"] >= 0):
            raise ValueError(f"{field}[{i}].alpha: must be finite and >= 0, got {a['alpha']}")
        if not 0.0 <= a["beta"] <= 1.0:
            raise ValueError(f"{field}[{i}].beta: must be in [0, 1], got {a['beta']}")
        out.append(a)
    return out


def member_arms(num_seeds: int, seed: int, arms: Sequence[dict]) -> Members:
    """Seeds x arms (seed-major); seed i has the same key in every arm. hparams add seed/arm indices."""
    base = seed_keys(seed, num_seeds)
    labels = [{"seed": s, "arm": a, **arm} for s in range(num_seeds) for a, arm in enumerate(arms)]
    keys = base[jnp.asarray([lab["seed"] for lab in labels])]
    names = list(ARM_DEFAULTS) + ["seed", "arm"]
    hp = {n: jnp.asarray([lab[n] for lab in labels], jnp.float32) for n in names}
    return Members(keys=keys, hparams=hp, labels=tuple(labels))


def pool_sampler(lever: str, cfg: SweepConfig, hp: Mapping[str, jax.Array], perm_seed: int):
    """The `lsb_jax.data` sampler of pool indices for one member (lever values traced)."""
    n = cfg.pool_size
    k = jnp.where(jnp.isfinite(hp["k"]), hp["k"], n)
    if lever == "zipf":
        return Zipf(n, hp["alpha"], perm_seed=perm_seed)
    if lever == "curriculum":
        grow = doubling(cfg.curriculum_start, cfg.curriculum_first, cfg.curriculum_every, n)
        return Subset(n, lambda step: jnp.where(hp["curriculum"] > 0, grow(step), k), perm_seed=perm_seed)
    return Subset(n, k, perm_seed=perm_seed)


def uses_pool(lever: str, hp) -> jax.Array:
    """Whether a member draws from its pool (else fresh Gaussian tasks)."""
    if lever == "fresh":
        return jnp.bool_(False)
    if lever == "zipf":
        return jnp.bool_(True)
    return jnp.isfinite(hp["k"]) | (hp["curriculum"] > 0)


def make_sample_batch(lever: str, cfg: SweepConfig, perm_seed: int):
    """sample_batch(key, step, hp, pools_SxNxD, v_D) -> {"tokens", "y", "loss_weight"}: pure in (key, step).

    Streams: the sampler gets the constant key `k_pool` and folds in the step itself; fresh tasks
    and the sequences use fold_in(k_rest, step).
    """
    task = cfg.task

    def sample_batch(key, step, hp, pools, v_D):
        k_pool, k_rest = jax.random.split(key)
        k_fresh, k_seq = jax.random.split(jax.random.fold_in(k_rest, step))
        fresh_BxD = task.sample_tasks(k_fresh, cfg.batch_size, hp["beta"], v_D)
        draw = pool_sampler(lever, cfg, hp, perm_seed).sample(k_pool, step, cfg.batch_size)
        pool_NxD = pools[hp["seed"].astype(jnp.int32)]
        on_pool = uses_pool(lever, hp)
        w_BxD = jnp.where(on_pool, pool_NxD[draw.index], fresh_BxD)
        seq = task.sample_sequences(k_seq, w_BxD)
        return {"tokens": icl.to_tokens(seq["x"], seq["y"]), "y": seq["y"],
                "loss_weight": jnp.where(on_pool, draw.weight, 1.0)}

    return sample_batch


def abstract_graphdef(model_cfg: gpt2.GPT2Config):
    """The model's graphdef without materializing (or compiling) an eager initialization."""
    box = {}

    def init(key):
        box["graphdef"], params = gpt2.init_params(model_cfg, key)
        return params

    jax.eval_shape(init, jax.random.PRNGKey(0))
    return box["graphdef"]


def make_loss_fn(graphdef, dim: int):
    """loss_fn(params, batch) -> [B] normalized squared error averaged over context lengths."""
    def loss_fn(params, batch):
        pred_BxT = icl.read_predictions(gpt2.apply(graphdef, params, batch["tokens"]))
        return icl.per_example_loss(pred_BxT, batch["y"], dim)
    return loss_fn


def make_predict(graphdef):
    return lambda params, x_BxTxD, y_BxT: icl.read_predictions(gpt2.apply(graphdef, params, icl.to_tokens(x_BxTxD, y_BxT)))


def draw_pools(cfg: SweepConfig) -> jax.Array:
    """[seeds, N, D]: seed i's task pool, w ~ N(0, tau^2 I) from fold_in(data_seed key, i)."""
    base = jax.random.fold_in(jax.random.PRNGKey(cfg.data_seed), 1)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(cfg.seeds))
    return jax.vmap(lambda k: cfg.task.sample_tasks(k, cfg.pool_size))(keys)


# jitted once per shape: eager calls would compile every primitive separately (minutes on a busy CPU)
@functools.partial(jax.jit, static_argnames=("noise_var",))
def _gaussian_bayes(x, y, cov, noise_var):
    return icl.gaussian_bayes_predictions(x, y, noise_var, cov)


@functools.partial(jax.jit, static_argnames=("noise_var", "chunk"))
def _pool_bayes(x, y, pool, log_probs, noise_var, chunk):
    return icl.pool_bayes_predictions(x, y, pool, noise_var, log_probs, chunk=chunk)


def train_bayes_predictions(lever: str, cfg: SweepConfig, arms: Sequence[dict], pools, v_D, test, perm_seed: int,
                            at_step: int) -> np.ndarray:
    """[seeds, arms, S, T] the Bayes predictions of each member's training distribution at `at_step`."""
    task = cfg.task
    x, y = test["x"], test["y"]
    ridge = np.asarray(_gaussian_bayes(x, y, task.prior_cov(), task.noise_var))
    out = np.zeros((cfg.seeds, len(arms)) + ridge.shape, np.float32)
    for a, arm in enumerate(arms):
        hp = {n: jnp.asarray(arm[n], jnp.float32) for n in ARM_DEFAULTS}
        if not bool(uses_pool(lever, hp)):
            cov = task.prior_cov(arm["beta"], np.asarray(v_D))
            pred = ridge if arm["beta"] == 0 else np.asarray(_gaussian_bayes(x, y, cov, task.noise_var))
            out[:, a] = pred
            continue
        # inactive tasks get log-probability -inf: every arm has the same shapes, one compilation
        log_probs_N = jnp.log(pool_sampler(lever, cfg, hp, perm_seed).probs(at_step))
        for s in range(cfg.seeds):
            out[s, a] = np.asarray(_pool_bayes(x, y, pools[s], log_probs_N, task.noise_var, cfg.bayes_chunk))
    return out


def run_sweep(cfg: SweepConfig, ctx, lever: str, arms: Sequence[Mapping[str, float]], arm_names: Sequence[str],
              baseline_arm: int = 0, title: str = "") -> dict:
    """Trains seeds x arms, evaluates against ridge / training-distribution Bayes, tracks pool losses.

    Returns a results dict: headline numbers (per arm: steps to threshold mean/std, speed-up vs
    the baseline arm, final and best test loss, distances to ridge and to the training Bayes
    predictor), per-member rows, and the arrays behind the figures (saved through ctx).
    """
    if lever not in LEVERS:
        raise ValueError(f"lever must be one of {LEVERS}, got '{lever}'")
    arms = validate_arms(arms, cfg.pool_size)
    if len(arm_names) != len(arms):
        raise ValueError(f"{len(arm_names)} arm names for {len(arms)} arms")
    task = cfg.task
    model_cfg = cfg.model.gpt2(task)
    graphdef = abstract_graphdef(model_cfg)
    loss_fn = make_loss_fn(graphdef, task.dim)
    predict = make_predict(graphdef)

    data_key = jax.random.PRNGKey(cfg.data_seed)
    v_D, test, pools = jax.jit(lambda key: (icl.random_direction(jax.random.fold_in(key, 2), task.dim),
                                            task.test_set(jax.random.fold_in(key, 3), cfg.test_size),
                                            draw_pools(cfg)))(data_key)
    perm_seed = cfg.data_seed
    sample_batch = make_sample_batch(lever, cfg, perm_seed)
    members = member_arms(cfg.seeds, cfg.seed, arms)
    m = members.size

    def optimizer():
        return make_optimizer(cfg.optim, cfg.steps)

    def member_init(key, hp):
        return init_state(lambda k: gpt2.init_params(model_cfg, k)[1], optimizer().tx, key)

    def member_step(state, hp, pools, v_D):
        step = make_sampled_step(loss_fn, optimizer(), lambda k, s: sample_batch(k, s, hp, pools, v_D))
        return step(state)

    state = ensemble_init(member_init, members)

    # --- baselines on the shared test sequences --------------------------------------------------
    ridge_SxT = np.asarray(_gaussian_bayes(test["x"], test["y"], task.prior_cov(), task.noise_var))
    y_SxT = np.asarray(test["y"])
    ridge_loss = float(np.mean(icl.squared_errors(ridge_SxT, y_SxT, task.dim)))
    zero_loss = float(np.mean(icl.squared_errors(0.0 * y_SxT, y_SxT, task.dim)))
    bayes_at = cfg.steps if lever == "curriculum" else 0
    bayes_AxSxT = train_bayes_predictions(lever, cfg, arms, pools, v_D, test, perm_seed, bayes_at)
    bayes_MxSxT = bayes_AxSxT.reshape((m,) + ridge_SxT.shape)   # seed-major = member order
    bayes_loss_M = np.mean((bayes_MxSxT - y_SxT) ** 2, axis=(1, 2)) / task.dim
    threshold = ridge_loss + cfg.threshold_frac * (zero_loss - ridge_loss)

    def evaluate(state, x, y, ridge, bayes):
        def one(params, bayes_SxT):
            pred = predict(params, x, y)
            return (jnp.mean(icl.squared_errors(pred, y, task.dim)),
                    jnp.mean((pred - ridge) ** 2) / task.dim, jnp.mean((pred - bayes_SxT) ** 2) / task.dim)
        loss, d_ridge, d_bayes = jax.vmap(one)(state.params, bayes)
        return {"test_loss": loss, "dist_ridge": d_ridge, "dist_train_bayes": d_bayes}

    evals = EvalHook(evaluate, every=cfg.eval_every, args=(test["x"], test["y"], jnp.asarray(ridge_SxT),
                                                           jnp.asarray(bayes_MxSxT)))

    # --- per-example trajectories of the pool's first tasks ------------------------------------
    track_rank = np.arange(cfg.track_tasks)
    track_items = np.asarray(Subset(cfg.pool_size, 1, perm_seed=perm_seed).order())[track_rank]
    k_track = jax.random.fold_in(data_key, 4)

    @jax.jit
    def tracked_sequences(pools):
        track = jax.vmap(lambda s: task.sample_sequences(jax.random.fold_in(k_track, s), pools[s][track_items]))(
            jnp.arange(cfg.seeds))
        return {"tokens": jax.vmap(icl.to_tokens)(track["x"], track["y"]), "y": track["y"]}

    track_tok = tracked_sequences(pools)
    seed_M = jnp.asarray(members.hparams["seed"], jnp.int32)
    scorer = pool_scorer(loss_fn, batch_size=min(256, cfg.track_tasks))
    score = lambda params, seed_M, pool: jax.vmap(  # noqa: E731
        lambda p, s: scorer(p, jax.tree.map(lambda a: a[s], pool)))(params, seed_M)
    steps_K = evenly_spaced_steps(cfg.steps, cfg.track_points)
    store = TrajectoryStore(ctx.dir / "trajectories.npz", cfg.track_tasks, steps_K, member_shape=(m,))
    tracker = LossTracker(score, store, args=(seed_M, track_tok))

    result = fit(ensemble_step(member_step), state, cfg.steps, ctx=ctx, hooks=[evals, tracker],
                 step_args=(members.hparams, pools, v_D), chunk_size=cfg.chunk_size,
                 checkpoint_every=cfg.checkpoint_every or None, log_every=cfg.log_every, desc=ctx.dir.name,
                 nonfinite="continue")

    # --- numbers ---------------------------------------------------------------------------------
    hist = result.history
    steps_E = np.asarray(hist["test_loss_step"])
    loss_ExM = np.asarray(hist["test_loss"]).reshape(len(steps_E), m)
    dridge_ExM = np.asarray(hist["dist_ridge"]).reshape(len(steps_E), m)
    dbayes_ExM = np.asarray(hist["dist_train_bayes"]).reshape(len(steps_E), m)
    reach_M = analysis.steps_to_threshold(steps_E, loss_ExM, threshold)
    pred_MxSxT = np.asarray(jax.device_get(jax.jit(jax.vmap(predict, in_axes=(0, None, None)))(
        result.state.params, test["x"], test["y"])))
    per_len_MxT = np.mean((pred_MxSxT - y_SxT) ** 2, axis=1) / task.dim
    ridge_T = np.mean((ridge_SxT - y_SxT) ** 2, axis=0) / task.dim

    arm_of = np.asarray([lab["arm"] for lab in members.labels])
    per_arm = {}
    base_reach = np.nanmean(np.where(arm_of == baseline_arm, reach_M, np.nan)) if np.any(
        np.isfinite(reach_M[arm_of == baseline_arm])) else math.nan
    for a, name in enumerate(arm_names):
        cols = arm_of == a
        r_mean, r_std = analysis.mean_std(reach_M[cols])
        per_arm[name] = {
            **{k: v for k, v in arms[a].items()},
            "steps_to_threshold_mean": r_mean, "steps_to_threshold_std": r_std,
            "reached": int(np.isfinite(reach_M[cols]).sum()), "seeds": int(cols.sum()),
            "speedup_vs_baseline": (base_reach / r_mean) if np.isfinite(r_mean) and np.isfinite(base_reach) else math.nan,
            "final_test_loss_mean": analysis.mean_std(loss_ExM[-1, cols])[0],
            "final_test_loss_std": analysis.mean_std(loss_ExM[-1, cols])[1],
            "best_test_loss_mean": analysis.mean_std(np.nanmin(loss_ExM[:, cols], axis=0))[0],
            "final_dist_ridge_mean": analysis.mean_std(dridge_ExM[-1, cols])[0],
            "final_dist_train_bayes_mean": analysis.mean_std(dbayes_ExM[-1, cols])[0],
            "train_bayes_test_loss": float(np.mean(bayes_loss_M[cols])),
        }

    clusters = _cluster_tracked(store.losses, members, track_items, pools, arms)

    # --- figures ---------------------------------------------------------------------------------
    fig, (ax0, ax1, ax2) = plots.figure(3)
    for a, name in enumerate(arm_names):
        cols = arm_of == a
        plots.band(ax0, steps_E, loss_ExM[:, cols], label=name)
        plots.band(ax1, steps_E, dridge_ExM[:, cols], label=name, log=True)
    for ax in (ax0,):
        ax.axhline(ridge_loss, color="k", ls="--", lw=1, label="ridge (Bayes, test prior)")
        ax.axhline(zero_loss, color="gray", ls=":", lw=1, label="predict 0")
        ax.axhline(threshold, color="r", ls=":", lw=0.8, label="threshold")
        ax.set_ylabel("test loss (MSE / d)")
    ax1.set_ylabel("distance to ridge (MSE / d)")
    for ax in (ax0, ax1):
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    ax0.set_title(title or f"{lever} lever, {cfg.seeds} seeds")
    for a, name in enumerate(arm_names):
        cols = arm_of == a
        mean = per_len_MxT[cols].mean(0)
        ax2.plot(np.arange(task.num_points), mean, label=name)
    ax2.plot(np.arange(task.num_points), ridge_T, "k--", lw=1, label="ridge")
    ax2.set_xlabel("context length k")
    ax2.set_ylabel(f"test loss at step {cfg.steps}")
    ax2.legend(fontsize=6)
    ctx.save_figure(fig, "loss_curves")

    fig, (ax0, ax1) = plots.figure(2)
    xs, means, stds, labels = [], [], [], []
    for a, name in enumerate(arm_names):
        xs.append(a)
        means.append(per_arm[name]["steps_to_threshold_mean"])
        stds.append(per_arm[name]["steps_to_threshold_std"])
        labels.append(name)
    ax0.errorbar(xs, means, yerr=stds, fmt="o", capsize=3)
    ax0.set_xticks(xs)
    ax0.set_xticklabels(labels, rotation=45, fontsize=7)
    ax0.set_ylabel("steps to threshold (mean +- std over seeds)")
    ax0.set_title("speed (NaN = never reached)")
    plots.trajectory_heatmap(ax1, store.losses[0], steps_K, title=f"tracked pool tasks, {members.labels[0]['arm']}: {arm_names[0]}")
    ctx.save_figure(fig, "speed")

    ctx.save_arrays("curves", steps=steps_E, test_loss=loss_ExM, dist_ridge=dridge_ExM, dist_train_bayes=dbayes_ExM,
                    loss_per_context=per_len_MxT, ridge_per_context=ridge_T)
    return {
        "per_arm": per_arm,
        "ridge_test_loss": ridge_loss, "zero_test_loss": zero_loss, "threshold": threshold,
        "members": [dict(lab, steps_to_threshold=float(r), final_test_loss=float(loss_ExM[-1, i]))
                    for i, (lab, r) in enumerate(zip(members.labels, reach_M))],
        "clusters": clusters,
        "trajectory_steps": list(steps_K),
        "num_params": gpt2.num_params(jax.tree.map(lambda x: x[0], result.state.params)),
    }


def _cluster_tracked(losses_MxNxK: np.ndarray, members: Members, track_items, pools, arms) -> dict:
    """k-means (k = 2) on each member's log-loss trajectories of the tracked tasks.

    Returns, per arm (first seed), the hard cluster's size and the mean |w|^2 of hard vs easy
    tasks (in ICL the hard tasks are expected to be the large-norm ones: their targets carry
    the most variance).
    """
    out = {}
    for i, lab in enumerate(members.labels):
        if lab["seed"] != 0:
            continue
        traj = losses_MxNxK[i]
        if not np.isfinite(traj).all():
            continue
        labels, _, _ = kmeans(normalize(traj, "log"), 2, key=jax.random.PRNGKey(i))
        hard = hard_mask(traj, labels)
        w2 = np.sum(np.asarray(pools[lab["seed"]])[track_items] ** 2, axis=1)
        out[f"arm{lab['arm']}"] = {
            "hard_fraction": float(hard.mean()),
            "hard_w_norm2_mean": float(w2[hard].mean()) if hard.any() else math.nan,
            "easy_w_norm2_mean": float(w2[~hard].mean()) if (~hard).any() else math.nan,
            "final_loss_hard": float(traj[hard, -1].mean()) if hard.any() else math.nan,
            "final_loss_easy": float(traj[~hard, -1].mean()) if (~hard).any() else math.nan,
        }
    return out


def headline(res: dict, baseline: str) -> dict:
    """Flat headline numbers: per arm steps to threshold (mean, std), final test loss, speed-up."""
    head = {"ridge_test_loss": res["ridge_test_loss"], "zero_test_loss": res["zero_test_loss"],
            "threshold": res["threshold"], "members": len(res["members"]), "num_params": res["num_params"]}
    for name, row in res["per_arm"].items():
        head[f"steps[{name}]"] = row["steps_to_threshold_mean"]
        head[f"steps_std[{name}]"] = row["steps_to_threshold_std"]
        head[f"speedup[{name}]"] = row["speedup_vs_baseline"]
        head[f"final_loss[{name}]"] = row["final_test_loss_mean"]
        head[f"best_loss[{name}]"] = row["best_test_loss_mean"]
        # fraction of the zero -> ridge gap closed at the best evaluation (progress even below the threshold)
        head[f"gap_closed[{name}]"] = ((res["zero_test_loss"] - row["best_test_loss_mean"])
                                       / (res["zero_test_loss"] - res["ridge_test_loss"]))
    reach = {n: r["steps_to_threshold_mean"] for n, r in res["per_arm"].items() if np.isfinite(r["steps_to_threshold_mean"])}
    head["fastest_arm"] = min(reach, key=reach.get) if reach else "none"
    head["baseline_arm"] = baseline
    return head


def format_arm(name: str, row: dict) -> str:
    r, s = row["steps_to_threshold_mean"], row["steps_to_threshold_std"]
    reach = f"{r:.0f} +- {s:.0f}" if np.isfinite(r) else "never"
    return f"{name}: {reach} steps ({row['reached']}/{row['seeds']} seeds)"


__all__ = ["ARM_DEFAULTS", "LEVERS", "ModelConfig", "SweepConfig", "draw_pools", "format_arm", "headline", "make_loss_fn",
           "make_sample_batch", "member_arms", "pool_sampler", "run_sweep", "train_bayes_predictions", "uses_pool",
           "validate_arms"]


# Shared presets of the ICL experiments (synthetic/icl_*.py): the CPU quick scale and the paper's.
QUICK = SweepConfig(dim=4, num_points=9, model=ModelConfig(num_layers=2, num_heads=2, width=32),
                    optim=OptimConfig(name="adam", lr=1e-3), batch_size=32, steps=1500, seeds=2,
                    pool_size=1024, test_size=128, eval_every=50, threshold_frac=0.9, track_tasks=64,
                    track_points=6, chunk_size=100, log_every=50)
FULL = SweepConfig(steps=30_000, eval_every=250, log_every=50, chunk_size=250, checkpoint_every=5000)
