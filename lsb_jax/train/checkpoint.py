"""Orbax checkpoints of the train state plus JSON metadata (hook, data-iterator and run state).

One checkpoint = one step directory with two items: `state` (the TrainState pytree: params,
optimizer state, step, PRNG key) and `meta` (JSON: hook states, host data-iterator state).
Orbax writes into a temporary directory and renames it when complete, so a run killed while
saving leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath  # a dependency of orbax


class Checkpointer:
    def __init__(self, directory: str | Path, max_to_keep: int = 2, async_save: bool = False):
        # remote paths (gs://bucket/..., as on TPU VMs) go through etils' epath; local ones are absolutized
        self.directory = epath.Path(directory) if "://" in str(directory) else Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, step: int, state: Any, meta: dict | None = None) -> None:
        self._mgr.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})))

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores into the structure, shapes, dtypes and shardings of `target`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self._mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out.state, dict(out.meta or {})

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()
