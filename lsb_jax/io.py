"""Atomic file writes and JSON helpers.

Every file the project writes goes through here: the content lands in a temporary file in the
same directory, is flushed and fsync'd, then renamed over the target. A crash or a `kill -9`
leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success renames it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
            os.replace(tmp_path, path)
        except OSError as e:
            raise named(e, path) from e
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def named(error: OSError, path) -> OSError:
    """The same OSError with `path` as its filename (a failed write to a temporary file, or to an
    open file, otherwise names no file: "[Errno 28] No space left on device")."""
    if error.filename is not None and Path(error.filename) == Path(path):
        return error
    out = type(error)(error.errno, error.strerror or str(error), str(path))
    return out


def open_append(path: str | os.PathLike):
    """A binary append handle (for JSONL logs); OSErrors name the file."""
    try:
        return open(path, "ab")
    except OSError as e:
        raise named(e, path) from e


def append(f, data: bytes, path: str | os.PathLike, sync: bool = False) -> None:
    """Writes and flushes `data` to the handle (fsync with `sync`); OSErrors name `path`."""
    try:
        if data:
            f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    except OSError as e:
        raise named(e, path) from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Converts numpy/jax scalars and arrays, tuples, paths and non-finite floats for JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(to_jsonable(obj), indent=indent, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)


def dotted_path(path) -> str:
    """A pytree key path as "a.b.0" (dict keys, attribute names, sequence indices)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def flatten_tree(tree: Any) -> dict[str, np.ndarray]:
    """{dotted.path: array} of a pytree's leaves (for npz dumps and comparisons)."""
    import jax

    return {dotted_path(path): np.asarray(jax.device_get(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def looks_local(text: str) -> bool:
    """Whether a model/dataset name is a local path rather than a Hugging Face hub id ("name" or
    "org/name"): it exists, starts like a path (/ . ~), has more than one "/", or its first
    component is an existing local folder (so a typo in runs/x/model is reported as a missing
    folder, never looked up on the hub)."""
    text = str(text)
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return True
    parts = text.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())
