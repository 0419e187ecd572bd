"""Ensembles: one compiled program trains many seeds x hyperparameters with `jax.vmap`.

Members are the product of seeds and hyperparameter values. Member m has key keys[m] and
hyperparameters {name: values[name][m]}; the same seed index gets the same key for every
hyperparameter value (common random numbers make the comparison across values sharper).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from lsb_jax.train.state import jit_once, seed_keys


@dataclasses.dataclass(frozen=True)
class Members:
    keys: jax.Array                      # [M, 2] raw PRNG keys
    hparams: dict[str, jax.Array]        # name -> [M]
    labels: tuple[dict, ...]             # per member: {"seed": i, name: value, ...}

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])


def member_grid(num_seeds: int, seed: int = 0, **hparams: Sequence[float]) -> Members:
    """Seeds x the Cartesian product of the hyperparameter value lists."""
    names = list(hparams)
    combos = list(itertools.product(*[list(hparams[n]) for n in names])) or [()]
    base = seed_keys(seed, num_seeds)
    labels, key_idx = [], []
    for i in range(num_seeds):
        for combo in combos:
            labels.append({"seed": i, **dict(zip(names, combo))})
            key_idx.append(i)
    keys = base[jnp.asarray(key_idx)]
    hp = {n: jnp.asarray([lab[n] for lab in labels], jnp.float32) for n in names}
    return Members(keys=keys, hparams=hp, labels=tuple(labels))


def ensemble_init(member_init: Callable[[jax.Array, Mapping[str, Any]], Any], members: Members):
    """vmap(member_init)(keys, hparams): the stacked train state of all members."""
    return jit_once(jax.vmap(member_init))(members.keys, members.hparams)


def ensemble_step(member_step: Callable[..., Any]):
    """vmap of member_step(state, hparams, *args) over state and hparams (args shared)."""
    def step(state, hparams, *args):
        return jax.vmap(member_step, in_axes=(0, 0) + (None,) * len(args))(state, hparams, *args)
    return step
