"""Per-example loss trajectories: every training example's loss at K chosen steps.

The [N, K] trajectory array (with leading member axes for vmapped ensembles, e.g. [S, N, K])
is what the hard/easy clustering consumes. The same store serves the synthetic tasks (pools
scored in one jitted pass) and the LLM path (host-side scoring, rows written in blocks).

    store   = TrajectoryStore(run_dir / "trajectories.npz", num_examples=N, steps=steps)
    tracker = LossTracker(pool_scorer(loss_fn), store, args=(pool,))   # a fit() hook at store.steps
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import io
from lsb_jax.train.loop import Hook


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
    """

    def __init__(self, path: str | Path | None, num_examples: int, steps: Sequence[int], member_shape: tuple = ()):
        self.path = Path(path) if path is not None else None
        self.steps = tuple(int(s) for s in steps)
        self.num_examples = int(num_examples)
        self.member_shape = tuple(member_shape)
        self.losses = np.full(self.member_shape + (self.num_examples, len(self.steps)), np.nan, np.float32)
        self.done = np.zeros((self.num_examples, len(self.steps)), bool)
        if self.path is not None and self.path.exists():
            self.load()

    def load(self) -> None:
        with np.load(self.path) as data:
            if tuple(data["steps"]) != self.steps or data["losses"].shape != self.losses.shape:
                raise ValueError(f"{self.path}: trajectory store has steps {tuple(data['steps'])} and shape "
                                 f"{data['losses'].shape}, expected {self.steps} and {self.losses.shape}")
            self.losses = data["losses"].copy()
            self.done = data["done"].copy()

    def save(self) -> None:
        if self.path is not None:
            io.save_npz(self.path, losses=self.losses, done=self.done, steps=np.asarray(self.steps))

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
        losses = np.asarray(jax.device_get(self._score(state.params, *self.args)))
        self.store.write(step, losses)
        return {"pool_loss": losses.mean(axis=-1)}

    def load_state_dict(self, d: dict) -> None:
        if self.store.path is not None and self.store.path.exists():
            self.store.load()
