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

Optimizer arms (seed 004 Figs. 2, 3, 9, 12): `run_sweep(..., training=[ArmTraining(...), ...])`
gives arm a its own `OptimConfig` and batch size. `group_arms` splits the arms by *static
signature* (everything that changes the compiled program: optimizer name, schedule, PCGrad,
frozen / layer-wise-lr parameters, the SAM and clipping gates, the batch size). Within a group,
the numeric fields `make_optimizer` takes as overrides (lr, betas, eps, sam_rho, clip_norm,
grad_bias_gamma, weight_decay) become traced per-member hyperparameters of ONE vmapped program,
like the lever values; gates whose zero value is the identity (grad_bias_gamma: g + 0 g_bias = g;
the L2 term g + 0 w) are switched on for the whole group, so gamma = 0 runs beside gamma > 0.
Each group is one `fit` (in `ctx.child("group<g>")` when there are several). All groups share the
seeds' keys (common random numbers: the same initialization and data key per seed), the pools,
the test set and the baselines, so every arm is comparable. Curves are also reported against
datapoints seen = step x the arm's batch size (Fig. 9).

Gradient-cosine diagnostic (Fig. 8, App. C.1/C.5), optional (`grad_cosine=GradCosine(...)`): at
every evaluation step, for each member, `pairs` pairs of independent batches are drawn from the
member's own training distribution at that step with keys fold_in(fold_in(rng, DIAG_STREAM),
step) -- a stream the training data never uses, so training is unchanged -- and

    cos(g_1, g_2) = <g_1, g_2> / (|g_1| |g_2|) = sum_p <g_1p, g_2p> / (|g_1| |g_2|)

(g_i the batch-mean gradient of all parameters) is logged with its per-group terms
part_p = <g_1p, g_2p> / (|g_1| |g_2|) (they sum to cos; p = "readout" or "rest") and the cosine
within each group, <g_1p, g_2p> / (|g_1p| |g_2p|); all averaged over the pairs.
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
from lsb_jax.config import require_positive
from lsb_jax.data import Subset, Zipf, doubling
from lsb_jax.models import gpt2
from lsb_jax.optim import OptimConfig, label_params, make_optimizer
from lsb_jax.tasks import icl
from lsb_jax.tracking import LossTracker, TrajectoryStore, evenly_spaced_steps, hard_mask, kmeans, normalize, pool_scorer
from lsb_jax.train import EvalHook, Members, ensemble_init, ensemble_step, fit, init_state, make_sampled_step
# re-exported: the arm machinery lives in train.arms (shared with tasks.facts)
from lsb_jax.train.arms import TRACED_OPTIM, ArmGroup, ArmTraining, group_arms, group_members, member_arms  # noqa: F401
from lsb_jax.train.step import reduce_losses

LEVERS = ("subset", "zipf", "curriculum", "fresh")
ARM_DEFAULTS = {"k": math.inf, "alpha": 0.0, "beta": 0.0, "curriculum": 0.0}
DIAG_STREAM = 0x6C05                      # fold_in tag of the diagnostic batches (train.state uses 0, 1, 2)
READOUT = r"^read_out_"                   # the GPT-2's readout (read_out_kernel, read_out_bias)


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


@dataclasses.dataclass(frozen=True)
class GradCosine:
    """The gradient-cosine diagnostic (Fig. 8): `pairs` batch pairs per evaluation step, each batch
    of `batch_size` sequences (0 = the arm's training batch size); `readout` is the regex of the
    parameter group reported apart from the rest."""

    pairs: int = 4
    batch_size: int = 0
    readout: str = READOUT

    def __post_init__(self):
        if self.pairs < 1 or self.batch_size < 0:
            raise ValueError(f"GradCosine: pairs must be >= 1 and batch_size >= 0, got {self.pairs}, {self.batch_size}")


def diagnostic_keys(rng: jax.Array, step, pairs: int) -> jax.Array:
    """[pairs, 2, 2] data keys of the diagnostic batch pairs at `step` (never used by training)."""
    key = jax.random.fold_in(jax.random.fold_in(rng, DIAG_STREAM), step)
    return jax.random.split(key, 2 * pairs).reshape(pairs, 2, -1)


def gradient_cosine(grads_a, grads_b, readout: str = READOUT) -> dict:
    """cos(g_a, g_b) and its decomposition over the groups "readout" (params matching `readout`) and
    "rest": part_p = <g_ap, g_bp> / (|g_a| |g_b|) (sum_p part_p = cos), within_p = cos(g_ap, g_bp)."""
    labels = label_params(grads_a, ((readout, "readout"),), "rest")
    leaves_l = jax.tree.leaves(labels)
    leaves_a, leaves_b = jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)
    sums = {g: [jnp.float32(0), jnp.float32(0), jnp.float32(0)] for g in ("readout", "rest")}
    for lab, a, b in zip(leaves_l, leaves_a, leaves_b):
        a, b = a.astype(jnp.float32).ravel(), b.astype(jnp.float32).ravel()
        acc = sums[lab]
        acc[0], acc[1], acc[2] = acc[0] + a @ b, acc[1] + a @ a, acc[2] + b @ b
    norm = jnp.sqrt((sums["readout"][1] + sums["rest"][1]) * (sums["readout"][2] + sums["rest"][2]))
    tiny = jnp.finfo(jnp.float32).tiny
    out = {"grad_cos": (sums["readout"][0] + sums["rest"][0]) / jnp.maximum(norm, tiny)}
    for g, (dot, na, nb) in sums.items():
        out[f"grad_cos_part_{g}"] = dot / jnp.maximum(norm, tiny)
        out[f"grad_cos_within_{g}"] = dot / jnp.maximum(jnp.sqrt(na * nb), tiny)
    return out


def make_grad_cosine(loss_fn, sample_batch, diag: GradCosine):
    """fn(params, rng, step, hp, pools, v_D) -> gradient_cosine averaged over diag.pairs batch pairs
    drawn by `sample_batch` (the member's training distribution) with `diagnostic_keys`."""
    def batch_grad(params, key, step, hp, pools, v_D):
        batch = sample_batch(key, step, hp, pools, v_D)
        return jax.grad(lambda p: reduce_losses(loss_fn(p, batch), batch))(params)

    def fn(params, rng, step, hp, pools, v_D):
        keys = diagnostic_keys(rng, step, diag.pairs)
        def pair(k_2):
            g_a = batch_grad(params, k_2[0], step, hp, pools, v_D)
            g_b = batch_grad(params, k_2[1], step, hp, pools, v_D)
            return gradient_cosine(g_a, g_b, diag.readout)
        return jax.tree.map(lambda x: jnp.mean(x, axis=0), jax.lax.map(pair, keys))
    return fn


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


def make_sample_batch(lever: str, cfg: SweepConfig, perm_seed: int, batch_size: int | None = None):
    """sample_batch(key, step, hp, pools_SxNxD, v_D) -> {"tokens", "y", "loss_weight"}: pure in (key, step).

    batch_size: sequences per batch (None = cfg.batch_size).

    Streams: the sampler gets the constant key `k_pool` and folds in the step itself; fresh tasks
    and the sequences use fold_in(k_rest, step).
    """
    task = cfg.task
    b = cfg.batch_size if batch_size is None else batch_size

    def sample_batch(key, step, hp, pools, v_D):
        k_pool, k_rest = jax.random.split(key)
        k_fresh, k_seq = jax.random.split(jax.random.fold_in(k_rest, step))
        fresh_BxD = task.sample_tasks(k_fresh, b, hp["beta"], v_D)
        draw = pool_sampler(lever, cfg, hp, perm_seed).sample(k_pool, step, b)
        pool_NxD = pools[hp["seed"].astype(jnp.int32)]
        on_pool = uses_pool(lever, hp)
        w_BxD = jnp.where(on_pool, pool_NxD[draw.index], fresh_BxD)
        seq = task.sample_sequences(k_seq, w_BxD)
        return {"tokens": icl.to_tokens(seq["x"], seq["y"]), "y": seq["y"],
                "loss_weight": jnp.where(on_pool, draw.weight, 1.0)}

    return sample_batch


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


def group_program(cfg: SweepConfig, lever: str, group: ArmGroup, perm_seed: int):
    """(member_init(key, hp) -> TrainState, member_step(state, hp, pools, v_D) -> (state, metrics)) of
    one arm group: its static optimizer with hp["optim.<field>"] as traced overrides, batches of
    group.batch_size from `make_sample_batch`. vmap them with `train.ensemble_init/ensemble_step`."""
    model_cfg = cfg.model.gpt2(cfg.task)
    loss_fn = make_loss_fn(gpt2.abstract_graphdef(model_cfg), cfg.task.dim)
    sample_batch = make_sample_batch(lever, cfg, perm_seed, group.batch_size)

    def optimizer(hp):
        return make_optimizer(group.optim, cfg.steps, **{f: hp["optim." + f] for f in group.traced})

    def member_init(key, hp):
        return init_state(lambda k: gpt2.init_params(model_cfg, k)[1], optimizer(hp).tx, key)

    def member_step(state, hp, pools, v_D):
        step = make_sampled_step(loss_fn, optimizer(hp), lambda k, s: sample_batch(k, s, hp, pools, v_D))
        return step(state)

    return member_init, member_step


def run_sweep(cfg: SweepConfig, ctx, lever: str, arms: Sequence[Mapping[str, float]], arm_names: Sequence[str],
              baseline_arm: int = 0, title: str = "", training: Sequence[ArmTraining | None] | None = None,
              grad_cosine: GradCosine | None = None) -> dict:
    """Trains seeds x arms, evaluates against ridge / training-distribution Bayes, tracks pool losses.

    training: optional per-arm optimizer / batch size (`ArmTraining`, None = the sweep's); arms
      are trained in the groups of `group_arms` (one compiled program each, common random numbers).
    grad_cosine: optional `GradCosine` diagnostic, logged at every evaluation step.

    Returns a results dict: headline numbers (per arm: steps to threshold mean/std, speed-up vs
    the baseline arm, datapoints to threshold, final and best test loss, distances to ridge and
    to the training Bayes predictor, mean gradient cosines), per-member rows, and the arrays
    behind the figures (saved through ctx: curves.npz holds [E, M] test loss / distances /
    datapoints seen and, with the diagnostic, the gradient cosines).
    """
    if lever not in LEVERS:
        raise ValueError(f"lever must be one of {LEVERS}, got '{lever}'")
    arms = validate_arms(arms, cfg.pool_size)
    if len(arm_names) != len(arms):
        raise ValueError(f"{len(arm_names)} arm names for {len(arms)} arms")
    groups = group_arms(cfg, training, len(arms))
    task = cfg.task
    model_cfg = cfg.model.gpt2(task)
    graphdef = gpt2.abstract_graphdef(model_cfg)
    loss_fn = make_loss_fn(graphdef, task.dim)
    predict = make_predict(graphdef)

    data_key = jax.random.PRNGKey(cfg.data_seed)
    v_D, test, pools = jax.jit(lambda key: (icl.random_direction(jax.random.fold_in(key, 2), task.dim),
                                            task.test_set(jax.random.fold_in(key, 3), cfg.test_size),
                                            draw_pools(cfg)))(data_key)
    perm_seed = cfg.data_seed
    members = member_arms(cfg.seeds, cfg.seed, arms)
    m = members.size

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
    scorer = pool_scorer(loss_fn, batch_size=min(256, cfg.track_tasks))
    score = lambda params, seed_M, pool: jax.vmap(  # noqa: E731
        lambda p, s: scorer(p, jax.tree.map(lambda a: a[s], pool)))(params, seed_M)
    steps_K = evenly_spaced_steps(cfg.steps, cfg.track_points)

    # --- one fit per group of arms (one compiled program each) -----------------------------------
    hist_parts, final_params = [], [None] * m
    traj_MxNxK = np.full((m, cfg.track_tasks, len(steps_K)), np.nan, np.float32)
    batch_M = np.zeros(m, np.int64)
    diverged_M = np.full(m, -1, np.int64)   # first divergent step (DivergenceGuard), -1: none
    for g, group in enumerate(groups):
        idx_G, gm = group_members(members, group)
        gctx = ctx if len(groups) == 1 else ctx.child(f"group{g}")
        member_init, member_step = group_program(cfg, lever, group, perm_seed)
        batch_M[idx_G] = group.batch_size
        state = ensemble_init(member_init, gm)
        hooks = [EvalHook(evaluate, every=cfg.eval_every, args=(test["x"], test["y"], jnp.asarray(ridge_SxT),
                                                                jnp.asarray(bayes_MxSxT[idx_G])))]
        if grad_cosine is not None:
            diag = dataclasses.replace(grad_cosine, batch_size=grad_cosine.batch_size or group.batch_size)
            cos_fn = make_grad_cosine(loss_fn, make_sample_batch(lever, cfg, perm_seed, diag.batch_size), diag)
            hooks.append(EvalHook(
                lambda s, hp, pools, v_D, cos_fn=cos_fn: jax.vmap(cos_fn, in_axes=(0, 0, 0, 0, None, None))(
                    s.params, s.rng, s.step, hp, pools, v_D),
                every=cfg.eval_every, name="grad_cosine", args=(gm.hparams, pools, v_D)))
        seed_G = jnp.asarray(gm.hparams["seed"], jnp.int32)
        store = TrajectoryStore(gctx.dir / "trajectories.npz", cfg.track_tasks, steps_K, member_shape=(len(idx_G),))
        hooks.append(LossTracker(score, store, args=(seed_G, track_tok)))
        result = fit(ensemble_step(member_step), state, cfg.steps, ctx=gctx, hooks=hooks,
                     step_args=(gm.hparams, pools, v_D), chunk_size=cfg.chunk_size,
                     checkpoint_every=cfg.checkpoint_every or None, log_every=cfg.log_every,
                     desc=gctx.dir.name, on_divergence="continue")
        hist_parts.append((idx_G, result.history))
        diverged_M[idx_G] = result.diverged_at
        traj_MxNxK[idx_G] = store.losses
        for j, i in enumerate(idx_G):
            final_params[i] = jax.tree.map(lambda x, j=j: x[j], result.state.params)
    params_M = jax.tree.map(lambda *xs: jnp.stack(xs), *final_params)

    # --- numbers ---------------------------------------------------------------------------------
    steps_E = np.asarray(hist_parts[0][1]["test_loss_step"])
    names = ["test_loss", "dist_ridge", "dist_train_bayes"]
    if grad_cosine is not None:
        names += ["grad_cos"] + [f"grad_cos_{kind}_{p}" for kind in ("part", "within") for p in ("readout", "rest")]
    curves = {n: np.full((len(steps_E), m), np.nan) for n in names}
    for idx_G, hist in hist_parts:
        for n in names:
            curves[n][:, idx_G] = np.asarray(hist[n]).reshape(len(steps_E), len(idx_G))
    loss_ExM, dridge_ExM, dbayes_ExM = curves["test_loss"], curves["dist_ridge"], curves["dist_train_bayes"]
    data_ExM = steps_E[:, None] * batch_M[None, :]
    reach_M = analysis.steps_to_threshold(steps_E, loss_ExM, threshold)
    pred_MxSxT = np.asarray(jax.device_get(jax.jit(jax.vmap(predict, in_axes=(0, None, None)))(
        params_M, test["x"], test["y"])))
    per_len_MxT = np.mean((pred_MxSxT - y_SxT) ** 2, axis=1) / task.dim
    ridge_T = np.mean((ridge_SxT - y_SxT) ** 2, axis=0) / task.dim

    arm_of = np.asarray([lab["arm"] for lab in members.labels])
    group_of = {a: g for g, group in enumerate(groups) for a in group.arms}
    # the largest datapoint count every arm reaches (Fig. 9: arms compared at equal data, not steps)
    data_budget = int(steps_E[-1] * batch_M.min())
    per_arm = {}
    base_reach = np.nanmean(np.where(arm_of == baseline_arm, reach_M, np.nan)) if np.any(
        np.isfinite(reach_M[arm_of == baseline_arm])) else math.nan
    for a, name in enumerate(arm_names):
        cols = arm_of == a
        r_mean, r_std = analysis.mean_std(reach_M[cols])
        b = int(batch_M[cols][0])
        per_arm[name] = {
            **{k: v for k, v in arms[a].items()},
            "batch_size": b, "program_group": group_of[a],
            "steps_to_threshold_mean": r_mean, "steps_to_threshold_std": r_std,
            "datapoints_to_threshold_mean": r_mean * b,
            "reached": int(np.isfinite(reach_M[cols]).sum()), "seeds": int(cols.sum()),
            "diverged": int((diverged_M[cols] >= 0).sum()),
            "speedup_vs_baseline": (base_reach / r_mean) if np.isfinite(r_mean) and np.isfinite(base_reach) else math.nan,
            "final_test_loss_mean": analysis.mean_std(loss_ExM[-1, cols])[0],
            "final_test_loss_std": analysis.mean_std(loss_ExM[-1, cols])[1],
            "best_test_loss_mean": analysis.mean_std(np.nanmin(loss_ExM[:, cols], axis=0))[0],
            "final_dist_ridge_mean": analysis.mean_std(dridge_ExM[-1, cols])[0],
            "final_dist_train_bayes_mean": analysis.mean_std(dbayes_ExM[-1, cols])[0],
            "train_bayes_test_loss": float(np.mean(bayes_loss_M[cols])),
            "test_loss_at_data_budget": float(np.interp(data_budget, steps_E * b,
                                                        np.nanmean(loss_ExM[:, cols], axis=1))),
        }
        if grad_cosine is not None:
            for n in names[3:]:
                per_arm[name][n + "_mean"] = float(np.nanmean(curves[n][:, cols]))  # over evaluations and seeds

    clusters = _cluster_tracked(traj_MxNxK, members, track_items, pools, arms)

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
    plots.trajectory_heatmap(ax1, traj_MxNxK[0], steps_K,
                             title=f"tracked pool tasks, {members.labels[0]['arm']}: {arm_names[0]}")
    ctx.save_figure(fig, "speed")

    if len(set(batch_M.tolist())) > 1:   # Fig. 9: arms with different batch sizes, x = datapoints seen
        fig, (ax0,) = plots.figure(1)
        for a, name in enumerate(arm_names):
            cols = arm_of == a
            plots.band(ax0, data_ExM[:, np.flatnonzero(cols)[0]], loss_ExM[:, cols],
                       label=f"{name} (B={batch_M[cols][0]})")
        ax0.axhline(ridge_loss, color="k", ls="--", lw=1, label="ridge")
        ax0.set(xlabel="datapoints seen (steps x batch size)", ylabel="test loss (MSE / d)", xscale="log", title=title)
        ax0.legend(fontsize=6)
        ctx.save_figure(fig, "loss_vs_datapoints")

    if grad_cosine is not None:   # Fig. 8 and App. C.5: the cosine and its readout / rest terms
        fig, axes = plots.figure(3)
        for ax, n, ylabel in zip(axes, ("grad_cos", "grad_cos_part_readout", "grad_cos_part_rest"),
                                 ("cos(g_1, g_2)", "readout term <g_1r, g_2r>/(|g_1||g_2|)", "rest term")):
            for a, name in enumerate(arm_names):
                plots.band(ax, steps_E, curves[n][:, arm_of == a], label=name)
            ax.set(xlabel="step", ylabel=ylabel)
        axes[0].set_title(f"gradient cosine of random batches ({grad_cosine.pairs} pairs / eval)")
        axes[0].legend(fontsize=6)
        ctx.save_figure(fig, "grad_cosine")

    ctx.save_arrays("curves", steps=steps_E, test_loss=loss_ExM, dist_ridge=dridge_ExM, dist_train_bayes=dbayes_ExM,
                    loss_per_context=per_len_MxT, ridge_per_context=ridge_T, batch_size=batch_M, datapoints=data_ExM,
                    arm=arm_of, **{n: curves[n] for n in names[3:]})
    return {
        "per_arm": per_arm,
        "ridge_test_loss": ridge_loss, "zero_test_loss": zero_loss, "threshold": threshold,
        "data_budget": data_budget,
        "members": [dict(lab, steps_to_threshold=float(r), final_test_loss=float(loss_ExM[-1, i]))
                    for i, (lab, r) in enumerate(zip(members.labels, reach_M))],
        "clusters": clusters,
        "trajectory_steps": list(steps_K),
        "num_params": gpt2.num_params(final_params[0]),
        "program_groups": [{"arms": [arm_names[a] for a in gr.arms], "batch_size": gr.batch_size,
                            "traced": list(gr.traced)} for gr in groups],
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


__all__ = ["ARM_DEFAULTS", "LEVERS", "READOUT", "TRACED_OPTIM", "ArmGroup", "ArmTraining", "GradCosine",
           "ModelConfig", "SweepConfig", "diagnostic_keys", "draw_pools", "format_arm", "gradient_cosine",
           "group_arms", "group_members", "group_program", "headline", "make_grad_cosine", "make_loss_fn",
           "make_sample_batch", "member_arms", "pool_sampler", "run_sweep", "train_bayes_predictions", "uses_pool",
           "validate_arms"]


# Shared presets of the ICL experiments (synthetic/icl_*.py): the CPU quick scale and the paper's.
QUICK = SweepConfig(dim=4, num_points=9, model=ModelConfig(num_layers=2, num_heads=2, width=32),
                    optim=OptimConfig(name="adam", lr=1e-3), batch_size=32, steps=1500, seeds=2,
                    pool_size=1024, test_size=128, eval_every=50, threshold_frac=0.9, track_tasks=64,
                    track_points=6, chunk_size=100, log_every=50)
FULL = SweepConfig(steps=30_000, eval_every=250, log_every=50, chunk_size=250, checkpoint_every=5000)
# The quick scale of the optimizer experiments (icl_grad_bias, icl_interventions, icl_grad_cosine,
# icl_batch_scaling): at QUICK's d = 4, sigma^2 = 1 Adam stays on the initial plateau for 2000 steps
# at lr 1e-3..1e-2; at d = 2, 8 points, sigma^2 = 0.25, lr 1e-3 it leaves the plateau after ~600
# steps (lr 3e-3 and 1e-2 stay on it), so the interventions can change when that happens.
QUICK_ESCAPE = dataclasses.replace(QUICK, dim=2, num_points=8, noise_var=0.25, steps=1500, eval_every=100,
                                   threshold_frac=0.7, chunk_size=250, log_every=100)
