"""SFT subset selection (seed 003): embed a pool of examples, choose n of them by greedy k-center
or at random, measure each subset's uniformity, and fine-tune on exactly a subset while the
response loss on a held-out set is recorded over the steps.

    feats_NxF = text_features(examples.rows)                  # MiniLM of prompt + response, unit rows
    feats_NxD = hidden_features(model, examples)              # mean-pooled hidden states of our model
    index_n = kcenter_subset(feats_NxF, n)                    # or random_subset(N, n, seed)
    geo = subset_geometry(feats_NxF, index_n)                 # {"h_min", "mean_nn", "n"}
    run = finetune_on_subset(model, examples, index_n, heldout, cfg, num_steps, batch_size=16,
                             key=key, pad_id=pad_token_id(tok), eval_steps=(0, 10, 20), ctx=ctx)
    run.curve_K                                               # mean held-out response loss per eval step

Uniformity of a set S in a feature space: h_min(S) = min_{i != j} ||f_i - f_j|| (seed 003's
quantity: larger is "more uniform") and the mean nearest-neighbour distance
(1/|S|) sum_i min_{j != i} ||f_i - f_j|| (less sensitive to a single close pair). Selection is
`data.selection.kcenter_greedy` (a 2-approximation of the max-min h_min); this module only maps
examples to features and subsets to training runs.

Held-out loss: for every held-out example e, l_e = the mean next-token cross-entropy over its
response tokens (`models.lm.loss.sequence_loss`, eval mode), scored by `scoring.ScoringHook`
into a `TrajectoryStore` [N_heldout, K] at the K eval steps (resumable); the curve is the mean
over examples, (1/N) sum_e l_e(step).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsb_jax.data import selection
from lsb_jax.llm import pipeline as pl
from lsb_jax.llm.data import Examples, Row
from lsb_jax.llm.finetune import FinetuneConfig, FinetuneResult, finetune_split, prepare
from lsb_jax.llm.scoring import ScoringHook, jit_scorer, make_score_loss, pool_batch
from lsb_jax.models.lm.model import Decoder
from lsb_jax.tracking.trajectories import TrajectoryStore

# ----------------------------------------------------------------------------- features


def example_text(row: Row) -> str:
    """The text a sentence encoder sees for one example: prompt, newline, response."""
    return f"{row.prompt}\n{row.response}"


def text_features(rows: Sequence[Row], *, batch_size: int = 64) -> np.ndarray:
    """[N, 384] all-MiniLM-L6-v2 embeddings (unit rows) of `example_text` (`data.embed`)."""
    from lsb_jax.data.embed import embed_texts  # noqa: PLC0415  (optional package)

    return embed_texts([example_text(r) for r in rows], batch_size=batch_size)


def _pooled_fn(graphdef: nnx.GraphDef):
    @jax.jit
    def pooled(state, tokens_BxT, mask_BxT):
        model = nnx.merge(graphdef, state)
        h_BxTxD = model.hidden(tokens_BxT, attention_mask_BxT=mask_BxT).astype(jnp.float32)
        w_BxT = mask_BxT.astype(jnp.float32)
        return jnp.einsum("BTD,BT->BD", h_BxTxD, w_BxT) / jnp.maximum(w_BxT.sum(1), 1.0)[:, None]

    return pooled


def hidden_features(model: Decoder, examples: Examples, *, batch_size: int = 32, bucket: int = 16,
                    normalize: bool = True) -> np.ndarray:
    """[N, D] mean-pooled final hidden states of `model` over each example's tokens:

        f_i = (1 / |T_i|) sum_{t in T_i} h_t(x_i),   T_i = the example's real tokens (prompt + response),

    h = `Decoder.hidden` (final-normed), right-padded batches (padding masked from attention
    and from the mean); f_i / ||f_i|| when `normalize` (so distances do not depend on the
    model's activation scale). Rows are batched by length (one compile per bucketed length).
    """
    if batch_size < 1 or bucket < 1:
        raise ValueError(f"hidden_features: batch_size and bucket must be >= 1, got {batch_size}, {bucket}")
    graphdef, state = nnx.split(model)
    pooled = _pooled_fn(graphdef)
    n = len(examples)
    order = np.argsort(np.asarray(examples.lengths_N), kind="stable")
    out_NxD = np.zeros((n, model.cfg.hidden_size), np.float32)
    for b0 in range(0, n, batch_size):
        idx = order[b0:b0 + batch_size]
        padded = np.concatenate([idx, np.repeat(idx[:1], batch_size - len(idx))])   # one batch shape
        batch = pool_batch(examples, padded, bucket)
        f_BxD = pooled(state, jnp.asarray(batch["tokens"]), jnp.asarray(batch["attention_mask"]))
        out_NxD[idx] = np.asarray(f_BxD)[:len(idx)]
    if normalize:
        out_NxD /= np.maximum(np.linalg.norm(out_NxD, axis=1, keepdims=True), 1e-12)
    return out_NxD


# ----------------------------------------------------------------------------- subsets and their geometry


def proportional_allocation(sizes_G, n: int) -> np.ndarray:
    """[G] counts summing to n, proportional to `sizes_G` (largest remainder; ties to the lower
    group index), each at most its group's size."""
    sizes_G = np.asarray(sizes_G, np.int64)
    if not 1 <= n <= sizes_G.sum():
        raise ValueError(f"proportional_allocation: n must be in [1, {int(sizes_G.sum())}], got {n}")
    quota_G = n * sizes_G / sizes_G.sum()
    alloc_G = np.floor(quota_G).astype(np.int64)
    order = np.argsort(-(quota_G - alloc_G), kind="stable")
    alloc_G[order[:n - alloc_G.sum()]] += 1
    return np.minimum(alloc_G, sizes_G)


def kcenter_subset(x_NxD, n: int, *, start: int = 0, groups_N=None) -> np.ndarray:
    """[n] example ids picked by greedy k-center (farthest point) from row `start`, in pick order.

    With `groups_N` (e.g. the examples' source ids) the selection is stratified: n is split over
    the groups in proportion to their sizes (`proportional_allocation`) and k-center runs within
    each group from its first row, so the subset keeps the pool's mix of sources and is uniform
    within each (ids grouped by group, pick order within a group).
    """
    if groups_N is None:
        return np.asarray(selection.kcenter_greedy(x_NxD, n, start=start).index_K, np.int64)
    x_NxD, groups_N = np.asarray(x_NxD, np.float32), np.asarray(groups_N)
    if groups_N.shape != (len(x_NxD),):
        raise ValueError(f"kcenter_subset: groups_N must have shape ({len(x_NxD)},), got {groups_N.shape}")
    names = np.unique(groups_N)
    members = [np.flatnonzero(groups_N == g) for g in names]
    out = []
    for rows, k in zip(members, proportional_allocation([len(r) for r in members], n)):
        if k > 0:
            out.append(rows[np.asarray(selection.kcenter_greedy(x_NxD[rows], int(k)).index_K)])
    return np.concatenate(out).astype(np.int64)


def random_subset(num_items: int, n: int, seed: int | tuple[int, ...]) -> np.ndarray:
    """[n] distinct example ids drawn uniformly without replacement (numpy, seeded by an int or a
    tuple of ints, e.g. (base seed, subset seed)), sorted."""
    if not 1 <= n <= num_items:
        raise ValueError(f"random_subset: n must be in [1, {num_items}], got {n}")
    return np.sort(np.random.default_rng(seed).choice(num_items, n, replace=False)).astype(np.int64)


def subset_geometry(x_NxD, index_n) -> dict:
    """Uniformity of the rows `index_n` of x: h_min (minimum pairwise distance), mean_nn (mean
    distance to the nearest other selected row), n. Distances are exact ||a - b||."""
    index_n = np.asarray(index_n, np.int64)
    if len(np.unique(index_n)) != len(index_n):
        raise ValueError("subset_geometry: the subset repeats example ids")
    if len(index_n) < 2:
        return {"h_min": float("inf"), "mean_nn": float("inf"), "n": int(len(index_n))}
    _, dist_n = selection.nearest_neighbor(np.asarray(x_NxD, np.float32)[index_n])
    dist_n = np.asarray(dist_n, np.float64)
    return {"h_min": float(dist_n.min()), "mean_nn": float(dist_n.mean()), "n": int(len(index_n))}


def subset_counts(num_items: int, index_n) -> np.ndarray:
    """[N] 0/1 counts of a subset: the multiset `data.Epochs` visits (each pick once per epoch)."""
    index_n = np.asarray(index_n, np.int64)
    if len(index_n) == 0 or index_n.min() < 0 or index_n.max() >= num_items:
        raise ValueError(f"subset_counts: ids must be a non-empty subset of [0, {num_items})")
    if len(np.unique(index_n)) != len(index_n):
        raise ValueError("subset_counts: the subset repeats example ids")
    counts_N = np.zeros(num_items, np.int64)
    counts_N[index_n] = 1
    return counts_N


def eval_steps(num_steps: int, num_evals: int) -> tuple[int, ...]:
    """num_evals + 1 evenly spaced steps 0, ..., num_steps (duplicates dropped)."""
    if num_steps < 1 or num_evals < 1:
        raise ValueError(f"eval_steps: num_steps and num_evals must be >= 1, got {num_steps}, {num_evals}")
    return tuple(sorted({int(round(s)) for s in np.linspace(0, num_steps, num_evals + 1)}))


# ----------------------------------------------------------------------------- training on a subset


class HeldoutLossHook(ScoringHook):
    """`ScoringHook` on a held-out set: logs the mean per-example response loss as `heldout_loss`."""

    name = "heldout_loss"

    def __call__(self, state, step):
        out = super().__call__(state, step)
        return {"heldout_loss": out.pop("pool_loss"), **{k.replace("score_", "heldout_"): v for k, v in out.items()}}


@dataclasses.dataclass
class SubsetRun:
    counts_N: np.ndarray          # [N] 0/1: the subset
    train: FinetuneResult
    store: TrajectoryStore        # held-out losses [N_heldout, K] at store.steps

    @property
    def steps_K(self) -> np.ndarray:
        return np.asarray(self.store.steps)

    @property
    def curve_K(self) -> np.ndarray:
        """Mean held-out response loss at each eval step."""
        return self.store.losses.mean(0)

    @property
    def example_id_SxB(self) -> np.ndarray:
        """The example ids the trainer drew, [steps, B] (fit's history)."""
        return np.asarray(self.train.fit.history["example_id"]).astype(np.int64)


def finetune_on_subset(model: Decoder, examples: Examples, index_n, heldout: Examples, cfg: FinetuneConfig,
                       num_steps: int, *, batch_size: int, key, pad_id: int, eval_steps: Sequence[int],
                       ctx=None, store_path: str | Path | None = None, length: int | None = None,
                       score_batch_size: int = 64, bucket: int = 16, chunk_size: int = 50,
                       perm_seed: int = 0) -> SubsetRun:
    """Fine-tunes `model` (modified in place) for `num_steps` steps on epochs of the examples
    `index_n` only (`data.Epochs` with 0/1 counts: each epoch visits every pick once, in a fresh
    order from `key`), scoring every `heldout` example's response loss at `eval_steps` (into
    `store_path`, default `ctx.dir / "heldout.npz"`). Batches are right-padded to `length`
    (default: the longest example of the whole pool, so every subset compiles the same program).
    """
    counts_N = subset_counts(len(examples), index_n)
    if store_path is None:
        if ctx is None:
            raise ValueError("finetune_on_subset needs store_path or ctx")
        store_path = Path(ctx.dir) / "heldout.npz"
    steps = tuple(int(s) for s in eval_steps)
    if not steps or min(steps) < 0 or max(steps) > num_steps:
        raise ValueError(f"finetune_on_subset: eval_steps must lie in [0, {num_steps}], got {steps}")
    length = pl.batch_length(examples) if length is None else length
    batches = pl.epoch_batches(examples, counts_N, key, batch_size, pad_id=pad_id, length=length, perm_seed=perm_seed)
    split, params = prepare(model, cfg)
    store = TrajectoryStore(store_path, len(heldout), steps)
    hook = HeldoutLossHook(store, jit_scorer(make_score_loss(split, cfg)), heldout, args=(split.frozen,),
                           batch_size=score_batch_size, bucket=bucket)
    result = finetune_split(split, params, batches, cfg, num_steps, ctx=ctx, hooks=(hook,), chunk_size=chunk_size,
                            desc=f"arm {getattr(ctx, 'name', '')}".strip())
    return SubsetRun(counts_N, result, store)


__all__ = ["example_text", "text_features", "hidden_features", "kcenter_subset", "random_subset", "subset_geometry",
           "subset_counts", "eval_steps", "HeldoutLossHook", "SubsetRun", "finetune_on_subset"]
