"""The generic training loop: compiled step chunks, hooks, logging, checkpoints, NaN guard.

`fit` drives a pure `step_fn(state) -> (state, metrics)` (batch drawn inside the step) or
`step_fn(state, batch)` fed from a host iterator. Steps run in segments compiled as one
`lax.scan` each (jitted once per segment length, state donated); segment boundaries are the
union of chunk multiples, hook steps and checkpoint steps, a deterministic function of the
config, so a resumed run replays exactly the same compiled programs on the same states and
ends bit-identical to an uninterrupted one.

Works unchanged for a vmapped ensemble (seeds x hyperparameters): pass the vmapped step and
the stacked state; metrics then carry a trailing member axis.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from lsb_jax.train.checkpoint import Checkpointer


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; raised with the step and the last good checkpoint."""


class Hook:
    """Runs on the host at chosen steps, after the update that reaches that step.

    every: fire at every multiple of `every` (including 0 if `at_start`); at: explicit steps.
    Subclasses implement __call__(state, step) -> dict of metrics to log (or None), and
    state_dict/load_state_dict if they hold state that must survive a resume.
    """

    name = "hook"

    def __init__(self, every: int | None = None, at: Iterable[int] = (), at_start: bool = False):
        self.every = every
        self.at = tuple(sorted(set(int(s) for s in at)))
        self.at_start = at_start

    def fire_steps(self, num_steps: int) -> set[int]:
        steps = {s for s in self.at if 0 <= s <= num_steps}
        if self.every:
            steps.update(range(0 if self.at_start else self.every, num_steps + 1, self.every))
        return steps

    def __call__(self, state, step: int) -> dict | None:  # pragma: no cover - interface
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass


class EvalHook(Hook):
    """Evaluates `fn(state) -> {name: array}` (jitted once) and logs it with a name prefix."""

    def __init__(self, fn: Callable[[Any], dict], every: int | None = None, at: Iterable[int] = (),
                 at_start: bool = True, prefix: str = "", name: str = "eval"):
        super().__init__(every, at, at_start)
        self._fn = jax.jit(fn)
        self.prefix = prefix
        self.name = name

    def __call__(self, state, step):
        out = jax.device_get(self._fn(state))
        return {self.prefix + k: np.asarray(v) for k, v in out.items()}


@dataclasses.dataclass
class FitResult:
    state: Any
    history: dict[str, np.ndarray]   # name -> [rows, ...] and name_step -> [rows]
    resumed_from: int | None = None


def _host_step(state) -> int:
    return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def segment_boundaries(start: int, num_steps: int, chunk_size: int, events: Iterable[int]) -> list[int]:
    """Sorted boundaries in (start, num_steps]: chunk multiples, event steps and the end."""
    marks = set(range(chunk_size, num_steps, chunk_size)) | {s for s in events if 0 < s < num_steps}
    marks.add(num_steps)
    return sorted(s for s in marks if s > start)


def fit(step_fn: Callable, state: Any, num_steps: int, *, ctx=None, hooks: Sequence[Hook] = (),
        batches: Iterator | None = None, step_args: tuple = (), chunk_size: int = 100, checkpoint_every: int | None = None,
        log_every: int = 1, nonfinite: str = "raise", desc: str = "train",
        checkpoint_dir=None, resume: bool | None = None) -> FitResult:
    """Trains `state` for `num_steps` updates (in total, counting steps before a resume).

    Args:
      step_fn: pure `step(state) -> (state, metrics)`; or `step(state, batch)` when `batches`
        is given (then each segment stacks its host batches and scans over them).
      ctx: a `RunContext` (metrics go to its JSONL/TensorBoard, checkpoints to its folder,
        `ctx.resume` restores the latest checkpoint). Without ctx nothing is written unless
        `checkpoint_dir` is given.
      hooks: evaluation / tracking hooks; their metrics are logged at their steps.
      step_args: extra arguments passed to every step_fn call (e.g. the ensemble's stacked
        hyperparameters, a data pool): jit arguments, not baked-in constants, never donated.
      batches: optional host iterator; if it has get_state()/set_state(), that state is saved
        in checkpoints and restored on resume.
      chunk_size: steps per compiled scan segment (1 = one jitted step per dispatch).
      checkpoint_every: save every this many steps (and always at the end when checkpointing).
      log_every: write train metrics every this many steps (the NaN guard checks every step).
      nonfinite: "raise" stops with NonFiniteLossError naming the step (the state that went bad
        is never checkpointed); "continue" keeps going (for sweeps where divergence is data).
    """
    if nonfinite not in ("raise", "continue"):
        raise ValueError(f"nonfinite must be 'raise' or 'continue', got {nonfinite!r}")
    if chunk_size < 1 or log_every < 1:
        raise ValueError("chunk_size and log_every must be >= 1")
    ckpt_dir = checkpoint_dir if checkpoint_dir is not None else (ctx.checkpoint_dir if ctx is not None else None)
    resume = (ctx.resume if ctx is not None else False) if resume is None else resume
    ckpt = Checkpointer(ckpt_dir) if ckpt_dir is not None else None
    metrics_writer = ctx.metrics if ctx is not None else None
    memory_rows: list[dict] = []

    def log(step: int, values: dict) -> None:
        if metrics_writer is not None:
            metrics_writer.write(step, values)
        else:
            memory_rows.append({"step": step, **values})

    # --- resume -------------------------------------------------------------------------------
    resumed_from = None
    if ckpt is not None and resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        resumed_from = _host_step(state)
        for hook in hooks:
            hook.load_state_dict(meta.get("hooks", {}).get(hook.name, {}))
        if batches is not None and hasattr(batches, "set_state") and "data" in meta:
            batches.set_state(meta["data"])
        if metrics_writer is not None:
            metrics_writer.truncate_after(resumed_from)
    start = _host_step(state)

    hook_steps = {h.name: h.fire_steps(num_steps) for h in hooks}
    ckpt_steps = set(range(checkpoint_every, num_steps + 1, checkpoint_every)) if (ckpt and checkpoint_every) else set()
    events = set().union(*hook_steps.values(), ckpt_steps) if (hook_steps or ckpt_steps) else set()

    if batches is None:
        def run_segment(state, length, args):
            return jax.lax.scan(lambda s, _: step_fn(s, *args), state, None, length=length)
        run = jax.jit(run_segment, static_argnums=1, donate_argnums=0)
    else:
        def run_segment_xs(state, xs, args):
            return jax.lax.scan(lambda s, x: step_fn(s, x, *args), state, xs)
        run = jax.jit(run_segment_xs, donate_argnums=0)

    def save(step: int) -> None:
        meta = {"step": step, "hooks": {h.name: h.state_dict() for h in hooks}}
        if batches is not None and hasattr(batches, "get_state"):
            meta["data"] = batches.get_state()
        ckpt.save(step, state, meta)

    def run_hooks(step: int) -> None:
        for hook in hooks:
            if step in hook_steps[hook.name]:
                out = hook(state, step)
                if out:
                    log(step, out)

    if start == 0 and resumed_from is None:
        run_hooks(0)

    disable = (not ctx.progress) if ctx is not None else None
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=disable, dynamic_ncols=True, mininterval=1.0)
    try:
        current = start
        for boundary in segment_boundaries(start, num_steps, chunk_size, events):
            length = boundary - current
            if batches is None:
                state, metrics = run(state, length, step_args)
            else:
                xs = jax.tree.map(lambda *b: np.stack(b), *[next(batches) for _ in range(length)])
                state, metrics = run(state, xs, step_args)
            metrics = jax.device_get(metrics)
            loss = np.asarray(metrics.get("loss", np.zeros(length)))
            bad = ~np.isfinite(loss.reshape(length, -1)).all(axis=1)
            stop_at = int(np.argmax(bad)) if (nonfinite == "raise" and bad.any()) else length
            for i in range(stop_at):
                s = current + i + 1
                if s % log_every == 0 or s == num_steps:
                    log(s, {k: np.asarray(v[i]) for k, v in metrics.items()})
            if stop_at < length:
                s = current + stop_at + 1
                last = ckpt.latest_step() if ckpt is not None else None
                where = f"; last good checkpoint: step {last} in {ckpt.directory}" if last is not None else ""
                kind = "NaN" if np.isnan(loss.reshape(length, -1)[stop_at]).any() else "inf"
                raise NonFiniteLossError(f"{desc}: loss became {kind} at step {s}; stopped{where}")
            current = boundary
            bar.update(length)
            bar.set_postfix(loss=f"{float(np.nanmean(loss[-1])):.4g}", refresh=False)
            run_hooks(current)
            if current in ckpt_steps or (ckpt is not None and current == num_steps):
                save(current)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()

    history = metrics_writer.history() if metrics_writer is not None else _rows_to_history(memory_rows)
    return FitResult(state=state, history=history, resumed_from=resumed_from)


def _rows_to_history(rows: list[dict]) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    steps: dict[str, list] = {}
    for row in rows:
        for k, v in row.items():
            if k == "step":
                continue
            out.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
            steps.setdefault(k, []).append(row["step"])
    hist = {k: np.stack(v) for k, v in out.items()}
    hist.update({f"{k}_step": np.asarray(s) for k, s in steps.items()})
    return hist
