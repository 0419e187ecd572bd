"""Hugging Face checkpoints <-> `Decoder`: load (local folder or hub id) and export.

Tensors are read one at a time with `safetensors.safe_open(framework="numpy")` (the file mapped
only while its tensor is read), cast to the requested dtype and placed straight onto their
sharding (`jax.make_array_from_callback` hands each device only its slice): beside the arrays
already placed, the host holds one tensor, its re-laid-out copy and the device copy being made
(`benchmarks/lm_load_memory.py` measures the peak against transformers').
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
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
    files = _tensor_files(folder)
    rules = names.expand(cfg.family, cfg.num_layers, set(shapes))
    aliases = names.ALIASES.get(cfg.family, {})
    np_dtype = np.dtype(dtype)
    out, used = {}, set()
    from safetensors import safe_open
    for hf, ours, kind in rules:
        key = hf if hf in files or hf not in aliases else aliases[hf]
        if key not in files:
            raise CheckpointError(f"tensor {hf!r} is missing from the checkpoint in {folder}")
        file = files[key]
        expected = names.hf_shape(kind, shapes[ours[0]])
        # one tensor at a time, its file mapped only while it is read: the pages of the checkpoint do
        # not stay resident beside the arrays built from them
        with safe_open(file, framework="numpy") as handle:
            got = tuple(handle.get_slice(key).get_shape())
            if got != expected:
                raise CheckpointError(f"tensor {key!r} in {file} has shape {got}, expected {expected}")
            tensor = handle.get_tensor(key)
        used.add(key)
        parts = names.to_ours(kind, tensor.astype(np_dtype, copy=False), shapes[ours[0]])
        del tensor
        for path, host in zip(ours, parts):
            out[path] = _place(host, sharding_of(path))
        del parts
    ignored = [re.compile(p) for p in names.IGNORED + ((r"lm_head\.weight",) if cfg.tie_embeddings else ())]
    extra = sorted(k for k in files if k not in used and not any(p.fullmatch(k) for p in ignored))
    if extra:
        raise CheckpointError(f"unexpected tensors {extra[:5]} in {files[extra[0]]} "
                              f"({len(extra)} in all; model_type {cfg.family!r})")
    return out


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


def _tensor_files(folder: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file that holds it."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    paths = sorted(folder.glob("*.safetensors"))
    if not paths:
        raise CheckpointError(f"no *.safetensors files in {folder}")
    from safetensors import safe_open
    out = {}
    for path in paths:
        with safe_open(path, framework="numpy") as f:
            out.update({k: path for k in f.keys()})
    return out


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
