"""Arms of a vmapped sweep: seeds x arms as `Members`, and arms that train differently.

A sweep trains every (seed, arm) member in one `jax.vmap`ped program per *group*:

    member_arms(S, seed, arms)   seeds x arms (seed-major), lever values traced per member, seed i
                                 with the same key in every arm (common random numbers)
    ArmTraining(optim, batch)    how an arm trains (None: the sweep's own optimizer / batch size)
    group_arms(cfg, training, A) arms split by static signature (PCGrad, freeze, layer_lr,
                                 schedule, SAM / clipping on or off, batch size): one compiled
                                 program each; numeric optimizer fields that differ inside a group
                                 (`TRACED_OPTIM`: lr, gamma, rho, ...) are traced per member
    group_members(members, g)    the group's members, with "optim.<field>" hparams for `make_optimizer`

Used by the ICL (`tasks.icl_sweep`) and fact (`tasks.facts`) sweeps.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from lsb_jax.optim import OptimConfig
from lsb_jax.optim.factory import OVERRIDABLE
from lsb_jax.optim.factory import validate as validate_optim
from lsb_jax.train.ensemble import Members
from lsb_jax.train.state import seed_keys

# OptimConfig fields an arm group may trace (pcgrad_seed seeds a PRNGKey at init: static)
TRACED_OPTIM = tuple(f for f in OVERRIDABLE if f != "pcgrad_seed")
# gates whose stage is the identity at value 0, so an arm with 0 may share a program where the stage is on
_IDENTITY_AT_ZERO = ("grad_bias_gamma", "weight_decay")
_GATES = ("sam_rho", "clip_norm")        # value 0 removes the stage (SAM: 2 gradients; clip 0 is not identity)


def member_arms(num_seeds: int, seed: int, arms: Sequence[Mapping[str, float]]) -> Members:
    """Seeds x arms (seed-major); seed i has the same key in every arm (common random numbers).

    Every arm is a dict of the same numeric lever names (traced per member as hparams), plus the
    seed and arm indices."""
    if not arms or any(set(a) != set(arms[0]) for a in arms):
        raise ValueError(f"member_arms: every arm needs the same lever names, got {[sorted(a) for a in arms]}")
    base = seed_keys(seed, num_seeds)
    labels = [{"seed": s, "arm": a, **arm} for s in range(num_seeds) for a, arm in enumerate(arms)]
    keys = base[jnp.asarray([lab["seed"] for lab in labels])]
    names = list(arms[0]) + ["seed", "arm"]
    hp = {n: jnp.asarray([lab[n] for lab in labels], jnp.float32) for n in names}
    return Members(keys=keys, hparams=hp, labels=tuple(labels))


@dataclasses.dataclass(frozen=True)
class ArmTraining:
    """How one arm trains; None = the sweep config's `optim` / `batch_size`.

    Arms whose optimizers differ only in `TRACED_OPTIM` fields share one compiled program (the
    values are traced per member); anything else (PCGrad, freeze, layer_lr, schedule, SAM or
    clipping on/off, the batch size) gets its own program. See `group_arms`.
    """

    optim: OptimConfig | None = None
    batch_size: int | None = None


@dataclasses.dataclass(frozen=True)
class ArmGroup:
    """Arms trained by one compiled program: `optim` is the static config (gates on where any arm
    needs them), `traced` the fields whose per-arm values are passed as traced overrides."""

    arms: tuple[int, ...]
    optim: OptimConfig
    batch_size: int
    traced: tuple[str, ...]
    values: tuple[dict, ...]      # per arm of the group: {field: value} for the traced fields


def _static_signature(optim: OptimConfig, batch_size: int) -> str:
    blank = {f: 0 for f in TRACED_OPTIM}
    blank.update({g: float(getattr(optim, g) > 0) for g in _GATES})
    return repr((dataclasses.replace(optim, **blank), batch_size))


def group_arms(cfg: SweepConfig, training: Sequence[ArmTraining | None] | None, num_arms: int) -> list[ArmGroup]:
    """Splits arms into groups of equal static signature (order of first appearance).

    training[a] = None (or training = None) trains arm a with cfg.optim and cfg.batch_size. `cfg` may
    be any config with fields `optim`, `batch_size` and `steps` (the facts sweep passes its own).
    Errors name the arm: a bad optimizer field, a batch size < 1.
    """
    training = [None] * num_arms if training is None else list(training)
    if len(training) != num_arms:
        raise ValueError(f"training: {len(training)} entries for {num_arms} arms")
    resolved = []
    for a, t in enumerate(training):
        t = t or ArmTraining()
        optim = t.optim or cfg.optim
        b = cfg.batch_size if t.batch_size is None else t.batch_size
        if b < 1:
            raise ValueError(f"training[{a}].batch_size must be >= 1, got {b}")
        try:
            validate_optim(optim, cfg.steps, {})
        except ValueError as e:
            raise ValueError(f"training[{a}].optim: {e}") from None
        resolved.append((optim, b))
    order, members = [], {}
    for a, (optim, b) in enumerate(resolved):
        sig = _static_signature(optim, b)
        if sig not in members:
            order.append(sig)
            members[sig] = []
        members[sig].append(a)
    groups = []
    for sig in order:
        idx = tuple(members[sig])
        optims = [resolved[a][0] for a in idx]
        static = optims[0]
        gates = {g: max(getattr(o, g) for o in optims) for g in _IDENTITY_AT_ZERO if g != "weight_decay"
                 or static.name in ("sgd", "momentum", "adam")}
        static = dataclasses.replace(static, **gates)
        traced = tuple(f for f in TRACED_OPTIM if len({getattr(o, f) for o in optims}) > 1)
        values = tuple({f: float(getattr(o, f)) for f in traced} for o in optims)
        groups.append(ArmGroup(arms=idx, optim=static, batch_size=resolved[idx[0]][1], traced=traced, values=values))
    return groups


def group_members(members: Members, group: ArmGroup) -> tuple[np.ndarray, Members]:
    """(member indices, Members) of one group: its arms' members in the sweep's seed-major order,
    with the traced optimizer values as hyperparameters "optim.<field>"."""
    arm_of = np.asarray([lab["arm"] for lab in members.labels], int)
    idx = np.flatnonzero(np.isin(arm_of, group.arms))
    hp = {n: v[idx] for n, v in members.hparams.items()}
    pos = {a: i for i, a in enumerate(group.arms)}
    for f in group.traced:
        hp["optim." + f] = jnp.asarray([group.values[pos[arm_of[i]]][f] for i in idx], jnp.float32)
    labels = tuple(members.labels[i] for i in idx)
    return idx, Members(keys=members.keys[idx], hparams=hp, labels=labels)
