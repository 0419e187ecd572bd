"""Per-example loss trajectories: every training example's loss at K chosen steps.

The [N, K] trajectory array (with leading member axes for vmapped ensembles, e.g. [S, N, K])
is what the hard/easy clustering consumes. The same store serves the synthetic tasks (pools
scored in one jitted pass) and the LLM path (host-side scoring, rows written in blocks).

    store   = TrajectoryStore(run_dir / "trajectories.npz", num_examples=N, steps=steps)
    tracker = LossTracker(pool_scorer(loss_fn), store, args=(pool,))   # a fit() hook at store.steps
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import io
from lsb_jax.errors import ResumeMismatch
from lsb_jax.train.loop import Hook
from lsb_jax.train.hosts import to_host


def evenly_spaced_steps(num_steps: int, num_points: int, include_start: bool = True) -> tuple[int, ...]:
    """K = num_points distinct steps spread evenly over [0 or 1, num_steps], ending at num_steps."""
    if num_points < 1:
        raise ValueError("num_points must be >= 1")
    lo = 0 if include_start else max(1, num_steps // num_points)
    steps = np.unique(np.round(np.linspace(lo, num_steps, num_points)).astype(int))
    return tuple(int(s) for s in steps)


class TrajectoryStore:
    """An on-disk [..., N, K] float32 array of losses plus a [N, K] mask of filled entries.

    Every write is atomic (the whole file is replaced), so a killed run leaves the last
    consistent store; `load()` of an existing file resumes without recomputing filled rows.
    `stats` holds per-column counters saved with the rows they describe (e.g. the scoring cost
    of each column), so a resumed run reports the same totals as an uninterrupted one.
    `snapshot()` (kept in a checkpoint) and `verify(snapshot)` (on resume) catch a store that was
    deleted, truncated or replaced since the checkpoint.
    """

    def __init__(self, path: str | Path | None, num_examples: int, steps: Sequence[int], member_shape: tuple = ()):
        self.path = Path(path) if path is not None else None
        self.steps = tuple(int(s) for s in steps)
        self.num_examples = int(num_examples)
        self.member_shape = tuple(member_shape)
        self.losses = np.full(self.member_shape + (self.num_examples, len(self.steps)), np.nan, np.float32)
        self.done = np.zeros((self.num_examples, len(self.steps)), bool)
        self.stats: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            self.load()

    def load(self) -> None:
        try:
            with np.load(self.path) as data:
                steps, losses, done = tuple(data["steps"]), data["losses"].copy(), data["done"].copy()
                stats = {k[len("stat_"):]: data[k].copy() for k in data.files if k.startswith("stat_")}
        except (zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError) as e:
            raise ResumeMismatch(f"{self.path}: unreadable trajectory store ({type(e).__name__}: {e}); it cannot be "
                                 "rebuilt without retraining: start over with --force") from None
        if steps != self.steps or losses.shape != self.losses.shape or done.shape != self.done.shape:
            raise ResumeMismatch(f"{self.path}: trajectory store has steps {steps} and shape {losses.shape}, this "
                                 f"run expects {self.steps} and {self.losses.shape} (written by another "
                                 "configuration): move it away or start over with --force")
        self.losses, self.done, self.stats = losses, done, stats

    def save(self) -> None:
        if self.path is not None:
            io.save_npz(self.path, losses=self.losses, done=self.done, steps=np.asarray(self.steps),
                        **{f"stat_{k}": v for k, v in self.stats.items()})

    def add_stats(self, step: int, **values: float) -> None:
        """Adds to the per-column counters of `step` (saved with the next `save`)."""
        k = self.column(step)
        for name, value in values.items():
            col = self.stats.setdefault(name, np.zeros(len(self.steps), np.float64))
            col[k] += value

    def column_stats(self, step: int) -> dict[str, float]:
        k = self.column(step)
        return {name: float(v[k]) for name, v in self.stats.items()}

    def _digest(self, columns: Sequence[int]) -> str:
        h = hashlib.sha256()
        for k in columns:
            h.update(np.ascontiguousarray(self.losses[..., k]).tobytes())
        return h.hexdigest()

    def snapshot(self) -> dict:
        """The complete columns and a sha256 of their losses (what a checkpoint depends on)."""
        cols = [k for k in range(len(self.steps)) if self.done[:, k].all()]
        return {"complete_steps": [self.steps[k] for k in cols], "sha256": self._digest(cols)}

    def verify(self, snapshot: dict) -> None:
        """Raises `ResumeMismatch` unless the columns complete at the snapshot still are, unchanged."""
        if not snapshot or "complete_steps" not in snapshot:
            return   # a checkpoint of an older version
        cols = [self.column(s) for s in snapshot["complete_steps"]]
        lost = [self.steps[k] for k in cols if not self.done[:, k].all()]
        where = self.path if self.path is not None else "the trajectory store"
        if lost:
            raise ResumeMismatch(f"{where}: the columns of steps {lost} were complete at the checkpoint but are not "
                                 "now (file deleted or replaced?); they cannot be rescored without retraining: "
                                 "start over with --force")
        if self._digest(cols) != snapshot["sha256"]:
            raise ResumeMismatch(f"{where}: losses scored before the checkpoint changed (checksum mismatch): "
                                 "start over with --force")

    def column(self, step: int) -> int:
        try:
            return self.steps.index(int(step))
        except ValueError:
            raise KeyError(f"step {step} is not a tracked step {self.steps}") from None

    def write(self, step: int, losses: np.ndarray, rows: np.ndarray | slice = slice(None), save: bool = True) -> None:
        """Writes losses [..., n] for `rows` (default all) of the column of `step`."""
        k = self.column(step)
        self.losses[..., rows, k] = np.asarray(losses, np.float32)
        self.done[rows, k] = True
        if save:
            self.save()

    def missing_rows(self, step: int) -> np.ndarray:
        return np.flatnonzero(~self.done[:, self.column(step)])

    @property
    def complete(self) -> bool:
        return bool(self.done.all())


def pool_scorer(loss_fn: Callable[[Any, Any], jax.Array], batch_size: int = 1024) -> Callable[[Any, Any], jax.Array]:
    """score(params, pool) -> [N]: loss_fn over the whole pool in chunks of batch_size (lax.map).

    The pool is a pytree of arrays with leading axis N, passed as an argument (so it is a jit
    argument, never a constant baked into the program); it is padded to a multiple of the
    chunk size inside the trace and the padding is dropped. For an ensemble:
    `jax.vmap(pool_scorer(loss_fn), in_axes=(0, None))`.
    """
    def score(params, pool):
        n = jax.tree.leaves(pool)[0].shape[0]
        b = min(batch_size, n)
        chunks = -(-n // b)
        pad = chunks * b - n
        padded = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x, pool)
        blocked = jax.tree.map(lambda x: x.reshape((chunks, b) + x.shape[1:]), padded)
        loss_CxB = jax.lax.map(lambda batch: loss_fn(params, batch), blocked)
        return loss_CxB.reshape(-1)[:n]

    return score


class LossTracker(Hook):
    """fit() hook: at each of the store's steps, records `score_fn(state.params, *args)`.

    score_fn(params, *args) -> [..., N] (e.g. `pool_scorer(loss_fn)` with args=(pool,)); for a
    vmapped ensemble pass `jax.vmap(score, in_axes=(0, None))` so the result is [S, N] (the
    store's member_shape must be (S,)).
    """

    name = "trajectories"

    def __init__(self, score_fn: Callable[..., jax.Array], store: TrajectoryStore, args: tuple = ()):
        super().__init__(at=store.steps)
        self.store = store
        self.args = tuple(args)
        self._score = jax.jit(score_fn)

    def __call__(self, state, step):
        losses = np.asarray(to_host(self._score(state.params, *self.args)))
        self.store.write(step, losses)
        return {"pool_loss": losses.mean(axis=-1)}

    def state_dict(self) -> dict:
        return {"store": self.store.snapshot()}

    def load_state_dict(self, d: dict) -> None:
        if self.store.path is not None and self.store.path.exists():
            self.store.load()
        self.store.verify(d.get("store", {}))
