"""The ICL data levers as pure batch samplers, the GPT-2 loss, the training-distribution Bayes
baselines and the gradient-cosine evaluation hook (seed 004 Figs. 1, 4-9).

An arm of an ICL sweep is a dict of lever values, all traced (so every arm of a sweep can run in the
same `jax.vmap`ped step; common random numbers across arms of one seed):

    k           tasks in the pool (inf or 0 = a fresh w ~ N(0, tau^2 C_beta) for every sequence)
    alpha       Zipf exponent over the pool (lever "zipf")
    beta        correlated task prior C_beta = (1 - beta) I + beta v v^T (fresh tasks)
    curriculum  1 = the doubling task curriculum (lever "curriculum"), 0 = fixed k

Which `lsb_jax.data` sampler draws pool indices is the sweep's static `lever`: "subset"
(`Subset(N, k)`: the first k tasks of a fixed random order), "zipf" (`Zipf(N, alpha)`),
"curriculum" (`Subset(N, k(step))` with k(step) = `doubling(k0, t0, T, N)` or the arm's k), or
"fresh" (no pool: beta only). Each seed draws its own pool W_N ~ N(0, tau^2 I) (`draw_pools`).

`cfg` below is the ICL sweep config (`lsb_jax.sweeps.icl.SweepConfig`): the functions read its
`task`, `pool_size`, `batch_size`, `seeds`, `data_seed`, `bayes_chunk` and `curriculum_*` fields.

Gradient-cosine diagnostic (Fig. 8, App. C.1/C.5, `make_grad_cosine`): at an evaluation step, for
each member, `pairs` pairs of independent batches are drawn from the member's own training
distribution at that step with keys fold_in(fold_in(rng, DIAG_STREAM), step) -- a stream the
training data never uses, so training is unchanged -- and

    cos(g_1, g_2) = <g_1, g_2> / (|g_1| |g_2|) = sum_p <g_1p, g_2p> / (|g_1| |g_2|)

(g_i the batch-mean gradient of all parameters) is returned with its per-group terms
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

from lsb_jax.data import Subset, Zipf, doubling
from lsb_jax.models import gpt2
from lsb_jax.optim import label_params
from lsb_jax.tasks import icl
from lsb_jax.train.step import reduce_losses
from lsb_jax.train.arms import member_data_keys

LEVERS = ("subset", "zipf", "curriculum", "fresh")
ARM_DEFAULTS = {"k": math.inf, "alpha": 0.0, "beta": 0.0, "curriculum": 0.0}
DIAG_STREAM = 0x6C05                      # fold_in tag of the diagnostic batches (train.state uses 0, 1, 2)
READOUT = r"^read_out_"                   # the GPT-2's readout (read_out_kernel, read_out_bias)


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


def pool_sampler(lever: str, cfg, hp: Mapping[str, jax.Array], perm_seed: int):
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


def make_sample_batch(lever: str, cfg, perm_seed: int, batch_size: int | None = None):
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
    return lambda params, x_BxTxD, y_BxT: icl.read_predictions(
        gpt2.apply(graphdef, params, icl.to_tokens(x_BxTxD, y_BxT)))


def draw_pools(cfg) -> jax.Array:
    """[seeds, N, D]: each seed's task pool, w ~ N(0, tau^2 I); base seed r's seed i draws it from
    fold_in(fold_in(fold_in(PRNGKey(data_seed), 1), r), i) (`train.arms.member_data_keys`)."""
    keys = member_data_keys(jax.random.fold_in(jax.random.PRNGKey(cfg.data_seed), 1), cfg.seeds, cfg.base_seeds)
    return jax.vmap(lambda k: cfg.task.sample_tasks(k, cfg.pool_size))(keys)


# jitted once per shape: eager calls would compile every primitive separately (minutes on a busy CPU)
@functools.partial(jax.jit, static_argnames=("noise_var",))
def gaussian_bayes(x, y, cov, noise_var):
    """`icl.gaussian_bayes_predictions` (ridge for cov = I), jitted."""
    return icl.gaussian_bayes_predictions(x, y, noise_var, cov)


@functools.partial(jax.jit, static_argnames=("noise_var", "chunk"))
def _pool_bayes(x, y, pool, log_probs, noise_var, chunk):
    return icl.pool_bayes_predictions(x, y, pool, noise_var, log_probs, chunk=chunk)


def train_bayes_predictions(lever: str, cfg, arms: Sequence[dict], pools, v_D, test, perm_seed: int,
                            at_step: int) -> np.ndarray:
    """[seeds, arms, S, T] the Bayes predictions of each member's training distribution at `at_step`."""
    task = cfg.task
    x, y = test["x"], test["y"]
    ridge = np.asarray(gaussian_bayes(x, y, task.prior_cov(), task.noise_var))
    out = np.zeros((cfg.total_seeds, len(arms)) + ridge.shape, np.float32)
    for a, arm in enumerate(arms):
        hp = {n: jnp.asarray(arm[n], jnp.float32) for n in ARM_DEFAULTS}
        if not bool(uses_pool(lever, hp)):
            cov = task.prior_cov(arm["beta"], np.asarray(v_D))
            pred = ridge if arm["beta"] == 0 else np.asarray(gaussian_bayes(x, y, cov, task.noise_var))
            out[:, a] = pred
            continue
        # inactive tasks get log-probability -inf: every arm has the same shapes, one compilation
        log_probs_N = jnp.log(pool_sampler(lever, cfg, hp, perm_seed).probs(at_step))
        for s in range(cfg.total_seeds):
            out[s, a] = np.asarray(_pool_bayes(x, y, pools[s], log_probs_N, task.noise_var, cfg.bayes_chunk))
    return out


__all__ = ["ARM_DEFAULTS", "DIAG_STREAM", "LEVERS", "READOUT", "GradCosine", "diagnostic_keys", "draw_pools",
           "gradient_cosine", "make_grad_cosine", "make_loss_fn", "make_predict", "make_sample_batch", "pool_sampler",
           "train_bayes_predictions", "uses_pool", "validate_arms"]
