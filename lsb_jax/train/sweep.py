"""The sweep engine: arms x seeds of one task, in as few compiled programs as static signatures allow.

    task = SweepTask(init_params, loss_fn, sampler, evaluate, data=(pools,), eval_data=(x, y))
    arms = [Arm("k=inf", {"k": inf}), Arm("k=32", {"k": 32}),
            Arm("pcgrad", {"k": inf}, ArmTraining(OptimConfig(..., pcgrad=True), batch_size=8))]
    res = run(task, arms, SweepSpec(seeds=8, steps=1500, optim=adam, batch_size=32, eval_every=50), ctx)
    res.curves["test_loss"]        # [arm, seed, eval] (steps: res.eval_steps)
    res.steps_to(res.curves["test_loss"], threshold)   # [arm, seed], NaN = censored at res.horizon
    res.summaries("test_loss", threshold)              # per arm: analysis.censored_summary

How it runs. Members are seeds x arms (seed-major, `train.arms.member_arms`): seed i gets the same
key in every arm (common random numbers: the same initialization and data stream), so arms are
compared on paired seeds. Lever values are per-member traced hyperparameters `hp[name]` (plus
hp["seed"], hp["arm"]); `train.arms.group_arms` splits the arms by static signature (optimizer
structure, batch size, the arm's `static` key) and each group is ONE vmapped `train.fit` (its own
`ctx.child("group<g>")` when there are several), so it is resumable and checkpointed like any run.
The numeric optimizer fields that differ inside a group are traced per member.

Devices. The member axis of each group is sharded over a 1-D mesh of the local devices (`devices`,
default all of `jax.local_devices()`): a group of M members on D devices is padded to a multiple of
D with copies of its last member (dropped from every output), so 8 GPUs or a TPU host train 8x the
members in the time of one. With one device nothing is padded or placed. Each device steps and
evaluates its own block of members with no collective in the loop (`train.member_vmap`). The CPU
is one device unless it is split into several (`train.hosts.use_cpu_cores`; `lsb --cpu-devices`).

The task. `SweepTask` holds pure functions of one member:

    init_params(key) -> params
    loss_fn(params, batch) -> [B] per-example losses (a batch's "loss_weight" is honoured)
    sampler(group) -> sample_batch(key, step, hp, *data) -> batch    (group.batch_size, group.static)
    evaluate(params, step, hp, *eval_data, *member_data_m) -> {name: scalar}

`data` (pools, fact tables) is passed to every step and to the hooks; `eval_data` (test sets) and
`member_data` (arrays with a leading member axis in sweep order, e.g. each member's Bayes
predictions) only to `evaluate`. `hooks(group_run) -> [Hook]` adds per-group hooks (trajectory
tracking, diagnostics); they see the (padded) group members.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Hashable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lsb_jax import analysis, claims
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.train.arms import ArmGroup, ArmTraining, base_seed_tuple, group_arms, group_members, member_arms
from lsb_jax.train.ensemble import (MEMBER_AXIS, Members, ensemble_init, ensemble_step, member_mesh, member_vmap,
                                    padded_index, shard_members)
from lsb_jax.train.loop import EvalHook, Hook, fit
from lsb_jax.train.state import init_state
from lsb_jax.train.step import make_sampled_step


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: a name, traced lever values (the same names in every arm of a sweep), how it trains
    (`ArmTraining`: its own optimizer / batch size; None = the sweep's) and an optional static key
    the task's sampler needs at trace time (arms with different keys get different programs)."""

    name: str
    levers: Mapping[str, float] = dataclasses.field(default_factory=dict)
    training: ArmTraining | None = None
    static: Hashable = None


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """What every arm of a sweep shares: seeds, length, the default optimizer and batch size, the
    evaluation / logging / checkpoint cadence (checkpoint_every 0 or None: no checkpoints).

    `seed` is one base seed or a tuple of them (replicates, e.g. to decide a claim at two base seeds):
    `seeds` seeds per base seed, all trained in the same programs; the result's seed axis holds
    base seed r's seeds at r*seeds ... (r+1)*seeds - 1 (`train.arms.member_keys`)."""

    seeds: int
    steps: int
    optim: OptimConfig
    batch_size: int
    eval_every: int
    seed: int | tuple[int, ...] = 0
    chunk_size: int = 100
    log_every: int = 10
    checkpoint_every: int | None = None
    eval_at_start: bool = True

    def __post_init__(self):
        if self.seeds < 1 or self.steps < 1 or self.eval_every < 1:
            raise ValueError(f"SweepSpec: seeds, steps and eval_every must be >= 1, got ({self.seeds}, "
                             f"{self.steps}, {self.eval_every})")
        if self.eval_every > self.steps and not self.eval_at_start:
            raise ValueError(f"SweepSpec: eval_every={self.eval_every} > steps={self.steps} without the evaluation "
                             "at the start leaves no evaluation to measure")

    @property
    def base_seeds(self) -> tuple[int, ...]:
        return base_seed_tuple(self.seed)

    @property
    def total_seeds(self) -> int:
        return self.seeds * len(self.base_seeds)


@dataclasses.dataclass(frozen=True)
class SweepTask:
    init_params: Callable[[jax.Array], Any]
    loss_fn: Callable[[Any, dict], jax.Array]
    sampler: Callable[[ArmGroup], Callable]
    evaluate: Callable[..., dict]
    data: tuple = ()
    eval_data: tuple = ()
    member_data: tuple = ()
    hooks: Callable[["GroupRun"], Sequence[Hook]] | None = None


@dataclasses.dataclass
class GroupRun:
    """One group while it trains: its arms, program config, sweep-order member indices `index`
    ([size]), the members it trains (`members`, padded to a multiple of the devices; the first
    `size` are real), its run context and the number of devices its member axis is sharded over."""

    number: int
    group: ArmGroup
    index: np.ndarray
    members: Members
    size: int
    ctx: Any
    hooks: list = dataclasses.field(default_factory=list)
    devices: int = 1

    def real(self, x):
        """The real members' rows of an array with a leading (padded) member axis."""
        return np.asarray(x)[: self.size]


@dataclasses.dataclass
class SweepResult:
    """Per-member outputs in one layout, `[arm, seed, ...]`.

    curves: evaluated metrics [A, S, E] at `eval_steps`; train_loss [A, S, L] at `train_steps`;
    final_params: leaves [A, S, ...]; batch_size [A]; diverged_at [A, S] (first divergent step,
    -1: none); groups: the `GroupRun`s (hooks included); horizon: the last evaluated step (an arm's seed that has
    not reached a threshold there is censored at it). S = seeds (all base seeds: base seed r's are
    columns r*S/R ... (r+1)*S/R - 1 of `base_seeds`' R).
    """

    arms: tuple[Arm, ...]
    seeds: int
    eval_steps: np.ndarray
    curves: dict[str, np.ndarray]
    train_steps: np.ndarray
    train_loss: np.ndarray
    final_params: Any
    batch_size: np.ndarray
    diverged_at: np.ndarray
    groups: list[GroupRun]
    horizon: int
    base_seeds: tuple[int, ...] = (0,)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.arms]

    def steps_to(self, values_AxSxE: np.ndarray, threshold: float, below: bool = True) -> np.ndarray:
        """[A, S] first evaluated step at which values <= threshold (below) or >= threshold; NaN:
        never within the horizon (censored)."""
        v = np.asarray(values_AxSxE, np.float64)
        a, s, e = v.shape
        flat = v.reshape(a * s, e).T
        out = analysis.steps_to_threshold(self.eval_steps, flat if below else -flat, threshold if below else -threshold)
        return out.reshape(a, s)

    def summaries(self, metric: str, threshold: float, below: bool = True) -> dict[str, dict]:
        """Per arm name: `analysis.censored_summary` of the steps to threshold of `metric`."""
        times = self.steps_to(self.curves[metric], threshold, below)
        return {arm.name: analysis.censored_summary(times[i], self.horizon) for i, arm in enumerate(self.arms)}

    def threshold_columns(self, metric: str, threshold: float, *, below: bool = True,
                          prefix: str = "steps_to_threshold", baseline: int = 0) -> dict[str, dict]:
        """Per arm name, the flat report columns of its censored steps to threshold:
        {prefix}_rmean / _rstd (restricted mean / sample std of min(T, horizon)), _median (NaN and
        _median_censored when fewer than half the seeds reached), _reached, and _speedup (the
        baseline arm's restricted mean / this arm's)."""
        summ = self.summaries(metric, threshold, below)
        base = summ[self.arms[baseline].name]["restricted_mean"]
        return {name: {f"{prefix}_rmean": s["restricted_mean"], f"{prefix}_rstd": s["restricted_std"],
                       f"{prefix}_median": s["median"], f"{prefix}_median_censored": s["median_censored"],
                       f"{prefix}_reached": s["reached"], f"{prefix}_speedup": speedup(base, s["restricted_mean"])}
                for name, s in summ.items()}

    def per_seed(self, values_AxS: np.ndarray, *, censored: bool = False, unit: str = "") -> dict:
        """The claims table (`claims.per_seed`) of per-seed values [A, S], split by base seed;
        censored: NaN means not reached by the horizon (steps to a threshold)."""
        return claims.per_seed(values_AxS, self.names, self.base_seeds, horizon=self.horizon if censored else None,
                               unit=unit)

    def program_groups(self) -> list[dict]:
        return [{"arms": [self.arms[a].name for a in g.group.arms], "batch_size": g.group.batch_size,
                 "traced": list(g.group.traced)} for g in self.groups]


def validate_arms(arms: Sequence[Arm]) -> None:
    names = [a.name for a in arms]
    if not arms:
        raise ValueError("a sweep needs at least one arm")
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    levers = [sorted(a.levers) for a in arms]
    if any(lv != levers[0] for lv in levers):
        raise ValueError(f"every arm needs the same lever names, got {dict(zip(names, levers))}")


def _pad(members: Members, multiple: int) -> Members:
    idx = padded_index(members.size, multiple)
    if idx.size == members.size:
        return members
    return Members(keys=members.keys[idx], hparams={k: v[idx] for k, v in members.hparams.items()},
                   labels=tuple(members.labels[i] for i in idx))


def group_program(task: SweepTask, group: ArmGroup, steps: int):
    """(member_init(key, hp) -> TrainState, member_step(state, hp, *data) -> (state, metrics)) of one
    group: its program optimizer with hp["optim.<field>"] as traced overrides, batches from
    task.sampler(group). vmap them with `train.ensemble_init` / `ensemble_step`."""
    sample_batch = task.sampler(group)

    def optimizer(hp):
        seeded = ("pcgrad_seed",) if "optim.pcgrad_seed" in hp else ()   # per member (`group_members`)
        return make_optimizer(group.optim, steps, **{f: hp["optim." + f] for f in group.traced + seeded})

    def member_init(key, hp):
        return init_state(task.init_params, optimizer(hp).tx, key)

    def member_step(state, hp, *data):
        return make_sampled_step(task.loss_fn, optimizer(hp), lambda k, s: sample_batch(k, s, hp, *data))(state)

    return member_init, member_step


def _eval_fn(task: SweepTask, mesh: Mesh | None):
    n_eval, n_member = len(task.eval_data), len(task.member_data)

    def evaluate(state, hp, eval_data, member_data):
        axes = (0, 0, 0) + (None,) * n_eval + (0,) * n_member
        return member_vmap(task.evaluate, axes, mesh)(state.params, state.step, hp, *eval_data, *member_data)
    return evaluate


def run(task: SweepTask, arms: Sequence[Arm], spec: SweepSpec, ctx=None, *, desc: str = "sweep",
        devices: Sequence | None = None) -> SweepResult:
    """Trains every (arm, seed) member; see the module docstring. ctx None: nothing is written."""
    validate_arms(arms)
    groups = group_arms([a.training for a in arms], len(arms), optim=spec.optim, batch_size=spec.batch_size,
                        steps=spec.steps, static=[a.static for a in arms])
    devices = list(jax.local_devices() if devices is None else devices)
    mesh = member_mesh(devices)
    members = member_arms(spec.seeds, spec.seed, [dict(a.levers) for a in arms])
    member_data = tuple(jnp.asarray(x) for x in task.member_data)
    evaluate = _eval_fn(task, mesh)
    runs, histories, final, diverged = [], [], [None] * members.size, np.full(members.size, -1, np.int64)
    for g, group in enumerate(groups):
        idx, gm = group_members(members, group)
        padded = _pad(gm, len(devices))
        pidx = idx[padded_index(idx.size, len(devices))]
        gctx = ctx if (ctx is None or len(groups) == 1) else ctx.child(f"group{g}")
        grun = GroupRun(g, group, idx, padded, idx.size, gctx, devices=len(devices))
        member_init, member_step = group_program(task, group, spec.steps)
        hp = shard_members(padded.hparams, mesh)
        state = shard_members(ensemble_init(member_init, dataclasses.replace(padded, hparams=hp)), mesh)
        mdata = shard_members(tuple(x[pidx] for x in member_data), mesh)
        hooks = [EvalHook(evaluate, every=spec.eval_every, at_start=spec.eval_at_start,
                          args=(hp, task.eval_data, mdata))]
        grun.hooks = hooks + list(task.hooks(grun) if task.hooks is not None else [])
        result = fit(ensemble_step(member_step, mesh), state, spec.steps, ctx=gctx, hooks=grun.hooks,
                     step_args=(hp, *task.data), chunk_size=spec.chunk_size,
                     checkpoint_every=spec.checkpoint_every or None, log_every=spec.log_every,
                     desc=f"{desc} g{g}" if len(groups) > 1 else desc, on_divergence="continue")
        histories.append(result.history)
        diverged[idx] = grun.real(result.diverged_at)
        for j, i in enumerate(idx):
            final[i] = jax.tree.map(lambda x, j=j: np.asarray(x[j]), result.state.params)
        runs.append(grun)
    eval_steps = np.asarray(sorted(runs[0].hooks[0].fire_steps(spec.steps)), np.int64)
    return _stitch(arms, spec, members, runs, histories, final, diverged, eval_steps)


def _to_arm_seed(x_M: np.ndarray, num_arms: int, seeds: int) -> np.ndarray:
    """Member-major (seed-major members) [M, ...] -> [A, S, ...]."""
    x = np.asarray(x_M)
    return np.swapaxes(x.reshape((seeds, num_arms) + x.shape[1:]), 0, 1)


def _stitch(arms, spec, members, runs, histories, final, diverged, eval_steps) -> SweepResult:
    """Curves of every group back into sweep member order, then [A, S, ...]."""
    a, s, m = len(arms), spec.total_seeds, members.size
    first = histories[0]
    names = [k for k in first if not k.endswith("_step") and k + "_step" in first]

    def common(name):
        return all(name in h and np.array_equal(h[name + "_step"], first[name + "_step"]) for h in histories)

    out = {}
    for name in names:
        if not common(name):
            continue
        steps = np.asarray(first[name + "_step"])
        full = np.full((len(steps), m), np.nan)
        ok = True
        for grun, hist in zip(runs, histories):
            v = np.asarray(hist[name], np.float64).reshape(len(steps), -1)
            if v.shape[1] != grun.members.size:
                ok = False
                break
            full[:, grun.index] = v[:, : grun.size]
        if ok:
            out[name] = (steps, _to_arm_seed(full.T, a, s))
    loss = out.pop("loss", (np.zeros(0, np.int64), np.zeros((a, s, 0))))
    batch = np.zeros(a, np.int64)
    for grun in runs:
        batch[list(grun.group.arms)] = grun.group.batch_size
    params = jax.tree.map(lambda *xs: _to_arm_seed(np.stack(xs), a, s), *final)
    return SweepResult(arms=tuple(arms), seeds=s, eval_steps=eval_steps,
                       curves={k: v for k, (st, v) in out.items() if np.array_equal(st, eval_steps)},
                       train_steps=np.asarray(loss[0]), train_loss=loss[1], final_params=params,
                       batch_size=batch, diverged_at=_to_arm_seed(diverged, a, s), groups=runs,
                       horizon=int(eval_steps[-1]), base_seeds=spec.base_seeds)


def speedup(base: float, arm: float) -> float:
    """base / arm of two (restricted-mean) step counts; NaN when either is not finite or arm is 0."""
    return base / arm if math.isfinite(base) and math.isfinite(arm) and arm > 0 else math.nan


__all__ = ["Arm", "GroupRun", "MEMBER_AXIS", "SweepResult", "SweepSpec", "SweepTask", "group_program", "run",
           "speedup", "validate_arms"]
