"""Loss trajectories -> clusters -> which examples to upsample (the paper's hard/easy split).

    labels, centers, inertia = kmeans(losses_NxK, k=2, key=key, n_init=4)
    hard_N = hard_mask(losses_NxK, labels)          # the cluster with the higher mean loss
    counts_N = upsample_counts(hard_N, factor=2)     # duplication counts for `data.Epochs`
    counts_N, mask_N = selection_counts(losses_NxK, "hard", factor=2)   # the same, as one call

`selection_counts` is the one definition of what each ablation arm upsamples (`SELECTIONS`: uniform,
hard, easy, final_loss, top_q, random), used by the theory data-lever experiment, the ICL sweep's
trajectory clusters and the LLM pipeline (whose arm table, `lsb_jax.llm.arms`, maps arm names to
these selections).

k-means is Lloyd's algorithm with k-means++ seeding, jitted, restarts mapped in one program (the
best inertia wins), each stopping at a fixed point or after `iters` iterations; the only
temporaries are [N, k] distances (no N x N matrix), so N can be in the millions. On CPU, few
features (up to `OWN_KERNELS_UP_TO`) compile with XLA's own kernels, more with YNNPACK fusions.
The same code serves the theory model, the synthetic tasks and the LLM pipeline.
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.train.loop import cpu_compiler_options


def _sq_dists(x_NxF, c_KxF):
    """Squared distances [N, K] (k is small: this is the only N-sized temporary besides x)."""
    return jnp.maximum(jnp.sum(x_NxF ** 2, -1, keepdims=True) - 2.0 * x_NxF @ c_KxF.T + jnp.sum(c_KxF ** 2, -1), 0.0)


def _plus_plus(key, x_NxF, k: int):
    """k-means++ seeding: each next center drawn with probability proportional to D(x)^2."""
    n = x_NxF.shape[0]
    k0, key = jax.random.split(key)
    centers = jnp.zeros((k, x_NxF.shape[1]), x_NxF.dtype).at[0].set(x_NxF[jax.random.randint(k0, (), 0, n)])

    def body(i, carry):
        centers, key = carry
        key, sub = jax.random.split(key)
        d_NxK = jnp.where(jnp.arange(k) < i, _sq_dists(x_NxF, centers), jnp.inf)
        idx = jax.random.categorical(sub, jnp.log(jnp.maximum(d_NxK.min(-1), 1e-30)))
        return centers.at[i].set(x_NxF[idx]), key

    centers, _ = jax.lax.fori_loop(1, k, body, (centers, key))
    return centers


def _centroids(x_NxF, lab_N, centers_KxF):
    """Means of the assigned points; an empty cluster keeps its center."""
    k = centers_KxF.shape[0]
    onehot_NxK = jax.nn.one_hot(lab_N, k, dtype=x_NxF.dtype)
    count_K = onehot_NxK.sum(0)
    sums_KxF = onehot_NxK.T @ x_NxF
    return jnp.where(count_K[:, None] > 0, sums_KxF / jnp.maximum(count_K, 1)[:, None], centers_KxF)


@partial(jax.jit, static_argnames=("k", "iters"))
def _lloyd(key, x_NxF, k: int, iters: int):
    """At most `iters` Lloyd iterations from a k-means++ start, stopping early at a fixed point (no
    label changed: the next centers would be the same numbers), as scikit-learn's "strict
    convergence" does. Returns (labels, centers, inertia, iterations run)."""
    def cond(carry):
        i, _, _, changed = carry
        return (i < iters) & changed

    def body(carry):
        i, centers, lab_N, _ = carry
        new_N = jnp.argmin(_sq_dists(x_NxF, centers), -1).astype(jnp.int32)
        return i + 1, _centroids(x_NxF, new_N, centers), new_N, jnp.any(new_N != lab_N)

    n = x_NxF.shape[0]
    start = (0, _plus_plus(key, x_NxF, k), jnp.full((n,), -1, jnp.int32), jnp.bool_(True))
    i, centers, _, _ = jax.lax.while_loop(cond, body, start)
    d_NxK = _sq_dists(x_NxF, centers)
    return jnp.argmin(d_NxK, -1), centers, jnp.sum(jnp.min(d_NxK, -1)), i


# Up to this many features, the restarts compile with XLA:CPU's own kernels instead of its YNNPACK
# fusions (`train.cpu_compiler_options("own_kernels")`): a Lloyd iteration on loss trajectories (a
# few checkpoints) is then markedly faster; from a few dozen features on YNNPACK is faster.
# `benchmarks/kmeans.py` times both per iteration over feature counts, on the machine at hand.
OWN_KERNELS_UP_TO = 20


@functools.cache
def _restarts_program(own_kernels: bool):
    """The restarts one after another in one program (`lax.map`), not vmapped: a batched Lloyd
    step's [R, N, k] one-hot centroid sums fall into a slower fused kernel on CPU than R unbatched
    ones (`benchmarks/kmeans.py` measures both), and one restart then pays no batching at all."""
    options = cpu_compiler_options("own_kernels") if own_kernels else {}
    return jax.jit(lambda keys, x_NxF, k, iters: jax.lax.map(lambda kk: _lloyd(kk, x_NxF, k, iters), keys),
                   static_argnums=(2, 3), compiler_options=options)


def _restarts(keys, x_NxF, k: int, iters: int, own_kernels: bool | None = None):
    """(labels, centers, inertia, iterations) of each restart; `own_kernels` None: by feature count."""
    own = x_NxF.shape[1] <= OWN_KERNELS_UP_TO if own_kernels is None else own_kernels
    return _restarts_program(own)(keys, x_NxF, k, iters)


def kmeans(x_NxF, k: int = 2, *, key=None, n_init: int = 4, iters: int = 30):
    """(labels [N] int32, centers [k, F], inertia) of the best of `n_init` k-means++ restarts.

    At most `iters` Lloyd iterations per restart, fewer once no label changes (the result is then the
    same as running all `iters`); an empty cluster keeps its center.
    """
    x_NxF = jnp.asarray(x_NxF, jnp.float32)
    if x_NxF.ndim != 2 or x_NxF.shape[0] < k:
        raise ValueError(f"kmeans needs an [N, F] array with N >= k={k}, got shape {x_NxF.shape}")
    if not bool(jnp.isfinite(x_NxF).all()):
        raise ValueError("kmeans: the trajectories contain NaN/inf (unscored rows?)")
    key = jax.random.PRNGKey(0) if key is None else key
    labels, centers, inertia, _ = _restarts(jax.random.split(key, n_init), x_NxF, k, iters)
    best = int(jnp.argmin(inertia))
    return np.asarray(labels[best], np.int32), np.asarray(centers[best]), float(inertia[best])


def normalize(losses_NxK, how: str = "none") -> np.ndarray:
    """Trajectory features for clustering: "none" (raw losses), "log" (log loss), "final" (last column only)."""
    x = np.asarray(losses_NxK, np.float32)
    if how == "none":
        return x
    if how == "log":
        return np.log(np.maximum(x, 1e-12))
    if how == "final":
        return x[:, -1:]
    raise ValueError(f"normalize: unknown option '{how}' (none, log, final)")


def hard_mask(losses_NxK, labels_N) -> np.ndarray:
    """True for examples in the cluster whose members have the highest mean loss."""
    losses = np.asarray(losses_NxK, np.float64)
    labels_N = np.asarray(labels_N)
    ids = np.unique(labels_N)
    means = [losses[labels_N == c].mean() for c in ids]
    return labels_N == ids[int(np.argmax(means))]


def upsample_counts(mask_N, factor: int = 2) -> np.ndarray:
    """Duplication counts: `factor` copies of the masked examples, one of every other."""
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}")
    return np.where(np.asarray(mask_N, bool), int(factor), 1).astype(np.int32)


# ----------------------------------------------------------------------------- ablation selections

SELECTIONS = ("uniform", "hard", "easy", "final_loss", "top_q", "random")


def _select(losses_NxK: np.ndarray, selection: str, q: float | None, rng: np.random.Generator, features: str,
            n_init: int, seed: int) -> np.ndarray:
    """Boolean mask of the upsampled examples of one group."""
    n = len(losses_NxK)
    if selection == "uniform" or n < 2:
        return np.zeros(n, bool)
    key = jax.random.PRNGKey(seed)
    if selection in ("hard", "easy"):
        labels, _, _ = kmeans(normalize(losses_NxK, features), 2, key=key, n_init=n_init)
        hard = hard_mask(losses_NxK, labels)
        return hard if selection == "hard" else ~hard
    if selection == "final_loss":
        final_Nx1 = normalize(losses_NxK, "final")
        labels, _, _ = kmeans(final_Nx1, 2, key=key, n_init=n_init)
        return hard_mask(final_Nx1, labels)
    # matched-size selections: q * n examples, or as many as the trajectory-hard cluster
    size = round(q * n) if q is not None else int(_select(losses_NxK, "hard", None, rng, features, n_init, seed).sum())
    mask = np.zeros(n, bool)
    if selection == "top_q":
        mask[np.argsort(-losses_NxK[:, -1], kind="stable")[:size]] = True
    else:
        mask[rng.choice(n, size, replace=False)] = True
    return mask


def selection_counts(losses_NxK, selection: str, *, factor: int = 2, q: float | None = None, groups_N=None,
                     features: str = "none", seed: int = 0, n_init: int = 4,
                     draw_seed: int | tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(counts_N, mask_N): duplication counts for `data.Epochs` (`factor` copies of the selected
    examples, 1 of the others) and the selection, for one ablation arm:

      uniform     nothing selected (every count 1);
      hard / easy the higher / lower mean-loss cluster of k-means (k=2) on the trajectories
                  (`features`: "none" raw, "log" log-losses, "final", see `normalize`), k-means
                  keyed by PRNGKey(seed) with `n_init` restarts;
      final_loss  the higher cluster of k-means on the final loss alone;
      top_q       the `q` fraction with the highest final loss (default q: the hard cluster's size);
      random      a random subset of the same size (numpy generator seeded by `draw_seed`, default
                  `seed`: a fresh draw per replicate while the clusters stay those of `seed`).

    With `groups_N` (e.g. MathInstruct source ids) each group is selected separately.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection_counts: unknown selection {selection!r}; expected one of {SELECTIONS}")
    if q is not None and not 0.0 <= q <= 1.0:
        raise ValueError(f"selection_counts: q must be in [0, 1], got {q}")
    losses_NxK = np.asarray(losses_NxK, np.float32)
    if losses_NxK.ndim != 2:
        raise ValueError(f"selection_counts: losses must be [N, K], got shape {losses_NxK.shape}")
    if not np.isfinite(losses_NxK).all():
        raise ValueError("selection_counts: the trajectories contain NaN/inf (unscored rows?)")
    groups_N = np.zeros(len(losses_NxK), np.int64) if groups_N is None else np.asarray(groups_N)
    if groups_N.shape != (len(losses_NxK),):
        raise ValueError(f"selection_counts: groups must be [N={len(losses_NxK)}], got shape {groups_N.shape}")
    rng = np.random.default_rng(seed if draw_seed is None else draw_seed)
    mask_N = np.zeros(len(losses_NxK), bool)
    for g in np.unique(groups_N):
        rows = np.flatnonzero(groups_N == g)
        mask_N[rows] = _select(losses_NxK[rows], selection, q, rng, features, n_init, seed)
    return upsample_counts(mask_N, factor), mask_N
