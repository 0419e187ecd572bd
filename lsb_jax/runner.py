"""Run directories and everything an experiment writes.

`run_experiment` resolves a config, picks the run directory
`runs/<experiment>/<config>-<hash>/` and hands the experiment a `RunContext`, which owns all
I/O: the resolved config, metrics (JSONL + TensorBoard), figures, arrays, checkpoints and
`results.json`. Library code returns arrays; only the context writes files, atomically.

A run directory holds:
    config.json      resolved config and how it was made
    status.json      running | complete | failed (with the error)
    metrics.jsonl    one row per logged step: {"step": s, name: value or [per member]}
    tb/              TensorBoard events of the same metrics
    checkpoints/     orbax checkpoints (train state, data/hook state)
    results.json     what run() returned, plus the list of figures
    *.png, *.npz     figures and arrays
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lsb_jax import analysis
from lsb_jax import claims as claims_lib
from lsb_jax import config as config_lib
from lsb_jax import experiments as exp_lib
from lsb_jax import io
from lsb_jax.errors import ResumeMismatch, UsageError

DEFAULT_RUNS = Path("runs")


MARKER = ".lsb-run"     # written first into every run directory: what --force may delete
LOCK = ".lsb-lock"
HOLDER_WAIT = 5.0      # seconds a run waits for the holder of a lock to write its PID (it does so at once)
PER_EXAMPLE_PREFIX = "example_"   # per-example metrics: in metrics.jsonl, never TensorBoard scalars


class RunExists(UsageError, RuntimeError):
    """The run directory is in the way: an unfinished run (no --resume/--force), a folder that is
    not a run, a file, or a directory that cannot be written."""


class RunLocked(RunExists):
    """Another process holds the run directory's lock."""


class MetricsWriter:
    """Appends metric rows to metrics.jsonl and TensorBoard.

    Values may be scalars or per-member vectors (vmapped seeds/hyperparameters): JSONL keeps the
    vector, TensorBoard gets its mean under `name` and each member under `name/m<i>` (up to 16).
    Names starting with "example_" (a batch's per-example losses and ids: their home is the
    JSONL and the trajectory store) are not written to TensorBoard.
    `position()` (saved in every checkpoint) is the file's length and sha256; `rewind(position)`
    on resume checks that the file still holds exactly those bytes and drops what follows, so a
    deleted, truncated or edited metrics file stops the resume instead of silently shortening
    the run's history.
    """

    def __init__(self, directory: Path, tensorboard: bool = True):
        self.path = directory / "metrics.jsonl"
        self._tb_dir = directory / "tb"
        self._tensorboard = tensorboard
        self._tb = None
        self._file = None
        self._purge_step = None
        self._hash = None       # sha256 of the file's bytes so far (set on first use)
        self._size = 0

    def _sync_hash(self) -> None:
        if self._hash is None:
            data = self.path.read_bytes() if self.path.exists() else b""
            self._hash, self._size = hashlib.sha256(data), len(data)

    def truncate_after(self, step: int) -> None:
        """On resume from a checkpoint without a metrics position (older versions): drop rows
        logged after the checkpoint (and a torn last line) so none appear twice; TensorBoard
        events after it are purged when the writer reopens."""
        self.close()
        rows = [r for r in self.read() if r.get("step", -1) <= step]
        io.write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        self._hash, self._purge_step = None, step + 1

    def position(self) -> dict:
        """{"bytes", "sha256"} of everything written so far (flushed to disk first)."""
        self.flush()
        self._sync_hash()
        return {"bytes": self._size, "sha256": self._hash.hexdigest()}

    def rewind(self, position: dict, step: int) -> None:
        """Back to `position` (recorded by the checkpoint of `step`); raises `ResumeMismatch` when
        the file no longer starts with the bytes the checkpoint saw."""
        self.close()
        size, digest = int(position["bytes"]), position["sha256"]
        data = self.path.read_bytes() if self.path.exists() else b""
        if len(data) < size:
            what = "is missing" if not self.path.exists() else f"has {len(data)} bytes"
            raise ResumeMismatch(f"{self.path} {what}, but the checkpoint of step {step} recorded {size} bytes of "
                                 "metrics (deleted or truncated): the run's history cannot be rebuilt; "
                                 "start over with --force")
        if hashlib.sha256(data[:size]).hexdigest() != digest:
            raise ResumeMismatch(f"{self.path}: the rows logged before the checkpoint of step {step} were changed "
                                 "(checksum mismatch): start over with --force")
        if len(data) > size:
            with io.atomic_path(self.path) as tmp:
                tmp.write_bytes(data[:size])
        self._hash, self._size = hashlib.sha256(data[:size]), size
        self._purge_step = step + 1

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step)}
        row.update(io.to_jsonable(metrics))
        line = (json.dumps(row) + "\n").encode("utf-8")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._sync_hash()
            self._file = io.open_append(self.path)
        io.append(self._file, line, self.path)
        self._hash.update(line)
        self._size += len(line)
        if self._tensorboard:
            self._write_tb(step, metrics)

    def _write_tb(self, step: int, metrics: dict[str, Any]) -> None:
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=str(self._tb_dir), flush_secs=30, purge_step=self._purge_step)
        for name, value in metrics.items():
            arr = np.asarray(value, dtype=np.float64)
            if arr.size == 0 or name.startswith(PER_EXAMPLE_PREFIX):   # a batch's slots are not members
                continue
            if arr.ndim == 0:
                self._tb.add_scalar(name, float(arr), step)
            else:
                flat = arr.reshape(-1)
                self._tb.add_scalar(name, float(np.nanmean(flat)), step)
                if flat.size <= 16:
                    for i, v in enumerate(flat):
                        self._tb.add_scalar(f"{name}/m{i}", float(v), step)

    def read(self) -> list[dict]:
        """All rows written so far (a torn last line from a killed run is skipped)."""
        if not self.path.exists():
            return []
        rows = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def history(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Column arrays {name: [rows, ...]} and name_step for the rows that have each name."""
        rows = [{k: v if k == "step" else _decode(v) for k, v in row.items()} for row in self.read()]
        return analysis.history_from_rows(rows, names)

    def flush(self) -> None:
        """Called before each checkpoint, so nothing logged before it can be lost to a kill."""
        if self._file is not None:
            io.append(self._file, b"", self.path, sync=True)
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _decode(v):
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if v == "NaN":
        return math.nan
    if v == "Infinity":
        return math.inf
    if v == "-Infinity":
        return -math.inf
    return v


@dataclasses.dataclass
class RunContext:
    """What an experiment's run(cfg, ctx) uses to write; passed to `lsb_jax.train.fit`."""

    dir: Path
    config: Any = None
    config_name: str = "quick"
    resume: bool = False
    progress: bool = True
    figures: list[str] = dataclasses.field(default_factory=list)
    root: Path | None = None   # the top run directory (children record figures relative to it)
    # several processes (`run_experiment`): process i > 0 runs in its own folder but checkpoints into
    # the main process's (orbax writes one checkpoint with every process): that folder's root
    checkpoint_root: Path | None = None
    fit_used: bool = dataclasses.field(default=False, init=False, repr=False)   # set by train.fit
    children: list = dataclasses.field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        self.dir = Path(self.dir)
        self.root = Path(self.root) if self.root is not None else self.dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsWriter(self.dir)

    # --- structure -------------------------------------------------------------------------
    def child(self, name: str) -> "RunContext":
        """A sub-run (e.g. one arm of a comparison) with its own metrics and checkpoints."""
        child = RunContext(self.dir / name, self.config, self.config_name, self.resume, self.progress,
                           figures=self.figures, root=self.root, checkpoint_root=self.checkpoint_root)
        self.children.append(child)
        return child

    @property
    def name(self) -> str:
        """This sub-run's path below the run folder (e.g. "base0/llama/adamw/seed0/baseline"): what
        progress bars show."""
        rel = str(self.dir.relative_to(self.root))
        return rel if rel != "." else self.dir.name

    @property
    def checkpoint_dir(self) -> Path:
        if self.checkpoint_root is not None:
            return Path(self.checkpoint_root) / self.dir.relative_to(self.root) / "checkpoints"
        return self.dir / "checkpoints"

    # --- outputs ---------------------------------------------------------------------------
    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        import matplotlib.pyplot as plt

        path = self.dir / (name if name.endswith(".png") else name + ".png")
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        rel = str(path.relative_to(self.root))
        if rel not in self.figures:
            self.figures.append(rel)
        return path

    def save_arrays(self, name: str, **arrays) -> Path:
        return io.save_npz(self.dir / (name if name.endswith(".npz") else name + ".npz"), **arrays)

    def save_json(self, name: str, obj: Any) -> Path:
        return io.write_json(self.dir / name, obj)

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.metrics.close()
        for child in self.children:
            child.close()


def default_run_dir(runs_root: Path, exp_name: str, config_name: str, cfg: Any) -> Path:
    return Path(runs_root) / exp_name / f"{config_name}-{config_lib.config_hash(cfg)}"


def resolve(name: str, config_name: str = "quick", sets: Iterable[str] = (), root=None):
    """(experiment, resolved config); raises UnknownExperiment / ConfigError before writing anything."""
    exp = exp_lib.get(name, root)
    if config_name not in exp.configs:
        raise config_lib.ConfigError(
            f"experiment '{name}' has no config '{config_name}' (has: {', '.join(exp.configs)})")
    cfg = config_lib.override(exp.configs[config_name], list(sets))
    return exp, cfg


def status_of(run_dir: Path) -> str | None:
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return None
    try:
        return io.read_json(path).get("status")
    except (json.JSONDecodeError, OSError, AttributeError, UnicodeDecodeError):
        return None


def is_run_dir(run_dir: Path) -> bool:
    """Whether `run_dir` carries this project's run marker (or is a run written before markers
    existed: a config.json naming an experiment and config hash, next to a status.json)."""
    run_dir = Path(run_dir)
    if (run_dir / MARKER).is_file():
        return True
    try:
        stored = io.read_json(run_dir / "config.json")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (isinstance(stored, dict) and {"experiment", "config_hash", "config"} <= set(stored)
            and (run_dir / "status.json").is_file())


def _holds_others(run_dir: Path) -> bool:
    """Whether `run_dir` holds something no run of this project wrote: it has no run marker and
    has entries other than the lock and the marker's temporary file. (A run that holds the lock
    writes its marker atomically, through a temporary file beside it, so a directory seen at
    that moment holds just those two; it is a run's, in use.) Decided from one listing of the
    directory, as a run may be writing or clearing it meanwhile."""
    names = [p.name for p in Path(run_dir).iterdir()]
    ours = re.compile(rf"{re.escape(LOCK)}|\.{re.escape(MARKER)}\..*\.tmp")
    return MARKER not in names and not all(ours.fullmatch(n) for n in names) and not is_run_dir(run_dir)


class RunLock:
    """An exclusive lock on `<run_dir>/.lsb-lock`, held for a whole run.

    `fcntl.flock` is released by the OS when its process dies, so the lock of a killed run is
    stale by construction and the next run takes it over (saying whose it was). The file holds
    the holder's PID and command; it is never deleted (deleting a lock file others may have
    opened would let two processes hold "the" lock).
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd = None

    def holder(self) -> str:
        """What the holder wrote ("process PID (command)"), or "" (not written yet, or released)."""
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunExists(f"cannot write to the run directory {self.path.parent}: {e.strerror}") from None
        holder, deadline = "", time.monotonic() + HOLDER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A holder writes its PID just after it takes the lock and empties the file just before it
                # lets go: an empty file means one of those two moments, so look again (or take the lock).
                holder = self.holder()
                if holder or time.monotonic() > deadline:
                    os.close(fd)
                    raise RunLocked(f"{self.path.parent} is in use by {holder or 'another process'}: wait for "
                                    "it to finish or choose another --out") from None
                time.sleep(0.01)
        previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if previous:
            print(f"taking over the stale lock of a run that ended without releasing it ({previous})",
                  file=sys.stderr)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)   # empty = released cleanly (not stale)
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _clear(run_dir: Path) -> None:
    """Deletes a run directory's contents except its lock (held by the caller), the marker last,
    so that another process looking in meanwhile still sees a run directory (and is refused by
    the lock, not told the folder is not a run's)."""
    for child in sorted(run_dir.iterdir(), key=lambda p: p.name == MARKER):
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _write_status(run_dir: Path, status: dict) -> None:
    """status.json, atomically; when even that fails (a full disk), overwritten in place (a few
    hundred bytes into the blocks the file already has), so a failed run never says "running"."""
    path = Path(run_dir) / "status.json"
    try:
        io.write_json(path, status)
        return
    except OSError:
        if not path.is_file():
            raise
    data = (json.dumps(io.to_jsonable(status)) + "\n").encode()
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))
        f.flush()
        os.fsync(f.fileno())


def run_experiment(exp: exp_lib.Experiment, cfg: Any, config_name: str, *, out: str | Path | None = None,
                   runs_root: str | Path = DEFAULT_RUNS, resume: bool = False, force: bool = False,
                   progress: bool = True) -> tuple[Path, dict]:
    """Runs one experiment config; returns (run_dir, results).

    An existing complete run with the same resolved config is reused (use force to rerun);
    an unfinished one needs resume=True (continue from its last checkpoint) or force=True.
    The run holds `RunLock` from its first check to its last write: a second run (or resume)
    of the same directory is refused with the holder's PID. `force` deletes only directories
    that carry the run marker. The experiment's `check(cfg)` runs before anything is written.
    """
    run_dir = Path(out) if out is not None else default_run_dir(Path(runs_root), exp.name, config_name, cfg)
    checkpoint_root = None
    index, count = _process()
    if count > 1 and index > 0:   # several processes: the main one owns run_dir, process i the folder beside it
        run_dir, checkpoint_root = run_dir.with_name(f"{run_dir.name}.process-{index}"), run_dir
    if is_url(out if out is not None else runs_root):
        raise RunExists(f"run directories must be local paths, got {out or runs_root} (checkpoints inside a run "
                        "may go to remote storage; see docs/tpu.md)")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunExists(f"--out {run_dir} is a file, not a directory")
    if exp.check is not None:
        exp.check(cfg)
    declared = claims_lib.claims_of(exp.claims, cfg)   # a bad declaration fails before any compute
    if run_dir.is_dir() and _holds_others(run_dir):
        raise _not_a_run(run_dir, force)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunExists(f"cannot create the run directory {run_dir}: {e.strerror}") from None
    lock = RunLock(run_dir).acquire()
    try:
        return _run_locked(exp, cfg, config_name, run_dir, declared, resume=resume, force=force, progress=progress,
                           checkpoint_root=checkpoint_root)
    finally:
        lock.release()


def _not_a_run(run_dir: Path, force: bool) -> RunExists:
    return RunExists(f"{run_dir} exists and is not a run directory (no {MARKER} marker): "
                     f"{'--force deletes only run directories; ' if force else ''}choose another --out")


def _process() -> tuple[int, int]:
    """(index, count) of this process among the run's processes (1 process unless `jax.distributed`
    was initialized, e.g. by `lsb run` with LSB_DISTRIBUTED / JAX_COORDINATOR_ADDRESS set)."""
    if "jax" not in sys.modules:
        return 0, 1
    import jax  # noqa: PLC0415

    return (jax.process_index(), jax.process_count()) if jax.distributed.is_initialized() else (0, 1)


def _sync(name: str) -> None:
    """A barrier of every process of a multi-process run (none with one process)."""
    if _process()[1] > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def _run_locked(exp, cfg, config_name: str, run_dir: Path, declared, *, resume: bool, force: bool, progress: bool,
                checkpoint_root: Path | None = None):
    chash = config_lib.config_hash(cfg)
    if force and is_run_dir(run_dir):
        _clear(run_dir)
    status = status_of(run_dir)
    if status is None and (run_dir / "status.json").exists():
        status = "unreadable status.json"          # e.g. torn by a full disk: treated as unfinished
    if status is not None:
        stored = _stored_identity(run_dir)
        if stored != (exp.name, chash):
            raise RunExists(f"{run_dir} holds a run of {stored[0]} with another config (hash {stored[1]}, "
                            f"this one {chash}): choose another --out or pass --force to replace it")
        _check_inputs_unchanged(run_dir, cfg, "rerun" if status == "complete" else "start over")
        if status == "complete":
            if (run_dir / "results.json").is_file():
                print(f"{exp.name}: up to date in {run_dir} (use --force to rerun)", file=sys.stderr)
                return run_dir, _redecide(run_dir, declared)
            raise RunExists(f"{run_dir} says complete but has no results.json: pass --force to rerun")
        if not resume:
            raise RunExists(f"an unfinished run ({status}) exists in {run_dir}: pass --resume to continue it "
                            "or --force to start over")
    else:                                          # empty, or a run killed before it wrote its status
        if _holds_others(run_dir):                 # written by someone else since the check before the lock
            raise _not_a_run(run_dir, force)
        _clear(run_dir)

    if status is None:
        io.write_json(run_dir / MARKER, {"project": "lsb_jax", "experiment": exp.name, "created": time.time()})
        io.write_json(run_dir / "config.json", {
            "experiment": exp.name, "reproduces": exp.reproduces, "config_name": config_name,
            "config_hash": chash, "config": config_lib.to_dict(cfg),
            "command": " ".join(sys.argv), "python": platform.python_version(), "versions": _versions(),
            "devices": _devices(), "compile_cache": _compile_cache(), "inputs": input_fingerprints(cfg),
        })
    _write_status(run_dir, {"status": "running", "started": time.time(), "pid": os.getpid()})
    ctx = RunContext(run_dir, cfg, config_name, resume=resume and status is not None, progress=progress,
                     checkpoint_root=checkpoint_root)
    _sync("lsb_run_start")    # the main folder is ready (cleared, marked) before any process checkpoints
    t0 = time.time()
    try:
        results = dict(exp.run(cfg, ctx) or {})
        results.setdefault("figures", list(ctx.figures))
        results["experiment"] = exp.name
        results["config_name"] = config_name
        results["wall_seconds"] = round(time.time() - t0, 2)
        if declared:
            results["claims"] = claims_lib.evaluate_all(declared, results.get("per_seed"))
        io.write_json(run_dir / "results.json", results)
    except BaseException as e:
        try:
            _write_status(run_dir, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
        except OSError as status_error:  # nothing more can be written; the original error matters
            print(f"warning: could not mark {run_dir} failed: {status_error}", file=sys.stderr)
        raise
    finally:
        try:
            ctx.close()
        except OSError:
            pass
    _write_status(run_dir, {"status": "complete", "finished": time.time()})
    return run_dir, io.read_json(run_dir / "results.json")


def is_url(path) -> bool:
    """gs://bucket/x, also after `Path` has folded it to gs:/bucket/x (a scheme of 2+ letters)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(path)) is not None


def redecided_results(run_dir: Path, exp, cfg) -> dict:
    """A finished run's results (`results.json`) with its claims decided again (`_redecide`): what
    `lsb run` returns for an up-to-date run and `lsb reproduce --only` shows for earlier runs."""
    return _redecide(Path(run_dir), claims_lib.claims_of(exp.claims, cfg))


def _redecide(run_dir: Path, declared) -> dict:
    """A finished run's results with its claims decided again from its stored per-seed values
    (declarations may have changed since it ran; nothing is recomputed; claims no longer declared are
    dropped); rewritten when they differ."""
    results = io.read_json(run_dir / "results.json")
    fresh = io.to_jsonable(claims_lib.evaluate_all(declared, results.get("per_seed"))) if declared else None
    if fresh != results.get("claims"):
        if fresh is None:
            results.pop("claims")
        else:
            results["claims"] = fresh
        io.write_json(run_dir / "results.json", results)
    return results


def input_fingerprints(cfg) -> dict[str, str]:
    """{absolute path: fingerprint} of the local files and folders the config names (string fields
    that look like paths, with a "/" or a ".", and exist: data files, model folders): a hash of the
    name, size and modification time of the file, or of each file directly in the folder."""
    out = {}
    for v in _string_leaves(config_lib.to_dict(cfg)):
        if not v or ("/" not in v and "." not in v) or is_url(v):
            continue
        p = Path(v).expanduser()
        try:
            if not p.exists():
                continue
            files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file())[:10_000]
            h = hashlib.sha256()
            for f in files:
                st = f.stat()
                h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            continue
        out[str(p.resolve())] = h.hexdigest()[:16]
    return out


def _string_leaves(tree) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _string_leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [s for v in tree for s in _string_leaves(v)]
    return []


def _check_inputs_unchanged(run_dir: Path, cfg, action: str) -> None:
    """A run is reused or resumed only on the inputs it started from (runs before the record: no check)."""
    try:
        stored = io.read_json(run_dir / "config.json").get("inputs")
    except (OSError, json.JSONDecodeError):
        return
    if not stored:
        return
    now = input_fingerprints(cfg)
    changed = [p for p, fp in stored.items() if now.get(p) != fp]
    if changed:
        raise RunExists(f"{run_dir} was made from {changed[0]}, which has changed (or gone) since: pass --force "
                        f"to {action} with what is there now")


def _stored_identity(run_dir: Path) -> tuple[str | None, str | None]:
    try:
        stored = io.read_json(Path(run_dir) / "config.json")
        return stored.get("experiment"), stored.get("config_hash")
    except (OSError, json.JSONDecodeError):
        return None, None


def _devices() -> str:
    """What the run computes on, e.g. '2 x cpu' (results can differ in the last bits across splits)."""
    import jax  # noqa: PLC0415
    return f"{jax.device_count()} x {jax.devices()[0].platform}"


def _compile_cache() -> str | None:
    """The folder compiled programs are kept in (`lsb --compile-cache`), or None."""
    from lsb_jax.train.hosts import compile_cache_in_use  # noqa: PLC0415
    return compile_cache_in_use()


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out[mod] = getattr(m, "__version__", "?")
        except ImportError:
            pass
    return out
