"""Hugging Face checkpoints <-> `Decoder`: load (local folder or hub id) and export.

Tensors are read one at a time, with plain file reads (`_TensorFile`: the safetensors header, then
byte ranges; the file is never memory-mapped, so its pages do not count in the process's resident
memory), a block of rows at a time straight into the parameter's final layout and dtype: a
transposed kernel is filled column block by column block, a tensor already in its layout and dtype
is read into place. The host array is 64-byte aligned, which XLA:CPU adopts without a copy, and
placed onto its sharding (`jax.make_array_from_callback` hands each device only its slice): beside
the arrays already placed, the host holds one parameter and one block of rows
(`benchmarks/lm_load_memory.py` measures the peak against transformers').
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from lsb_jax import io
from lsb_jax.errors import UsageError
from lsb_jax.models.lm import names
from lsb_jax.models.lm.config import FAMILIES, ConfigError, DecoderConfig
from lsb_jax.models.lm.model import Decoder
from lsb_jax.train.hosts import to_host

_HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]
# Fields that must be in config.json itself (transformers would silently fill in defaults).
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class CheckpointError(UsageError, ValueError):
    """A checkpoint tensor is missing, unexpected or of the wrong shape; names key and file."""


class ModelNotFound(UsageError, FileNotFoundError):
    """A model path that is not a checkpoint folder, or a hub id that cannot be resolved."""


def split_revision(path_or_id: str | Path, revision: str | None = None) -> tuple[str, str | None]:
    """("org/name", "rev") of a hub id written "org/name@rev" (a branch, tag or commit; the
    command line's way to pin one); a local path or a given `revision` is returned as is."""
    text = str(path_or_id)
    if revision is None and "@" in text and not io.looks_local(text):
        text, _, revision = text.rpartition("@")
        if not text or not revision:
            raise ModelNotFound(f"model {path_or_id}: expected 'org/name@revision'")
    return text, revision


def check_source(path_or_id: str | Path, *, revision: str | None = None) -> None:
    """Raises `ModelNotFound` (one line, before any compute) unless `path_or_id` is a local
    folder with a config.json or a well-formed hub id (optionally "id@revision"); with
    HF_HUB_OFFLINE=1 a hub id must be in the local Hugging Face cache at that revision. (An online
    hub id is resolved when the model is loaded.)"""
    text, revision = split_revision(path_or_id, revision)
    if io.looks_local(text):
        path = Path(text).expanduser()
        if not path.is_dir():
            raise ModelNotFound(f"model {text}: no such folder" if not path.exists() else
                                f"model {text}: not a folder (a checkpoint is a folder with config.json)")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model {text}: no config.json in the folder")
        return
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(text)
    except HFValidationError as e:
        raise ModelNotFound(f"model {text}: neither a local folder nor a hub id ({e})") from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(text, "config.json", revision=revision), str):
        at = f" at revision {revision!r}" if revision else ""
        raise ModelNotFound(f"model {text}: not in the local Hugging Face cache ({constants.HF_HUB_CACHE}){at} and "
                            "HF_HUB_OFFLINE is set")


def resolve_folder(path_or_id: str | Path, *, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a hub id ("id" or "id@revision") fetched with
    `huggingface_hub.snapshot_download` (a name that looks like a local path is never sent to the
    hub: `io.looks_local`)."""
    path_or_id, revision = split_revision(path_or_id, revision)
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if io.looks_local(str(path_or_id)):
        raise ModelNotFound(f"{path_or_id} is not a checkpoint folder")
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(str(path_or_id), revision=revision, allow_patterns=_HUB_FILES))


def load_config(path_or_id: str | Path, *, revision: str | None = None) -> DecoderConfig:
    """`DecoderConfig` of a checkpoint (config.json parsed through `transformers.AutoConfig`)."""
    folder = resolve_folder(path_or_id, revision=revision)
    file = folder / "config.json"
    if not file.exists():
        raise ConfigError(f"no config.json in {folder}")
    raw = json.loads(file.read_text())
    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"config field 'model_type'={model_type!r} in {file} is not supported "
                          f"(supported: {', '.join(FAMILIES)})")
    for key in _REQUIRED:
        if raw.get(key) is None:
            raise ConfigError(f"config field {key!r} is missing from {file}")
    from transformers import AutoConfig
    return DecoderConfig.from_hf(AutoConfig.from_pretrained(folder))


def load_tokenizer(path_or_id: str | Path, *, revision: str | None = None):
    """The checkpoint's tokenizer through `transformers.AutoTokenizer`."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(resolve_folder(path_or_id, revision=revision))


def load_pretrained(path_or_id: str | Path, *, dtype=jnp.float32, shardings: Any = None,
                    revision: str | None = None) -> Decoder:
    """A `Decoder` with the checkpoint's weights in `dtype` (e.g. jnp.float32, jnp.bfloat16).

    `shardings`: None (default device), one `jax.sharding.Sharding` for every weight, or a tree
    like `nnx.get_named_sharding(nnx.state(abstract_model), mesh)` (an `nnx.State` or a dict
    keyed by dotted parameter path, e.g. "layers.0.attn.q.kernel").
    """
    folder = resolve_folder(path_or_id, revision=revision)
    cfg = load_config(folder)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(cfg, dtype=dtype, rngs=nnx.Rngs(0))))
    flat = {_dotted(p): v for p, v in nnx.to_flat_state(abstract)}
    arrays = read_params(folder, cfg, {k: v.get_value().shape for k, v in flat.items()}, dtype,
                         _sharding_lookup(shardings))
    state = nnx.from_flat_state([(p, v.replace(arrays[_dotted(p)]))
                                 for p, v in nnx.to_flat_state(abstract)])
    return nnx.merge(graphdef, state)


def read_params(folder: Path, cfg: DecoderConfig, shapes: dict[str, tuple[int, ...]], dtype,
                sharding_of=lambda path: None) -> dict[str, jax.Array]:
    """Read every parameter named in `shapes` (dotted path -> shape) from the folder's files."""
    headers, located = _locate(folder, cfg, set(shapes))
    np_dtype = np.dtype(dtype)
    out = {}
    for key, file, ours, kind in located:
        parts = _read_ours(headers[file], key, kind, shapes[ours[0]], np_dtype)
        for path, host in zip(ours, parts):
            out[path] = _place(host, sharding_of(path))
        del parts
    return out


def _locate(folder: Path, cfg: DecoderConfig, ours: set[str]) -> tuple[dict[Path, _TensorFile], list[tuple]]:
    """(the headers of the files read, [(HF tensor name, its file, our paths, kind)] for our
    parameter paths `ours`): every tensor found in a readable file, and none left over; nothing
    but the files' headers is read."""
    headers: dict[Path, _TensorFile] = {}
    files = _tensor_files(folder, headers)
    aliases = names.ALIASES.get(cfg.family, {})
    located = []
    for hf, paths, kind in names.expand(cfg.family, cfg.num_layers, ours):
        key = hf if hf in files or hf not in aliases else aliases[hf]
        if key not in files:
            raise CheckpointError(f"tensor {hf!r} is missing from the checkpoint in {folder}")
        file = files[key]
        if file not in headers:
            if not file.is_file():
                raise CheckpointError(f"{file}: no such file (named in {folder / 'model.safetensors.index.json'})")
            headers[file] = _TensorFile(file)
        if key not in headers[file].entries:
            raise CheckpointError(f"tensor {key!r} is not in {file} (where the index puts it)")
        located.append((key, file, paths, kind))
    used = {key for key, *_ in located}
    ignored = [re.compile(p) for p in names.IGNORED + ((r"lm_head\.weight",) if cfg.tie_embeddings else ())]
    extra = sorted(k for k in files if k not in used and not any(p.fullmatch(k) for p in ignored))
    if extra:
        raise CheckpointError(f"unexpected tensors {extra[:5]} in {files[extra[0]]} "
                              f"({len(extra)} in all; model_type {cfg.family!r})")
    return headers, located


def check_checkpoint(path_or_id: str | Path, *, revision: str | None = None) -> DecoderConfig:
    """What `load_pretrained` would refuse, found without reading a weight: config.json is one we
    load, and the safetensors files' headers are readable, hold every tensor of the model and
    nothing else, and fit their files (a truncated download). Returns the config."""
    folder = resolve_folder(path_or_id, revision=revision)
    cfg = load_config(folder)
    abstract = nnx.state(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))
    _locate(folder, cfg, {_dotted(p) for p, _ in nnx.to_flat_state(abstract)})
    return cfg


def save_pretrained(model: Decoder, folder: str | Path, *, dtype=None) -> Path:
    """Write `model.safetensors` + `config.json` that `transformers` loads (names of the family).

    The config is the one the model was loaded from, with `dtype` updated; weights are written
    in `dtype` (default: the model's).
    """
    cfg, folder = model.cfg, Path(folder)
    if not cfg.hf_config:
        raise ConfigError("the model's DecoderConfig has no 'hf_config_json' to export")
    from safetensors.numpy import save_file
    params = {_dotted(p): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    np_dtype = np.dtype(dtype or model.dtype)
    tensors = {}
    for hf, ours, kind in names.expand(cfg.family, cfg.num_layers, set(params)):
        host = [np.asarray(to_host(params[o])) for o in ours]
        tensors[hf] = names.to_hf(kind, host).astype(np_dtype)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf_config = {**cfg.hf_config, "dtype": str(jnp.dtype(np_dtype))}
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return folder


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _tensor_files(folder: Path, headers: dict[Path, _TensorFile]) -> dict[str, Path]:
    """HF tensor name -> the safetensors file that holds it (from the index file, or from the
    headers of every file, which are kept in `headers` for the reads)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    paths = sorted(folder.glob("*.safetensors"))
    if not paths:
        raise CheckpointError(f"no *.safetensors files in {folder}")
    headers.update({path: _TensorFile(path) for path in paths})
    return {k: path for path in paths for k in headers[path].entries}


# safetensors dtype names -> numpy (ml_dtypes, JAX's own dependency, for the formats numpy lacks)
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_BLOCK_BYTES = 16 << 20  # rows read at a time (the only temporary beside the parameter being filled)


class _TensorFile:
    """The header of one .safetensors file (an 8-byte little-endian length, then JSON: name ->
    dtype, shape, data_offsets), and reads of a tensor's rows by byte range."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            try:
                if not 2 <= n <= size - 8:
                    raise ValueError(f"header length {n} in a {size}-byte file")
                header = json.loads(f.read(n))
                if not isinstance(header, dict):
                    raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
            except ValueError as e:
                raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        header.pop("__metadata__", None)
        self.start, self.entries = 8 + n, {}
        for key, e in header.items():
            if not isinstance(e, dict) or e.get("dtype") not in _DTYPES:
                raise CheckpointError(f"tensor {key!r} in {path} has dtype "
                                      f"{e.get('dtype') if isinstance(e, dict) else None!r}, not one of "
                                      f"{', '.join(_DTYPES)}")
            try:
                dt, shape = np.dtype(_DTYPES[e["dtype"]]), tuple(int(d) for d in e["shape"])
                begin, end = (int(o) for o in e["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise CheckpointError(f"tensor {key!r} in {path}: malformed header entry {e} ({err!r})") from None
            if end - begin != dt.itemsize * math.prod(shape) or self.start + end > size:
                raise CheckpointError(f"tensor {key!r} in {path}: data_offsets {e['data_offsets']} do not hold "
                                      f"{e['dtype']}{list(shape)} (truncated or corrupt file?)")
            self.entries[key] = (dt, shape, self.start + begin)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key][1]

    def blocks(self, key: str):
        """(first row, array of rows) blocks of about _BLOCK_BYTES covering the tensor in order."""
        dt, shape, offset = self.entries[key]
        if not shape:
            shape = (1,)
        row_bytes = dt.itemsize * math.prod(shape[1:])
        step = max(1, _BLOCK_BYTES // max(row_bytes, 1))
        with open(self.path, "rb") as f:
            for a in range(0, shape[0], step):
                block = np.empty((min(step, shape[0] - a), *shape[1:]), dt)
                f.seek(offset + a * row_bytes)
                if f.readinto(block.view(np.uint8).reshape(-1)) != block.nbytes:
                    raise CheckpointError(f"tensor {key!r} in {self.path}: the file ends inside its data")
                yield a, block


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized host array whose data starts on a 64-byte boundary: `jax.device_put` on
    XLA:CPU then adopts the buffer instead of copying it."""
    nbytes = dtype.itemsize * math.prod(shape)
    raw = np.empty(nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


def _read_ours(tensors: _TensorFile, key: str, kind: str, shape: tuple[int, ...], dtype: np.dtype) -> list[np.ndarray]:
    """`names.to_ours(kind, tensor, shape)` in `dtype`, read block by block into the final layout for
    the kinds that are one parameter each (the fused kinds read the whole tensor first)."""
    if key not in tensors.entries:
        raise CheckpointError(f"tensor {key!r} is not in {tensors.path} (where the index file says it is)")
    got, expected = tensors.shape(key), names.hf_shape(kind, shape)
    if got != expected:
        raise CheckpointError(f"tensor {key!r} in {tensors.path} has shape {got}, expected {expected}")
    if kind not in ("copy", "bias", "linear", "linear_nh"):   # fused: the whole tensor in `dtype`, then split
        whole = np.empty(expected, dtype)
        for a, block in tensors.blocks(key):
            whole[a:a + len(block)] = block
        return names.to_ours(kind, whole, shape)
    out = _aligned_empty(shape, dtype)
    if kind in ("copy", "bias"):   # the same element order: rows a:b are a contiguous range of `out`
        rows = out.reshape(expected)
        for a, block in tensors.blocks(key):
            rows[a:a + len(block)] = block
    else:                          # HF [out, in] -> ours [in, out]: row block a:b is column block a:b
        cols = out.reshape(expected[::-1])
        for a, block in tensors.blocks(key):
            cols[:, a:a + len(block)] = block.T
    return [out]


def _sharding_lookup(shardings: Any):
    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
        return lambda path: shardings
    if isinstance(shardings, nnx.State):
        shardings = {_dotted(p): v.get_value() for p, v in nnx.to_flat_state(shardings)}
    return lambda path: shardings[path]


def _place(host: np.ndarray, sharding) -> jax.Array:
    if sharding is None:
        return jax.device_put(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
