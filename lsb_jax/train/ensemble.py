"""Ensembles: one compiled program trains many seeds x hyperparameters with `jax.vmap`.

Members are the product of seeds and hyperparameter values. Member m has key keys[m] and
hyperparameters {name: values[name][m]}; the same seed index gets the same key for every
hyperparameter value (common random numbers make the comparison across values sharper).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lsb_jax.train.state import jit_once, seed_keys

MEMBER_AXIS = "members"   # the mesh axis a member axis is split over (`member_mesh`)


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


def member_mesh(devices: Sequence | None = None, members: int | None = None) -> Mesh | None:
    """The 1-D mesh (axis MEMBER_AXIS) that splits a member axis over `devices` (default: every
    local device; with the CPU as several devices, `train.hosts.use_cpu_cores`, its cores); with
    a member count, over the most of them that divide it (no padding needed); None for one device
    (nothing to split)."""
    devices = list(jax.local_devices() if devices is None else devices)
    if members is not None:
        devices = devices[:math.gcd(int(members), len(devices))]
    return Mesh(np.asarray(devices), (MEMBER_AXIS,)) if len(devices) > 1 else None


def padded_index(size: int, multiple: int) -> np.ndarray:
    """Member indices 0..size-1 followed by copies of the last one up to a multiple of `multiple`
    (e.g. the devices of a mesh): gather a member axis with it to split it evenly."""
    return np.concatenate([np.arange(size), np.full((-size) % multiple, size - 1)])


def shard_members(tree: Any, mesh: Mesh | None) -> Any:
    """`tree` with every leaf's leading (member) axis split over `mesh` (unchanged for None). The
    member count must be a multiple of the mesh size (pad with copies of a member)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P(MEMBER_AXIS)))


def is_axis(a) -> bool:
    """`is_leaf` for `jax.tree` functions over an in_axes prefix tree: its leaves are axes (int or None)."""
    return a is None or isinstance(a, int)


def member_vmap(fn: Callable[..., Any], in_axes: Sequence[Any], mesh: Mesh | None = None) -> Callable[..., Any]:
    """vmap(fn, in_axes) with every output's member axis first; with a `mesh` of several devices,
    each device runs the vmap over its own block of members (`jax.shard_map` over MEMBER_AXIS;
    in_axes 0: the leading axis is split, None: replicated; per argument, or a pytree prefix of
    it as in jax.vmap; see `member_mesh`).

    The members never talk to each other, so each device runs its block on its own: a vmapped
    loop whose trip count depends on the data (e.g. a cycle walk that runs while any member still
    walks) is decided per device, where plain sharding of the vmapped program would make every
    device agree on it with a collective at each trip."""
    batched = jax.vmap(fn, in_axes=tuple(in_axes))
    if mesh is None or mesh.size == 1:
        return batched
    axes = jax.tree.leaves(tuple(in_axes), is_leaf=lambda a: a is None)
    if any(a not in (0, None) for a in axes):
        raise ValueError(f"member_vmap: in_axes must be 0 or None, got {tuple(in_axes)}")
    specs = jax.tree.map(lambda a: P(MEMBER_AXIS) if a == 0 else P(), tuple(in_axes), is_leaf=is_axis)
    return jax.shard_map(batched, mesh=mesh, in_specs=specs, out_specs=P(MEMBER_AXIS))


def ensemble_step(member_step: Callable[..., Any], mesh: Mesh | None = None):
    """vmap of member_step(state, hparams, *args) over state and hparams (args shared); with a
    mesh of several devices, each device steps its own block of members (`member_vmap`)."""
    def step(state, hparams, *args):
        return member_vmap(member_step, (0, 0) + (None,) * len(args), mesh)(state, hparams, *args)
    return step


def split_ensemble(member_step: Callable[..., Any], members: Members, state: Any
                   ) -> tuple[Callable[..., Any], Any, Any]:
    """(step, state, hparams) for `fit(step, state, ..., step_args=(hparams, ...))`: `ensemble_step`
    over the most local devices that divide the member count (`member_mesh(members=...)`: no
    padding), the stacked state and the members' hparams placed on that mesh (as they are on one
    device)."""
    mesh = member_mesh(members=members.size)
    return ensemble_step(member_step, mesh), shard_members(state, mesh), shard_members(members.hparams, mesh)
