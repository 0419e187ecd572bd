"""Typed experiment configs: frozen dataclasses, `--set key=value` overrides, hashing.

A config is a (possibly nested) frozen dataclass. Overrides address fields by dotted path
(`optim.lr=0.1`) and are parsed according to the field's annotation:

    bool            true/false/1/0/yes/no
    int, float      Python literals (`1e-3`); an int field rejects `1.5` and values outside
                    int32 (step counts, sizes and seeds are int32 in JAX); floats must be finite
    str             taken verbatim
    Literal[...]    one of the listed values
    X | None        `none` or `null` gives None
    tuple/list[X]   a JSON list (`[1,2]`) or comma-separated items (`1,2`); strings only as a
                    JSON list (`["a","b"]`): a bare string is one item (regexes contain commas)
    dict[str, X]    a JSON object (`{"layers.0": 0.1}`)

Any unknown key or ill-typed value raises `ConfigError` with a one-line message naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from typing import Any, Iterable, Literal, get_args, get_origin, get_type_hints

from lsb_jax.errors import UsageError


class ConfigError(UsageError, ValueError):
    """A config key or value the experiment does not accept."""


def require_positive(cfg: Any, names: Iterable[str], where: str = "") -> None:
    """Raises ValueError naming the field (`where.name`) of the first of `names` that is < 1."""
    for name in names:
        value = getattr(cfg, name)
        if value < 1:
            raise ValueError(f"{where + '.' if where else ''}{name} must be >= 1, got {value}")


def is_config(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected a bool (true/false)")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (typing.Union, types.UnionType)


def coerce(value: Any, tp: Any) -> Any:
    """Converts `value` (a string from the command line, or a JSON-decoded value) to type `tp`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if _is_union(tp):
        args = get_args(tp)
        if type(None) in args and (value is None
                                   or (isinstance(value, str) and value.strip().lower() in ("none", "null"))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors) or f"expected {tp}")
    if origin is Literal:
        options = get_args(tp)
        value = value.strip() if isinstance(value, str) else value
        for opt in options:
            try:
                if coerce(value, type(opt)) == opt:
                    return opt
            except (ValueError, TypeError):
                continue
        raise ValueError(f"expected one of {list(options)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _parse_bool(value)
        raise ValueError("expected a bool")
    if tp is int:
        return _in_int32(_parse_int(value))
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("expected a float")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise ValueError("expected a float") from None
        else:
            raise ValueError("expected a float")
        if not math.isfinite(out):
            raise ValueError("expected a finite float")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError("expected a string")
    if origin in (tuple, list):
        args = get_args(tp)
        items = _as_list(value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} items")
            return tuple(coerce(v, a) for v, a in zip(items, args))
        item_tp = args[0] if args else Any
        if item_tp is str and isinstance(value, str) and not value.strip().startswith("["):
            items = [value] if value.strip() else []  # strings (regexes) may contain commas: use JSON for several
        out = [coerce(v, item_tp) for v in items]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        key_tp, val_tp = get_args(tp) or (Any, Any)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('expected a JSON object, e.g. {"a": 1}') from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return {coerce(k, key_tp): coerce(v, val_tp) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"expected a JSON object for {tp.__name__}") from None
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object for {tp.__name__}")
        return from_dict(tp, value)
    raise TypeError(f"unsupported config type {tp!r}")


INT_RANGE = (-2**31, 2**31 - 1)   # config ints become step counts, sizes and seeds: JAX's int32


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an int")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            pass
        try:
            f = float(value)
        except ValueError:
            raise ValueError("expected an int") from None
        if math.isfinite(f) and f.is_integer():
            return int(f)
    raise ValueError("expected an int")


def _in_int32(value: int) -> int:
    lo, hi = INT_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"expected an int in [{lo}, {hi}] (JAX's default int32)")
    return value


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("expected a JSON list, e.g. [1, 2]") from None
            return list(parsed)
        if text == "":
            return []
        return [t.strip() for t in text.split(",")]
    raise ValueError("expected a list")


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Builds dataclass `cls` from a (JSON) dict, checking keys and types."""
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, val in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{where}{key}'")
        try:
            kwargs[key] = coerce(val, types_[key])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config key '{where}{key}': {e}") from None
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a (nested) config dataclass (recursing into lists, tuples, dicts)."""
    return _plain(cfg)


def _plain(v: Any, ordered: bool = False) -> Any:
    """JSON-ready `v`; with `ordered`, a dict field whose keys are not sorted keeps its order as
    {"__ordered__": [[key, value], ...]} (what `config_hash` hashes: json sorts keys)."""
    if is_config(v):
        return {f.name: _plain(getattr(v, f.name), ordered) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [_plain(x, ordered) for x in v]
    if isinstance(v, dict):
        out = {str(k): _plain(x, ordered) for k, x in v.items()}
        return {"__ordered__": [[k, x] for k, x in out.items()]} if ordered and list(out) != sorted(out) else out
    return v


def keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted keys of a config (leaves and nested sections)."""
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out.append(prefix + f.name)
        if is_config(v):
            out.extend(keys(v, prefix + f.name + "."))
    return out


def override(cfg: Any, assignments: Iterable[str]) -> Any:
    """Applies `key=value` assignments (dotted keys) to a config; returns a new config.

    Every key and value is checked first (unknown key, ill-typed value), then each changed
    dataclass is rebuilt once with all its changes, so cross-field validation in
    `__post_init__` sees the final values whatever the order of the assignments. A JSON object
    given for a nested section is merged into it (`optim={"lr": 0.1}` keeps optim's other
    fields). Raises ConfigError naming the key.
    """
    assignments = list(assignments)
    changes: dict = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"--set expects key=value, got '{assignment}'")
        key, _, text = assignment.partition("=")
        key = key.strip()
        _collect(cfg, key.split("."), text, key, changes)
    try:
        return _apply(cfg, changes)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        keys_ = ", ".join(a.partition("=")[0].strip() for a in assignments)
        raise ConfigError(f"bad value for '{keys_}': {e}" if len(assignments) == 1
                          else f"invalid config after --set {keys_}: {e}") from None


def _collect(cfg: Any, path: list[str], value: Any, full_key: str, changes: dict) -> None:
    """Records the change of `full_key` to `value`: command-line text, or a JSON-decoded value of a
    section's merged object (so `optim={"name": null}` is None, not the string "null")."""
    name = path[0]
    fields = {f.name for f in dataclasses.fields(cfg)}
    if name not in fields:
        raise ConfigError(f"unknown config key '{full_key}' (known at this level: {', '.join(sorted(fields))})")
    current = getattr(cfg, name)
    if len(path) > 1:
        if not is_config(current):
            why = "is None (set the whole section)" if current is None else "has no sub-keys"
            raise ConfigError(f"unknown config key '{full_key}': '{name}' {why}")
        _collect(current, path[1:], value, full_key, changes.setdefault(name, {}))
        return
    tp = _field_types(type(cfg))[name]
    if is_config(current) and isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"bad value for '{full_key}': '{value}' (expected a JSON object)") from None
    if is_config(current) and isinstance(value, dict):
        for k, v in value.items():
            _collect(current, [k], v, f"{full_key}.{k}", changes.setdefault(name, {}))
        return
    try:
        changes[name] = _Value(coerce(value, tp))
    except (ValueError, TypeError) as e:
        shown = value if isinstance(value, str) else json.dumps(value)
        raise ConfigError(f"bad value for '{full_key}': '{shown}' ({e})") from None


@dataclasses.dataclass(frozen=True)
class _Value:
    value: Any


def _apply(cfg: Any, changes: dict) -> Any:
    if not changes:
        return cfg
    kwargs = {}
    for name, change in changes.items():
        kwargs[name] = change.value if isinstance(change, _Value) else _apply(getattr(cfg, name), change)
    return dataclasses.replace(cfg, **kwargs)


def with_seeds(cfg: Any, seeds: int, field: str = "sweep") -> Any:
    """`cfg` with `cfg.<field>.seeds` replaced: the medium scale of a quick config (more seeds, same setup)."""
    return dataclasses.replace(cfg, **{field: dataclasses.replace(getattr(cfg, field), seeds=seeds)})


def config_hash(cfg: Any, length: int = 8) -> str:
    """A short stable hash of the resolved config (names run directories). Config sections hash
    independently of their field order; a dict-valued field whose keys are not in sorted order
    hashes with its order, which can matter (`optim.layer_lr` applies the first pattern that matches)."""
    blob = json.dumps(_plain(cfg, ordered=True), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
