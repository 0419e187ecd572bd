"""Parameter paths, regex labels, layer-wise update scaling and freezing.

A parameter is named by the dotted form of its `jax.tree_util` key path
(`layers.0.kernel`); rules are regular expressions matched with `re.search` against
that name, first match wins. This works the same for nested dicts, lists, NamedTuples,
registered dataclasses and flax NNX `State` trees (whose trailing `.value` is dropped).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax


def param_path(path: Sequence) -> str:
    """Dotted name of a `jax.tree_util` key path: `(DictKey('layers'), SequenceKey(0), ...)` -> `layers.0...`.

    A trailing `GetAttrKey('value')` (the array inside an NNX `Variable`) is dropped, so
    `nnx.state(model)` and `nnx.to_pure_dict(...)` give the same names.
    """
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:  # unknown key type: its own string form, without brackets or dots
            parts.append(str(key).strip("[].'\""))
    if len(path) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        parts.pop()
    return ".".join(parts)


def _first_match(name: str, rules: Sequence[tuple[str, object]], default):
    for pattern, value in rules:
        if re.search(pattern, name):
            return value
    return default


def label_params(params, rules: Sequence[tuple[str, str]], default: str):
    """Pytree of labels: the label of the first `(regex, label)` rule whose regex `re.search`es the path."""
    rules = tuple(rules)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _first_match(param_path(path), rules, default), params)


def check_patterns_match(params, patterns_by_field: Mapping[str, Sequence[str]]) -> None:
    """A `ConfigError` naming the field and the regex of `patterns_by_field` ({"freeze": [...], ...})
    that `re.search`es no parameter path of `params`: a typo'd pattern would otherwise be a silent
    no-op (nothing frozen, every layer at the base learning rate)."""
    from lsb_jax.config import ConfigError  # noqa: PLC0415

    names = [param_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for field, patterns in patterns_by_field.items():
        for pattern in patterns:
            if not any(re.search(pattern, n) for n in names):
                raise ConfigError(f"OptimConfig.{field}: {pattern!r} matches no parameter (their names: "
                                  f"{', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")


def scale_by_group(scales: Mapping[str, float]) -> optax.GradientTransformation:
    """Layer-wise factors: u_p <- s(p) * u_p, s(p) = value of the first regex matching path p, else 1.

    Placed after a base optimizer (whose updates already include -lr), this gives layer-wise
    learning rates lr * s(p). Stateless.
    """
    rules = tuple(scales.items())

    def update_fn(updates, state, params=None):
        del params

        def scale(path, u):
            factor = _first_match(param_path(path), rules, None)
            return u if factor is None else (u * factor).astype(u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _zero_updates() -> optax.GradientTransformation:
    """Like `optax.set_to_zero()`, but zeros shaped like the *parameters* when they are given.

    The two agree for batch-mean gradients; for per-example gradients (leading axis [B])
    the update must still have the parameter's shape.
    """

    def update_fn(updates, state, params=None):
        like = updates if params is None else params
        return jax.tree.map(jnp.zeros_like, like), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def freeze(inner: optax.GradientTransformation, patterns: Sequence[str]) -> optax.GradientTransformationExtraArgs:
    """Runs `inner` on the parameters not matching any regex in `patterns`; the rest get update 0.

    Built with `optax.partition({'trainable': inner, 'frozen': zeros})`, so `inner` never sees
    the frozen leaves: they carry no optimizer state, take no part in global norms (clipping,
    SAM), and get no weight decay (unlike `optax.masked`, which passes their gradients through).
    Frozen parameters therefore stay bit-identical under `optax.apply_updates`.
    """
    patterns = tuple(patterns)
    rules = tuple((p, "frozen") for p in patterns)
    return optax.partition(
        {"trainable": inner, "frozen": _zero_updates()},
        lambda tree: label_params(tree, rules, "trainable"),
    )
