"""Proxy loss trajectories: train a small LM, score every training example at K checkpoints.

    cfg = ProxyConfig(finetune=FinetuneConfig(optim=OptimConfig(name="adamw", lr=2e-5)),
                      epoch_fraction=1 / 3, num_checkpoints=5)
    out = proxy_trajectories(load_pretrained("EleutherAI/pythia-70m"), batches, examples, cfg,
                             batch_size=32, ctx=ctx)                 # out.store.losses: [N, K]
    counts_N, hard_N = selection_counts(out.store.losses, "hard", factor=2)  # tracking.clustering

Scoring (`score_into`) is host-driven and resumable: the rows of a column that are not yet in
the `TrajectoryStore` are sorted by length, cut into blocks of `rows_per_save`, each block into
batches of `batch_size` (the last padded with copies of a real row, dropped after), every batch
trimmed to its longest row rounded up to `bucket` tokens (few shapes compile; trailing
all-padding columns cannot change a causal model's loss), put with its batch axis over the
mesh's (data, fsdp) axes and scored by one jitted per-example loss. After each block the store
is saved atomically, so a killed run resumes without recomputing finished rows.

During proxy training the scorer is a `fit` hook at the K checkpoint steps, which are also the
checkpoint steps (`checkpoint_every` = their spacing): a run killed while scoring step s resumes
from the checkpoint before s, retrains to the bit-identical parameters of step s and scores only
the missing rows.

Which examples an ablation arm upsamples is `tracking.clustering.selection_counts` (k-means on the
trajectories or on the final loss, top-q by final loss, random subsets of the same size, optionally
per group such as MathInstruct's `source`), shared with the theory and synthetic experiments.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lsb_jax.llm.finetune import (FinetuneConfig, FinetuneResult, Split, finetune_split, make_split_loss_fn, prepare,
                                  steps_for_epochs)
from lsb_jax.models.lm.model import Decoder
from lsb_jax.models.lm.sharding import batch_sharding
from lsb_jax.tracking.trajectories import TrajectoryStore
from lsb_jax.train import Hook
from lsb_jax.train.hosts import to_host

Pool = Any   # dict of [N, T] arrays (tokens, loss_mask, attention_mask), or `llm.data.Examples`


# ----------------------------------------------------------------------------- pool access


def pool_size(pool: Pool) -> int:
    return len(pool["tokens"]) if isinstance(pool, dict) else len(pool)


def pool_lengths(pool: Pool) -> np.ndarray:
    """[N] tokens per example (real tokens: attention_mask sums, or `Examples.lengths_N`)."""
    if isinstance(pool, dict):
        mask = pool.get("attention_mask")
        return (np.asarray(mask).sum(1) if mask is not None else np.full(len(pool["tokens"]), pool["tokens"].shape[1]))
    return np.asarray(pool.lengths_N)


def pool_batch(pool: Pool, rows: np.ndarray, bucket: int) -> dict[str, np.ndarray]:
    """tokens, loss_mask, attention_mask [len(rows), T'] with T' = the last real column + 1 rounded
    up to `bucket` (never more than the pool's T); `Examples` are right-padded by `llm.data.pad_batch`."""
    if not isinstance(pool, dict):
        from lsb_jax.llm.data import pad_batch
        batch = pad_batch(pool, rows, pad_id=0, length_multiple=bucket)
        return {k: batch[k] for k in ("tokens", "loss_mask", "attention_mask")}
    batch = {k: np.asarray(pool[k])[rows] for k in ("tokens", "loss_mask", "attention_mask") if k in pool}
    T = batch["tokens"].shape[1]
    real = batch.get("attention_mask", np.ones_like(batch["tokens"])) != 0
    last = int(np.flatnonzero(real.any(0)).max(initial=0)) + 1
    keep = min(T, -(-last // bucket) * bucket)
    return {k: v[:, :keep] for k, v in batch.items()}


# ----------------------------------------------------------------------------- scoring


@dataclasses.dataclass
class ScoreCost:
    rows: int = 0
    tokens: int = 0          # real tokens (attention mask) scored
    padded_tokens: int = 0   # tokens in the computed batches, padding included
    seconds: float = 0.0

    def add(self, other: "ScoreCost") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_metrics(self, prefix: str = "score_") -> dict:
        return {prefix + "rows": self.rows, prefix + "tokens": self.tokens,
                prefix + "padded_tokens": self.padded_tokens, prefix + "seconds": self.seconds}


def jit_scorer(loss_fn: Callable, mesh: Mesh | None = None) -> Callable:
    """jit(loss_fn(*args, batch) -> [B]); with a mesh the output is replicated (every process
    can read it)."""
    if mesh is None:
        return jax.jit(loss_fn)
    return jax.jit(loss_fn, out_shardings=NamedSharding(mesh, PartitionSpec()))


def _put(batch: dict, mesh: Mesh | None) -> dict:
    if mesh is None:
        return batch
    return {k: jax.device_put(v, batch_sharding(mesh, v.ndim, batch_size=v.shape[0])) for k, v in batch.items()}


def score_into(store: TrajectoryStore, step: int, score: Callable, args: tuple, pool: Pool, *,
               batch_size: int = 32, rows_per_save: int = 1024, bucket: int = 64, mesh: Mesh | None = None,
               on_block: Callable[[int, int], None] | None = None) -> ScoreCost:
    """Fills the missing rows of `store`'s column for `step` with `score(*args, batch) -> [B]`.

    `score` should be jitted (`jit_scorer`). The store is saved after every block of
    `rows_per_save` rows (by every process, to its own store); `on_block(rows_done, rows_missing)` runs after each
    save. Returns the cost of the rows computed in this call.
    """
    if batch_size < 1 or rows_per_save < 1 or bucket < 1:
        raise ValueError("batch_size, rows_per_save and bucket must be >= 1")
    if pool_size(pool) != store.num_examples:
        raise ValueError(f"the pool has {pool_size(pool)} examples but the store expects {store.num_examples}")
    missing = store.missing_rows(step)
    missing = missing[np.argsort(pool_lengths(pool)[missing], kind="stable")]
    cost, done_cost = ScoreCost(), ScoreCost()
    t0 = time.perf_counter()
    block = max(batch_size, rows_per_save // batch_size * batch_size)
    for start in range(0, len(missing), block):
        rows = missing[start:start + block]
        losses = []
        for b0 in range(0, len(rows), batch_size):
            idx = rows[b0:b0 + batch_size]
            padded = np.concatenate([idx, np.repeat(idx[:1], batch_size - len(idx))])
            batch = pool_batch(pool, padded, bucket)
            loss_B = score(*args, _put(batch, mesh))
            losses.append(np.asarray(to_host(loss_B))[:len(idx)])
            cost.tokens += int(np.asarray(batch["attention_mask"])[:len(idx)].sum()) if "attention_mask" in batch \
                else batch["tokens"][:len(idx)].size
            cost.padded_tokens += batch["tokens"].size
        store.write(step, np.concatenate(losses), rows=rows, save=False)
        cost.rows += len(rows)
        block_cost = ScoreCost(rows=len(rows), tokens=cost.tokens - done_cost.tokens,
                               padded_tokens=cost.padded_tokens - done_cost.padded_tokens,
                               seconds=time.perf_counter() - t0 - done_cost.seconds)
        store.add_stats(step, **block_cost.to_metrics())   # saved with the rows it describes
        done_cost.add(block_cost)
        store.save()    # several processes: each its own copy (`runner`: each runs in its own folder)
        if on_block is not None:
            on_block(start + len(rows), len(missing))
    cost.seconds = time.perf_counter() - t0
    return cost


class ScoringHook(Hook):
    """fit() hook: at each of the store's steps, scores the whole pool with the trained params
    (`score(params, *args, batch)`), resuming from the rows already in the store."""

    name = "proxy_scores"

    def __init__(self, store: TrajectoryStore, score: Callable, pool: Pool, args: tuple = (), **score_kw):
        super().__init__(at=store.steps)
        self.store, self.score, self.pool, self.args, self.score_kw = store, score, pool, tuple(args), score_kw

    @property
    def cost(self) -> ScoreCost:
        """The scoring cost of every column so far (from the store: a resumed run counts the rows
        scored before the kill too)."""
        stats = self.store.stats
        return ScoreCost(**{f.name: (type(getattr(ScoreCost(), f.name)))(stats[f"score_{f.name}"].sum())
                            for f in dataclasses.fields(ScoreCost) if f"score_{f.name}" in stats})

    def __call__(self, state, step):
        score_into(self.store, step, self.score, (state.params, *self.args), self.pool, **self.score_kw)
        losses = self.store.losses[..., self.store.column(step)]
        column = self.store.column_stats(step)
        counts = {k: (int(v) if not k.endswith("seconds") else v) for k, v in column.items()}
        return {"pool_loss": float(np.mean(losses)), **counts}

    def state_dict(self) -> dict:
        return {"store": self.store.snapshot()}

    def load_state_dict(self, d: dict) -> None:
        if self.store.path is not None and self.store.path.exists():
            self.store.load()
        self.store.verify(d.get("store", {}))


# ----------------------------------------------------------------------------- proxy trajectories


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """Proxy training (a fraction of an epoch) and scoring (K evenly spaced checkpoints).

    Steps: T = ceil(epoch_fraction * N / batch_size) rounded to a multiple of K; scored at
    T/K, 2T/K, ..., T (and at 0 with include_start). `checkpoint_every` = T/K.
    """

    finetune: FinetuneConfig = FinetuneConfig()
    epoch_fraction: float = 1.0 / 3.0
    num_checkpoints: int = 5
    include_start: bool = False
    score_batch_size: int = 32
    rows_per_save: int = 1024
    bucket: int = 64

    def __post_init__(self):
        if not self.epoch_fraction > 0:
            raise ValueError(f"ProxyConfig.epoch_fraction must be > 0, got {self.epoch_fraction}")
        if self.num_checkpoints < 1:
            raise ValueError(f"ProxyConfig.num_checkpoints must be >= 1, got {self.num_checkpoints}")
        for f in ("score_batch_size", "rows_per_save", "bucket"):
            if getattr(self, f) < 1:
                raise ValueError(f"ProxyConfig.{f} must be >= 1, got {getattr(self, f)}")

    def schedule(self, num_examples: int, batch_size: int) -> tuple[int, tuple[int, ...]]:
        """(total steps, scored steps)."""
        every = max(1, round(steps_for_epochs(num_examples, batch_size, self.epoch_fraction) / self.num_checkpoints))
        steps = tuple(every * k for k in range(0 if self.include_start else 1, self.num_checkpoints + 1))
        return every * self.num_checkpoints, steps


@dataclasses.dataclass
class ProxyResult:
    store: TrajectoryStore
    train: FinetuneResult
    cost: dict        # train/score tokens and seconds


def make_score_loss(split: Split, cfg: FinetuneConfig) -> Callable:
    """score(params, frozen, batch) -> loss_B: the eval-mode (no dropout) per-example loss."""
    loss_fn = make_split_loss_fn(split.graphdef, cfg, train=False)
    return lambda params, frozen, batch: loss_fn(params, frozen, batch, None)


def proxy_trajectories(model: Decoder, batches: Iterator[dict], pool: Pool, cfg: ProxyConfig, batch_size: int, *,
                       ctx=None, store_path: str | Path | None = None, checkpoint_dir=None,
                       resume: bool | None = None, mesh: Mesh | None = None, chunk_size: int = 10,
                       pad_length: int | None = None,
                       on_block: Callable[[int, int], None] | None = None) -> ProxyResult:
    """Trains the proxy on `batches` and scores every example of `pool` at the K checkpoints.

    The trajectories go to `store_path` (default `ctx.dir / "trajectories.npz"`), rows of the
    store = examples of the pool in order (their example ids). Training checkpoints go to
    `ctx.checkpoint_dir` or `checkpoint_dir`; with `resume` a killed run continues (training
    bit-exact, scoring from the saved rows). Cost (tokens, seconds) of training and scoring is
    returned and logged as metrics at the scored steps.
    """
    n = pool_size(pool)
    num_steps, steps = cfg.schedule(n, batch_size)
    if store_path is None:
        if ctx is None:
            raise ValueError("proxy_trajectories needs store_path or ctx")
        store_path = Path(ctx.dir) / "trajectories.npz"
    store = TrajectoryStore(store_path, n, steps)
    split, params = prepare(model, cfg.finetune, mesh)
    hook = ScoringHook(store, jit_scorer(make_score_loss(split, cfg.finetune), mesh), pool, args=(split.frozen,),
                       batch_size=cfg.score_batch_size, rows_per_save=cfg.rows_per_save, bucket=cfg.bucket,
                       mesh=mesh, on_block=on_block)
    result = finetune_split(split, params, batches, cfg.finetune, num_steps, ctx=ctx, mesh=mesh, hooks=(hook,),
                            checkpoint_every=num_steps // cfg.num_checkpoints, checkpoint_dir=checkpoint_dir,
                            resume=resume, chunk_size=chunk_size, pad_length=pad_length,
                            desc=f"proxy {getattr(ctx, 'name', '')}".strip())
    if not store.complete:
        raise RuntimeError(f"{store.path}: trajectories incomplete after training (missing "
                           f"{int((~store.done).sum())} entries)")
    cost = {"train_tokens": result.tokens, "train_seconds": result.seconds, **hook.cost.to_metrics()}
    return ProxyResult(store, result, cost)
