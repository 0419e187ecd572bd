"""Arms of a vmapped sweep: seeds x arms as `Members`, and arms that train differently.

A sweep trains every (seed, arm) member in one `jax.vmap`ped program per *group*:

    member_arms(S, seed, arms)   seeds x arms (seed-major), lever values traced per member, seed i
                                 with the same key in every arm (common random numbers); `seed`
                                 one base seed or several (S seeds each: replicates)
    ArmTraining(optim, batch)    how an arm trains (None: the sweep's own optimizer / batch size)
    group_arms(training, A, optim=, batch_size=, steps=, static=)
                                 arms split by static signature (PCGrad, freeze, layer_lr,
                                 schedule, SAM / clipping on or off, batch size, the task's own
                                 static per-arm key): one compiled program each; numeric optimizer
                                 fields that differ inside a group (`TRACED_OPTIM`: lr, gamma,
                                 rho, ...) are traced per member
    group_members(members, g)    the group's members, with "optim.<field>" hparams for `make_optimizer`
                                 (and, under PCGrad, "optim.pcgrad_seed" from the member's key)

The sweep engine (`train.sweep`) is their one user.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Mapping, Sequence

import jax
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


def arm_training(training: Sequence | None, num_arms: int, names: Sequence[str] | None = None) -> list:
    """`training` as a list of `num_arms` entries (None: every arm the sweep's defaults); with
    `names`, also checks there is one unique name per arm. Raises before any compute."""
    if names is not None and (len(names) != num_arms or len(set(names)) != len(names)):
        raise ValueError(f"need {num_arms} unique arm names, got {list(names)}")
    training = [None] * num_arms if training is None else list(training)
    if len(training) != num_arms:
        raise ValueError(f"training: {len(training)} entries for {num_arms} arms")
    return training


def base_seed_tuple(seed: int | Sequence[int]) -> tuple[int, ...]:
    """One base seed or several as a tuple (non-empty, distinct)."""
    out = (int(seed),) if np.ndim(seed) == 0 else tuple(int(b) for b in seed)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"base seeds must be distinct and at least one, got {seed}")
    return out


def check_base_seeds(seed: int | Sequence[int], field: str = "base_seeds") -> tuple[int, ...]:
    """`base_seed_tuple` for a config's `__post_init__`: the error names the config field."""
    try:
        return base_seed_tuple(seed)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None


def member_keys(num_seeds: int, seed: int | Sequence[int]) -> jnp.ndarray:
    """[R * num_seeds, 2] keys of the seeds of R base seeds: base seed r's seed i (global seed index
    r * num_seeds + i) gets fold_in(PRNGKey(base_r), i), the key it has in a run of base seed r alone."""
    return jnp.concatenate([seed_keys(b, num_seeds) for b in base_seed_tuple(seed)])


def member_data_keys(key: jax.Array, num_seeds: int, seed: int | Sequence[int]) -> jax.Array:
    """[R * num_seeds, 2] per-seed data keys (a seed's task pool, facts table, ...) under `key`:
    base seed r's seed i gets fold_in(fold_in(key, base_r), i), so a replicate's data, like its
    init (`member_keys`), is the one it has in a run of base seed r alone, and base seeds differ."""
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(key, b), i)
                      for b in base_seed_tuple(seed) for i in range(num_seeds)])


def member_arms(num_seeds: int, seed: int | Sequence[int], arms: Sequence[Mapping[str, float]]) -> Members:
    """Seeds x arms (seed-major); seed i has the same key in every arm (common random numbers).

    `seed` is one base seed or several (replicates: `num_seeds` seeds each, base seed r's at global
    seed indices r*num_seeds ... (r+1)*num_seeds - 1, `member_keys`). Every arm is a dict of the same
    numeric lever names (traced per member as hparams), plus the (global) seed and arm indices."""
    if not arms or any(set(a) != set(arms[0]) for a in arms):
        raise ValueError(f"member_arms: every arm needs the same lever names, got {[sorted(a) for a in arms]}")
    if {"seed", "arm"} & set(arms[0]):
        raise ValueError("member_arms: 'seed' and 'arm' are the members' own labels, not lever names")
    base = member_keys(num_seeds, seed)
    labels = [{"seed": s, "arm": a, **arm} for s in range(base.shape[0]) for a, arm in enumerate(arms)]
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
    static: Hashable = None       # the task's static key shared by the group's arms (e.g. a sampler kind)


def _static_signature(optim: OptimConfig, batch_size: int, static: Hashable) -> str:
    """What must be equal for arms to share a program: every field but the traced ones, the gates'
    on/off, the batch size and the task's key (no config is rebuilt: a blanked one may not validate)."""
    fixed = tuple((f.name, getattr(optim, f.name)) for f in dataclasses.fields(optim) if f.name not in TRACED_OPTIM)
    gates = tuple((g, getattr(optim, g) > 0) for g in _GATES)
    return repr((fixed, gates, batch_size, static))


def group_arms(training: Sequence[ArmTraining | None] | None, num_arms: int, *, optim: OptimConfig,
               batch_size: int, steps: int, static: Sequence[Hashable] | None = None) -> list[ArmGroup]:
    """Splits arms into groups of equal static signature (order of first appearance).

    training[a] = None (or training = None) trains arm a with `optim` and `batch_size` (the sweep's);
    `steps` is the run length the optimizers are validated against (schedules); static[a] is an
    optional hashable the task needs fixed at trace time (arms with different values never share a
    program). Errors name the arm: a bad optimizer field, a batch size < 1.
    """
    base_optim, base_batch = optim, batch_size
    static = [None] * num_arms if static is None else list(static)
    if len(static) != num_arms:
        raise ValueError(f"static: {len(static)} entries for {num_arms} arms")
    training = arm_training(training, num_arms)
    resolved = []
    for a, t in enumerate(training):
        t = t or ArmTraining()
        optim = t.optim or base_optim
        b = base_batch if t.batch_size is None else t.batch_size
        if b < 1:
            raise ValueError(f"training[{a}].batch_size must be >= 1, got {b}")
        try:
            validate_optim(optim, steps, {})
        except ValueError as e:
            raise ValueError(f"training[{a}].optim: {e}") from None
        resolved.append((optim, b))
    order, members = [], {}
    for a, (optim, b) in enumerate(resolved):
        sig = _static_signature(optim, b, static[a])
        if sig not in members:
            order.append(sig)
            members[sig] = []
        members[sig].append(a)
    static_of, groups = static, []
    for sig in order:
        idx = tuple(members[sig])
        optims = [resolved[a][0] for a in idx]
        program_optim = optims[0]
        gates = {g: max(getattr(o, g) for o in optims) for g in _IDENTITY_AT_ZERO if g != "weight_decay"
                 or program_optim.name in ("sgd", "momentum", "adam")}
        program_optim = dataclasses.replace(program_optim, **gates)
        traced = tuple(f for f in TRACED_OPTIM if len({getattr(o, f) for o in optims}) > 1)
        values = tuple({f: float(getattr(o, f)) for f in traced} for o in optims)
        groups.append(ArmGroup(arms=idx, optim=program_optim, batch_size=resolved[idx[0]][1], traced=traced,
                               values=values, static=static_of[idx[0]]))
    return groups


def pcgrad_seeds(keys_M, pcgrad_seed: int) -> jax.Array:
    """[M] int32 PCGrad seeds from the members' own keys and the config's `pcgrad_seed`: a seed's
    projection orders are those of its run alone (a replicate of a base seed draws what that base
    seed alone draws) and differ between seeds and base seeds."""
    def one(key):
        return (jax.random.bits(jax.random.fold_in(key, pcgrad_seed), (), jnp.uint32) >> 1).astype(jnp.int32)
    return jax.vmap(one)(jnp.asarray(keys_M))


def group_members(members: Members, group: ArmGroup) -> tuple[np.ndarray, Members]:
    """(member indices, Members) of one group: its arms' members in the sweep's seed-major order,
    with the traced optimizer values as hyperparameters "optim.<field>"."""
    arm_of = np.asarray([lab["arm"] for lab in members.labels], int)
    idx = np.flatnonzero(np.isin(arm_of, group.arms))
    hp = {n: v[idx] for n, v in members.hparams.items()}
    pos = {a: i for i, a in enumerate(group.arms)}
    for f in group.traced:
        hp["optim." + f] = jnp.asarray([group.values[pos[arm_of[i]]][f] for i in idx], jnp.float32)
    if group.optim.pcgrad:   # each seed its own projection orders (the same for that seed in every arm)
        hp["optim.pcgrad_seed"] = pcgrad_seeds(members.keys[idx], group.optim.pcgrad_seed)
    labels = tuple(members.labels[i] for i in idx)
    return idx, Members(keys=members.keys[idx], hparams=hp, labels=labels)


# ----------------------------------------------------------------------------- intervention arms

# The optimizer interventions of seed 004 (Figs. 2, 3, 12) as arms, defined once for every task.
INTERVENTIONS = ("pcgrad", "frozen_readout", "layer_lr", "sam")
# what the paper says each does, (figure, sentence), for the claims of every task that runs them
# (layer-wise lr and SAM: the paper claims no direction; they are measured, not decided)
INTERVENTION_CLAIMS = {
    "pcgrad": ("Fig. 3", "PCGrad, run at a 4x smaller batch, improves faster per step than the plain optimizer"),
    "frozen_readout": ("Fig. 12", "training with the readout layer frozen gives a moderate speedup"),
}


def check_interventions(names: Sequence[str], pcgrad_batch_divisor: int, readout_lr_scale: float,
                        sam_rho: float) -> None:
    """Errors name the field: unknown intervention, divisor < 1, negative lr scale, rho <= 0."""
    bad = [i for i in names if i not in INTERVENTIONS]
    if bad:
        raise ValueError(f"interventions: unknown {bad}; expected a subset of {INTERVENTIONS}")
    if pcgrad_batch_divisor < 1 or readout_lr_scale < 0 or sam_rho <= 0:
        raise ValueError("pcgrad_batch_divisor must be >= 1, readout_lr_scale >= 0 and sam_rho > 0")


def intervention_arms(names: Sequence[str], base: OptimConfig, batch_size: int, readout: str, *,
                      pcgrad_batch_divisor: int = 4, readout_lr_scale: float = 0.1,
                      sam_rho: float = 0.05) -> dict[str, ArmTraining]:
    """{name: ArmTraining} of the interventions around the optimizer `base`:

        pcgrad          per-example PCGrad (Yu et al.) before `base`, at batch_size // divisor
                        ("run at a 4x lower batch size", Fig. 3)
        frozen_readout  the parameters matching the regex `readout` kept at their init (Fig. 12)
        layer_lr        the readout's learning rate scaled by `readout_lr_scale`
        sam             SAM with radius `sam_rho` around `base`
    """
    check_interventions(names, pcgrad_batch_divisor, readout_lr_scale, sam_rho)
    make = {
        "pcgrad": lambda: ArmTraining(dataclasses.replace(base, pcgrad=True),
                                      max(1, batch_size // pcgrad_batch_divisor)),
        "frozen_readout": lambda: ArmTraining(dataclasses.replace(base, freeze=(readout,))),
        "layer_lr": lambda: ArmTraining(dataclasses.replace(base, layer_lr={readout: readout_lr_scale})),
        "sam": lambda: ArmTraining(dataclasses.replace(base, sam_rho=sam_rho)),
    }
    return {i: make[i]() for i in names}


def grad_bias_arms(gammas: Sequence[float], base: OptimConfig, every: int,
                   name: str = "gamma={:g}") -> dict[str, ArmTraining]:
    """{name.format(gamma): ArmTraining} of gradient biasing (seed 004 Fig. 2): g + gamma g_bias with
    the bias gradient refreshed every `every` steps; gamma = 0 is `base` itself (one group with the
    others when only gamma differs: it is traced)."""
    if any(g < 0 for g in gammas) or every < 1:
        raise ValueError(f"gammas must be >= 0 and the refresh period >= 1, got {list(gammas)}, {every}")
    return {name.format(g): ArmTraining(dataclasses.replace(base, grad_bias_gamma=g, grad_bias_every=every))
            for g in gammas}
