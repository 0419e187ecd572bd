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
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lsb_jax import analysis
from lsb_jax import config as config_lib
from lsb_jax import experiments as exp_lib
from lsb_jax import io

DEFAULT_RUNS = Path("runs")


class RunExists(RuntimeError):
    """An unfinished run is in the way and neither --resume nor --force was given."""


class MetricsWriter:
    """Appends metric rows to metrics.jsonl and TensorBoard.

    Values may be scalars or per-member vectors (vmapped seeds/hyperparameters): JSONL keeps the
    vector, TensorBoard gets its mean under `name` and each member under `name/m<i>` (up to 16).
    """

    def __init__(self, directory: Path, tensorboard: bool = True):
        self.path = directory / "metrics.jsonl"
        self._tb_dir = directory / "tb"
        self._tensorboard = tensorboard
        self._tb = None
        self._file = None
        self._purge_step = None

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint (and a torn last line) so none appear
        twice; TensorBoard events after it are purged when the writer reopens."""
        self.close()
        rows = [r for r in self.read() if r.get("step", -1) <= step]
        io.write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        self._purge_step = step + 1

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step)}
        row.update(io.to_jsonable(metrics))
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tensorboard:
            self._write_tb(step, metrics)

    def _write_tb(self, step: int, metrics: dict[str, Any]) -> None:
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=str(self._tb_dir), flush_secs=30, purge_step=self._purge_step)
        for name, value in metrics.items():
            arr = np.asarray(value, dtype=np.float64)
            if arr.size == 0:
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
            self._file.flush()
            os.fsync(self._file.fileno())
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
                           figures=self.figures, root=self.root)
        self.children.append(child)
        return child

    @property
    def checkpoint_dir(self) -> Path:
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
    if not path.exists():
        return None
    try:
        return io.read_json(path).get("status")
    except (json.JSONDecodeError, OSError):
        return None


def run_experiment(exp: exp_lib.Experiment, cfg: Any, config_name: str, *, out: str | Path | None = None,
                   runs_root: str | Path = DEFAULT_RUNS, resume: bool = False, force: bool = False,
                   progress: bool = True) -> tuple[Path, dict]:
    """Runs one experiment config; returns (run_dir, results).

    An existing complete run with the same resolved config is reused (use force to rerun);
    an unfinished one needs resume=True (continue from its last checkpoint) or force=True.
    """
    run_dir = Path(out) if out is not None else default_run_dir(Path(runs_root), exp.name, config_name, cfg)
    status = status_of(run_dir)
    chash = config_lib.config_hash(cfg)
    if run_dir.exists() and force:
        if status is None and any(run_dir.iterdir()) and not (run_dir / "config.json").exists():
            raise RunExists(f"--force would delete {run_dir}, which is not a run directory (no status.json)")
        shutil.rmtree(run_dir)
        status = None
    elif status is not None:
        stored = _stored_identity(run_dir)
        if stored != (exp.name, chash):
            raise RunExists(f"{run_dir} holds a run of {stored[0]} with another config (hash {stored[1]}, "
                            f"this one {chash}): choose another --out or pass --force to replace it")
        if status == "complete":
            print(f"{exp.name}: up to date in {run_dir} (use --force to rerun)", file=sys.stderr)
            return run_dir, io.read_json(run_dir / "results.json")
        if not resume:
            raise RunExists(f"an unfinished run ({status}) exists in {run_dir}: pass --resume to continue it "
                            "or --force to start over")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunExists(f"{run_dir} exists and is not a run directory")

    run_dir.mkdir(parents=True, exist_ok=True)
    if status is None:
        io.write_json(run_dir / "config.json", {
            "experiment": exp.name, "reproduces": exp.reproduces, "config_name": config_name,
            "config_hash": chash, "config": config_lib.to_dict(cfg),
            "command": " ".join(sys.argv), "python": platform.python_version(), "versions": _versions(),
        })
    io.write_json(run_dir / "status.json", {"status": "running", "started": time.time()})
    ctx = RunContext(run_dir, cfg, config_name, resume=resume and status is not None, progress=progress)
    t0 = time.time()
    try:
        results = dict(exp.run(cfg, ctx) or {})
        results.setdefault("figures", list(ctx.figures))
        results["experiment"] = exp.name
        results["config_name"] = config_name
        results["wall_seconds"] = round(time.time() - t0, 2)
        io.write_json(run_dir / "results.json", results)
    except BaseException as e:
        io.write_json(run_dir / "status.json", {"status": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    finally:
        ctx.close()
    io.write_json(run_dir / "status.json", {"status": "complete", "finished": time.time()})
    return run_dir, io.read_json(run_dir / "results.json")


def _stored_identity(run_dir: Path) -> tuple[str | None, str | None]:
    try:
        stored = io.read_json(Path(run_dir) / "config.json")
        return stored.get("experiment"), stored.get("config_hash")
    except (OSError, json.JSONDecodeError):
        return None, None


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out[mod] = getattr(m, "__version__", "?")
        except ImportError:
            pass
    return out
