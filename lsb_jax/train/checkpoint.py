"""Verified orbax checkpoints of the train state plus JSON metadata (hook, data-iterator and run state).

One checkpoint = one step directory with three items: `state` (the TrainState pytree: params,
optimizer state, step, PRNG key), `meta` (JSON: hook states, host data-iterator state, guard and
metrics positions) and `checksums` (JSON: one checksum per state leaf and one of the meta item,
computed from the values being saved). Orbax writes into a temporary directory and renames it
when complete, so a run killed while saving leaves the previous checkpoint as the latest one.

`restore` verifies what it read against the checksums: a checkpoint whose files are missing,
truncated or unreadable, or whose values do not match (a flipped bit), is reported by step and
item, moved aside to `<directory>-corrupt/<step>` (kept for inspection; out of the manager's
way, so the step can be written again) and the newest intact checkpoint is used instead; with
none intact `CheckpointCorrupt` names every problem. Checkpoints written before checksums
existed restore unverified (with a warning).

The leaf checksum is computed on the devices (works for sharded arrays on any number of hosts):
the leaf's bits as uint32 words w_i, two sums mod 2^32 of w_i times odd position-dependent
multipliers. Any single flipped bit changes both sums (2^k times an odd number is never 0 mod
2^32), and summation order does not matter in modular arithmetic, so the value is the same on
every backend and sharding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath  # a dependency of orbax

from lsb_jax import io
from lsb_jax.errors import ResumeMismatch, RunFailure
from lsb_jax.train.hosts import to_host


class CheckpointCorrupt(RunFailure, RuntimeError):
    """No intact checkpoint to restore (each problem named by step and item)."""


class CheckpointWriteError(RunFailure, OSError):
    """Saving a checkpoint failed (disk full, permissions); names the step and directory."""


def _words(x: jax.Array) -> jax.Array:
    """The leaf's bits as a flat uint32 vector (narrow dtypes widened, 64-bit ones split)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if jnp.iscomplexobj(x):
        x = jnp.stack([jnp.real(x), jnp.imag(x)], -1)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = x.dtype.itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}
    if size in unsigned:
        w = jax.lax.bitcast_convert_type(x, unsigned[size]).astype(jnp.uint32)
    else:  # 8-byte dtypes (x64 mode) -> [..., 2] uint32
        w = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return w.reshape(-1)


def _leaf_checksum(x: jax.Array) -> jax.Array:
    w = _words(x)
    i = jnp.arange(w.shape[0], dtype=jnp.uint32)
    a = jnp.sum(w * (i * jnp.uint32(0x9E3779B1) | jnp.uint32(1)), dtype=jnp.uint32)
    rotated = (w << jnp.uint32(13)) | (w >> jnp.uint32(19))
    b = jnp.sum(rotated * ((i ^ jnp.uint32(0x5BD1E995)) * jnp.uint32(0x85EBCA77) | jnp.uint32(1)), dtype=jnp.uint32)
    return jnp.stack([a, b])


_checksum_tree = jax.jit(lambda tree: jax.tree.map(_leaf_checksum, tree))


def _host(x) -> np.ndarray:
    """A replicated (or single-device) array's value on this host, also when it spans other hosts."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(to_host(x))


def tree_checksums(tree: Any) -> dict[str, str]:
    """{dotted leaf path: 16 hex digits} of a pytree of arrays (see the module docstring)."""
    leaves = [(io.dotted_path(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree) if hasattr(x, "dtype")]
    sums = _checksum_tree([jnp.asarray(x) if not isinstance(x, jax.Array) else x for _, x in leaves])
    return {path: "".join(f"{int(v):08x}" for v in _host(s)) for (path, _), s in zip(leaves, sums)}


def meta_checksum(meta: dict) -> str:
    """sha256 of the meta item's canonical JSON (what JsonSave writes and JsonRestore returns)."""
    canonical = json.loads(json.dumps(io.to_jsonable(meta)))
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _first_line(e: BaseException, limit: int = 160) -> str:
    """A short cause: the OS error when tensorstore names one (ENOSPC, EACCES), else the first line."""
    code = re.search(r"os_error_code='(\d+)'", str(e))
    if code:
        return f"{os.strerror(int(code.group(1)))} (errno {code.group(1)})"
    text = str(e).strip().splitlines()
    text = text[0].split(" See full TensorStore details")[0] if text else ""
    return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


@contextlib.contextmanager
def _orbax_errors_raised_not_logged():
    """orbax logs a failed write or read from each of its threads (a traceback per thread) and then
    raises; we report one line naming the step and the cause, so its ERROR logs are held back meanwhile."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class _UnretrievedReads(logging.Filter):
    """Drops asyncio's "exception was never retrieved" reports of a failed orbax read's other reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("was never retrieved" in text and ("tensorstore" in text or "OCDBT" in text))


def _loop_closed(value, tb) -> bool:
    """asyncio's "Event loop is closed", raised in its `_check_closed` (a completion arriving late)."""
    last = traceback.extract_tb(tb)[-1:] if tb is not None else []
    return isinstance(value, RuntimeError) and str(value) == "Event loop is closed" and \
        any(f.name == "_check_closed" for f in last)


def _drop_read_stragglers() -> None:
    """A failed orbax read closes its event loop while tensorstore's other reads are in flight; as
    they complete, tensorstore's threads report "RuntimeError: Event loop is closed" (through
    sys.unraisablehook, or sys.excepthook: each prints a traceback), orbax's read coroutines closed
    mid-read report their errors, asyncio logs the unretrieved futures and Python warns of
    never-awaited coroutines: at random, up to the process's exit, after the one line we report.
    Installed once, before the first read: drops those, passes everything else on."""
    if getattr(sys.unraisablehook, "drops_read_stragglers", False):
        return
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def unraisable_hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)     # an orbax read coroutine closed mid-read
        if _loop_closed(unraisable.exc_value, unraisable.exc_traceback) or \
                (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename):
            return
        previous_unraisable(unraisable)

    def except_hook(kind, value, tb):
        if not _loop_closed(value, tb):
            previous_except(kind, value, tb)

    unraisable_hook.drops_read_stragglers = True
    sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook
    logging.getLogger("asyncio").addFilter(_UnretrievedReads())
    warnings.filterwarnings("ignore", message=r"coroutine '\w+\._get_array_metadatas' was never awaited",
                            category=RuntimeWarning)


class Checkpointer:
    def __init__(self, directory: str | Path, max_to_keep: int = 2, async_save: bool = False):
        # remote paths (gs://bucket/..., as on TPU VMs) go through etils' epath; local ones are absolutized
        self.directory = epath.Path(directory) if "://" in str(directory) else Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._mgr = ocp.CheckpointManager(self.directory, options=options)
        self._async = async_save
        self.problems: list[str] = []     # corrupt checkpoints found by restore (by step)

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def save(self, step: int, state: Any, meta: dict | None = None) -> None:
        meta = io.to_jsonable(meta or {})
        sums = {"state": tree_checksums(state), "meta": meta_checksum(meta)}
        try:
            with _orbax_errors_raised_not_logged():
                self._mgr.save(int(step), args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
                    checksums=ocp.args.JsonSave(sums)))
                if not self._async:
                    self._mgr.wait_until_finished()
        except Exception as e:  # disk full, permissions, a remote store failing
            raise CheckpointWriteError(f"writing checkpoint step {step} to {self.directory}: {_first_line(e)}") from e

    def _step_dir(self, step: int):
        return self.directory / str(int(step))

    def _read(self, step: int, target: Any) -> tuple[Any, dict, str | None]:
        """(state, meta, problem or None): one checkpoint read and checked against its checksums."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        verified = (self._step_dir(step) / "checksums").exists()
        items = dict(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        if verified:
            items["checksums"] = ocp.args.JsonRestore()
        _drop_read_stragglers()   # before: a failing read reports its other reads from the first moment
        try:
            with _orbax_errors_raised_not_logged():   # the problem is reported once, by step, by `restore`
                out = self._mgr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # missing/truncated files, bad metadata, wrong structure
            return None, {}, f"unreadable ({_first_line(e)})"
        meta = dict(out.meta or {})
        if not verified:
            print(f"warning: checkpoint step {step} in {self.directory} has no checksums (written by an older "
                  "version): restored unverified", file=sys.stderr)
            return out.state, meta, None
        sums = dict(out.checksums or {})
        bad = [p for p, c in tree_checksums(out.state).items() if sums.get("state", {}).get(p) != c]
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            return None, {}, f"checksum mismatch in state item {', '.join(bad[:3])}{more}"
        if sums.get("meta") != meta_checksum(meta):
            return None, {}, "checksum mismatch in the meta item"
        return out.state, meta, None

    def _other_shapes(self, step: int, target: Any) -> str | None:
        """How checkpoint `step`'s stored state differs in shapes from `target` (its leaves' shapes
        compared as multisets, from the metadata alone), or None when they agree or the metadata
        cannot be read (then `_read` reports the checkpoint as unreadable)."""
        _drop_read_stragglers()   # reading the arrays' metadata of a damaged checkpoint can fail the same way
        try:   # the state item's own metadata file (the manager knows its handler only after a save)
            stored = ocp.PyTreeCheckpointHandler().metadata(self._step_dir(step) / "state")
            stored = sorted(tuple(m.shape) for m in jax.tree.leaves(getattr(stored, "tree", stored)))
        except Exception:   # missing or corrupt metadata: a problem of the checkpoint, found by `_read`
            return None
        if not stored:
            return None
        wanted = sorted(tuple(x.shape) if hasattr(x, "shape") else np.shape(x) for x in jax.tree.leaves(target))
        if stored == wanted:
            return None
        only_stored = [x for x in stored if stored.count(x) > wanted.count(x)]
        only_wanted = [x for x in wanted if wanted.count(x) > stored.count(x)]
        return (f"{len(stored)} arrays, of which {', '.join(map(str, sorted(set(only_stored))[:3])) or 'none'} are "
                f"not this run's; the run has {len(wanted)}, of which "
                f"{', '.join(map(str, sorted(set(only_wanted))[:3])) or 'none'} are not in the checkpoint")

    def verify(self, step: int, target: Any) -> str | None:
        """The problem of checkpoint `step` (None if intact), read into `target`'s structure."""
        return self._read(step, target)[2]

    def newest_intact(self, target: Any) -> int | None:
        """The newest step that reads back and verifies (no side effects), or None."""
        for step in reversed(self.all_steps()):
            if self.verify(step, target) is None:
                return step
        return None

    def _quarantine(self, step: int) -> Any:
        """Moves a corrupt step directory to `<directory>-corrupt/<step>[-<time>]`."""
        src = self._step_dir(step)
        parent = self.corrupt_dir
        dst = parent / str(step)
        if dst.exists():
            dst = parent / f"{step}-{int(time.time())}"
        if jax.process_index() == 0:       # one host moves it; every host then rescans
            parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, Path):
                shutil.move(str(src), str(dst))
            else:
                src.rename(dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"lsb_quarantine_{step}")
        self._mgr.reload()
        return dst

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores into the structure, shapes, dtypes and shardings of `target`.

        `step=None`: the newest intact checkpoint; corrupt newer ones are reported on stderr,
        recorded in `problems` and moved aside. An explicit `step` must be intact.
        """
        steps = self.all_steps() if step is None else [int(step)]
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        found = []
        for s in reversed(steps):
            other = self._other_shapes(s, target)
            if other is not None:   # intact, but another run's shapes: nothing to quarantine
                raise ResumeMismatch(f"checkpoint step {s} in {self.directory} holds a state of other shapes than "
                                     f"this run's ({other}): written with another device count (--cpu-devices), "
                                     "member count or config? Resume as it was run, or start over with --force")
            state, meta, problem = self._read(s, target)
            if problem is None:
                if found:
                    print(f"resuming from checkpoint step {s}, the newest intact one in {self.directory}",
                          file=sys.stderr)
                return state, meta
            found.append(f"step {s}: {problem}")
            self.problems.append(found[-1])
            if step is None:
                moved = self._quarantine(s)
                print(f"warning: checkpoint step {s} in {self.directory} is corrupt ({problem}); moved to {moved}",
                      file=sys.stderr)
        raise CheckpointCorrupt(f"no intact checkpoint in {self.directory} ({'; '.join(found)}): "
                                "start over with --force")

    @property
    def corrupt_dir(self):
        """`<directory>-corrupt/`: where `restore` moves corrupt steps."""
        return self.directory.parent / f"{self.directory.name}-corrupt"

    def quarantined(self) -> list[str]:
        """The corrupt checkpoints moved aside by an earlier `restore`."""
        return sorted(p.name for p in self.corrupt_dir.iterdir()) if self.corrupt_dir.exists() else []

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()
