"""The generic training loop: compiled step chunks, hooks, logging, checkpoints, NaN guard.

`fit` drives a pure `step_fn(state) -> (state, metrics)` (batch drawn inside the step) or
`step_fn(state, batch)` fed from a host iterator. Steps run in segments of at most chunk_size
steps, all executed by ONE jitted program (a `fori_loop` with a traced trip count, state
donated); segment boundaries are the union of chunk multiples, hook steps and checkpoint steps,
a deterministic function of the config, so a resumed run replays exactly the same program on
the same states and ends bit-identical to an uninterrupted one.

Works unchanged for a vmapped ensemble (seeds x hyperparameters): pass the vmapped step and
the stacked state; metrics then carry a trailing member axis.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lsb_jax.analysis import history_from_blocks, row_block
from lsb_jax.train.checkpoint import CheckpointCorrupt, Checkpointer
from lsb_jax.train.guard import DivergenceGuard, LossExplodedError, NonFiniteLossError, TrainingDiverged
from lsb_jax.train.hosts import to_host

__all__ = ["DivergenceGuard", "EvalHook", "FitResult", "Hook", "LossExplodedError", "NonFiniteLossError",
           "TrainingDiverged", "fit", "segment_boundaries"]


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
    """Evaluates `fn(state, *args) -> {name: array}` (jitted once) and logs it with a name prefix.

    Pass data (test sets, pools) through `args`: they become jit arguments, not constants
    baked into the compiled program.
    """

    def __init__(self, fn: Callable[..., dict], every: int | None = None, at: Iterable[int] = (),
                 at_start: bool = True, prefix: str = "", name: str = "eval", args: tuple = ()):
        super().__init__(every, at, at_start)
        self._fn = jax.jit(fn)
        self.args = tuple(args)
        self.prefix = prefix
        self.name = name

    def __call__(self, state, step):
        out = to_host(self._fn(state, *self.args))
        return {self.prefix + k: np.asarray(v) for k, v in out.items()}


@dataclasses.dataclass
class FitResult:
    state: Any
    history: dict[str, np.ndarray]   # name -> [rows, ...] and name_step -> [rows]
    resumed_from: int | None = None
    diverged_at: np.ndarray | None = None   # [M] first divergent step per member (-1: none); see `on_divergence`

    @property
    def num_diverged(self) -> int:
        return 0 if self.diverged_at is None else int((np.asarray(self.diverged_at) >= 0).sum())


def _host_step(state) -> int:
    return int(np.asarray(to_host(state.step)).reshape(-1)[0])


def segment_boundaries(start: int, num_steps: int, chunk_size: int, events: Iterable[int]) -> list[int]:
    """Sorted boundaries in (start, num_steps]: chunk multiples, event steps and the end.

    Segments never exceed chunk_size; all of them run one compiled program (dynamic trip count).
    """
    marks = set(range(chunk_size, num_steps, chunk_size)) | {s for s in events if 0 < s < num_steps}
    marks.add(num_steps)
    return sorted(s for s in marks if s > start)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


# XLA:CPU options by kind, each probed on its own (an XLA that lacks one runs with its default).
_CPU_OPTIONS = {
    # XLA:CPU's default copy insertion copies loop-carried parameters the step still reads after its
    # update is computed; with region analysis it proves most of those copies unneeded (the 16-seed
    # parity step: 7 copies per step -> 1). Buffer copies only: the arithmetic is the same.
    "loop": {"xla_cpu_copy_insertion_use_region_analysis": True},
    # YNNPACK fusions for dots only, not reductions: from a few dozen members on, XLA:CPU hands a
    # vmapped grid's tiny per-member reductions (the MLSA's D = 4 sums) to YNNPACK, several times
    # slower than its own loops (`benchmarks/theory_scan.py`). The parity MLP's step keeps the
    # default: there its YNN fusions are dots and help. A different summation order: last bits.
    "tiny_reductions": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    # No YNNPACK fusions at all: XLA's own kernels throughout. k-means' Lloyd steps on a few
    # features (memory-bound [N, F] x [F, k] products, k = 2) run faster so; wide features and
    # the models' matmuls do not (`benchmarks/kmeans.py` measures it per feature count).
    "own_kernels": {"xla_cpu_experimental_ynn_fusion_type": ""},
}


@functools.cache
def _cpu_option_works(name: str, value) -> bool:
    try:
        jax.jit(lambda x: jnp.sum(x * 2), compiler_options={name: value}).lower(np.ones(4, np.float32)).compile()
    except Exception:  # an XLA without the option (or the value)
        return False
    return True


def cpu_compiler_options(*kinds: str) -> dict:
    """The XLA:CPU compiler options of the given kinds ("loop": compiled training loops, what fit
    uses; "tiny_reductions": vmapped grids of tiny models, the theory's; "own_kernels": k-means on
    a few features; a later kind's value of the same option wins), those this XLA accepts
    (each probed once with a tiny program); {} off the CPU. Pass as jax.jit(compiler_options=...)
    to the outermost jit only (JAX refuses compiler options on a jit nested in another)."""
    if jax.default_backend() != "cpu":
        return {}
    out = {}
    for kind in kinds:
        for name, value in _CPU_OPTIONS[kind].items():
            if _cpu_option_works(name, value):
                out[name] = value
    return out


def loop_compiler_options() -> dict:
    """The compiler options of fit's segment program (for other compiled training loops too)."""
    return cpu_compiler_options("loop")


@functools.lru_cache(maxsize=8)  # holds step_fn closures: keep it small
def _cached_program(step_fn: Callable, chunk: int, host: bool):
    """Cached: calling fit() again with the same step_fn reuses the jitted program (and jit's own
    cache its compilation for the same shapes), with no tracing on the host per call."""
    return _build_program(step_fn, chunk, host)


def _build_program(step_fn: Callable, chunk: int, host: bool):
    """One jitted program for every segment: run n <= chunk steps, metrics into a [chunk] buffer.

    The trip count n is a traced argument, so segments of any length share one compilation
    (scan would compile once per distinct length). Also returns whether all parameters are
    finite, so a checkpoint is never written from a state that went bad in the segment's last
    update (whose loss, computed before the update, still looked fine). The metrics' shapes are
    found while the program is traced (once per compilation), not by tracing the step again
    at every fit() call.
    """
    def run(state, n, args, xs):
        probe = (state, jax.tree.map(lambda a: a[0], xs)) if host else (state,)
        metric_shapes = jax.eval_shape(lambda *a: step_fn(*a, *args)[1], *probe)
        buf0 = jax.tree.map(lambda sd: jnp.zeros((chunk,) + sd.shape, sd.dtype), metric_shapes)

        def body(i, carry):
            st, buf = carry
            if host:
                st, metrics = step_fn(st, jax.tree.map(lambda a: a[i], xs), *args)
            else:
                st, metrics = step_fn(st, *args)
            buf = jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, i, 0), buf, metrics)
            return st, buf

        state, buf = jax.lax.fori_loop(0, n, body, (state, buf0))
        return state, buf, _all_finite(state.params)

    return jax.jit(run, donate_argnums=0, compiler_options=loop_compiler_options())


def _first_bad(first_M: np.ndarray, reasons: list, params_finite: bool, length: int, start: int
               ) -> tuple[int, str | None, type | None]:
    """(steps of the segment to keep, why training stops or None, the error type): the first
    divergent loss of any member (`DivergenceGuard.scan`), else non-finite parameters after the
    segment's last update (its loss was computed before it)."""
    if (first_M >= 0).any():
        m = int(np.argmin(np.where(first_M >= 0, first_M, length)))
        i = int(first_M[m])
        member = f" (member {m})" if len(first_M) > 1 else ""
        kind = NonFiniteLossError if reasons[m].startswith("loss became") else LossExplodedError
        return i, f"{reasons[m]} at step {start + i + 1}{member}", kind
    if not params_finite:   # every loss of the segment came from finite parameters: all its rows are kept
        return length, f"parameters became non-finite by step {start + length}", NonFiniteLossError
    return length, None, None


def _copy_tree(tree):
    return jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


def fit(step_fn: Callable, state: Any, num_steps: int, *, ctx=None, hooks: Sequence[Hook] = (),
        batches: Iterator | None = None, step_args: tuple = (), chunk_size: int = 100,
        checkpoint_every: int | None = None, log_every: int = 1, on_divergence: str = "raise",
        divergence: DivergenceGuard | None = DivergenceGuard(), desc: str = "train",
        checkpoint_dir=None, resume: bool | None = None, donate_state: bool = False,
        prepare_batches: Callable | None = None) -> FitResult:
    """Trains `state` for `num_steps` updates (in total, counting steps before a resume).

    Args:
      step_fn: pure `step(state, *step_args) -> (state, metrics)`; or `step(state, batch,
        *step_args)` when `batches` is given.
      ctx: a `RunContext` (metrics go to its JSONL/TensorBoard, checkpoints to its folder,
        `ctx.resume` restores the latest checkpoint). One fit per context: use `ctx.child(name)`
        for further training phases. Without ctx nothing is written unless `checkpoint_dir`.
      hooks: evaluation / tracking hooks; their metrics are logged at their steps.
      batches: optional host iterator. To resume it must have get_state()/set_state() (saved in
        each checkpoint). Each segment stacks its batches (padded to chunk_size) on the host.
      step_args: extra arguments passed to every step_fn call (e.g. the ensemble's stacked
        hyperparameters, a data pool): jit arguments, not baked-in constants, never donated.
      chunk_size: the most steps per compiled segment (1 = one dispatch per step).
      checkpoint_every: save every this many steps (and always at the end when checkpointing).
      log_every: write train metrics every this many steps (the NaN guard checks every step).
      on_divergence: "raise" stops at the first divergent loss of any member (NaN/inf:
        `NonFiniteLossError`; a finite loss above the guard's bound: `LossExplodedError`), naming
        the step and the newest checkpoint that verifies (a state that went bad is never
        checkpointed); "continue" keeps going (sweeps where divergence is data) and records each
        member's first divergent step in `FitResult.diverged_at`.
      divergence: the rule for a finite loss that explodes (`DivergenceGuard`, on by default;
        None: only NaN/inf count). Its per-member references are saved in every checkpoint.
      donate_state: False (default) copies `state` once so the caller's arrays survive (the
        segments donate their input); True skips the copy (saves memory for large models).
      prepare_batches: optional function applied to each segment's stacked host batches before
        the device call (e.g. `jax.device_put` with a sharding).
    """
    if on_divergence not in ("raise", "continue"):
        raise ValueError(f"on_divergence must be 'raise' or 'continue', got {on_divergence!r}")
    guard = divergence if divergence is not None else DivergenceGuard(factor=math.inf)
    if chunk_size < 1 or log_every < 1:
        raise ValueError("chunk_size and log_every must be >= 1")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError("checkpoint_every must be >= 1 (or None)")
    if ctx is not None:
        if ctx.fit_used:
            raise ValueError(f"fit() already ran in {ctx.dir}: use ctx.child(name) for another training phase")
        ctx.fit_used = True
    ckpt_dir = checkpoint_dir if checkpoint_dir is not None else (ctx.checkpoint_dir if ctx is not None else None)
    resume = (ctx.resume if ctx is not None else False) if resume is None else resume
    ckpt = Checkpointer(ckpt_dir) if ckpt_dir is not None else None
    metrics_writer = ctx.metrics if ctx is not None else None
    memory_blocks: list[tuple[np.ndarray, dict]] = []   # without ctx: (steps [R], {name: [R, ...]})
    host = batches is not None

    def log(step: int, values: dict) -> None:
        if metrics_writer is not None:
            metrics_writer.write(step, values)
        else:
            memory_blocks.append(row_block(step, values))

    # --- resume -------------------------------------------------------------------------------
    resumed_from = None
    meta: dict = {}
    if resume and host and not (hasattr(batches, "get_state") and hasattr(batches, "set_state")):
        raise ValueError("cannot resume exactly: the data iterator has no get_state()/set_state()")
    moved = ckpt.quarantined() if ckpt is not None and resume and ckpt.latest_step() is None else []
    if moved:
        raise CheckpointCorrupt(f"{desc}: no intact checkpoint left in {ckpt.directory} (the corrupt ones, steps "
                                f"{', '.join(moved)}, were moved to {ckpt.corrupt_dir}): start over with --force")
    if ckpt is not None and resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)     # the newest intact checkpoint (corrupt ones moved aside)
        resumed_from = _host_step(state)
        if metrics_writer is not None:        # first: a run whose metrics were lost must not go on
            if "metrics" in meta and jax.process_index() == 0:
                metrics_writer.rewind(meta["metrics"], resumed_from)
            else:   # older checkpoints; process i > 0 (the position saved is process 0's file: `runner`)
                metrics_writer.truncate_after(resumed_from)
        saved = meta.get("hooks", {})
        for i, hook in enumerate(hooks):
            hook.load_state_dict(saved.get(f"{i}.{hook.name}", {}))
        if host:
            batches.set_state(meta["data"])
    else:
        if not donate_state:
            state = _copy_tree(state)
        if metrics_writer is not None and resume:
            metrics_writer.truncate_after(-1)
    start = _host_step(state)
    guard_state = None if not meta.get("guard") else meta["guard"]

    hook_steps = [h.fire_steps(num_steps) for h in hooks]
    ckpt_steps = set(range(checkpoint_every, num_steps + 1, checkpoint_every)) if (ckpt and checkpoint_every) else set()
    events = set(ckpt_steps).union(*hook_steps)

    def save(step: int) -> None:
        meta = {"step": step, "hooks": {f"{i}.{h.name}": h.state_dict() for i, h in enumerate(hooks)}}
        if host and hasattr(batches, "get_state"):
            meta["data"] = batches.get_state()
        if guard_state is not None:
            meta["guard"] = DivergenceGuard.state_to_json(guard_state)
        if metrics_writer is not None:
            meta["metrics"] = metrics_writer.position()   # flushes: nothing logged before it can be lost
        ckpt.save(step, state, meta)

    def run_hooks(step: int) -> None:
        for hook, steps in zip(hooks, hook_steps):
            if step in steps:
                out = hook(state, step)
                if out:
                    log(step, out)

    def next_batches(n: int, at_step: int):
        got = []
        for i in range(n):
            try:
                got.append(next(batches))
            except StopIteration:
                raise RuntimeError(f"{desc}: the data iterator ran out at step {at_step + i}") from None
        got += [got[-1]] * (chunk - n)  # padding: never processed (the loop runs n steps)
        xs = jax.tree.map(lambda *b: np.stack(b), *got)
        return prepare_batches(xs) if prepare_batches is not None else xs

    if start == 0 and resumed_from is None:
        run_hooks(0)

    # the program's buffer length comes from the whole run's boundaries, so a resumed run uses the same program
    every = segment_boundaries(0, num_steps, chunk_size, events)
    chunk = max([b - a for a, b in zip([0] + every, every)], default=1)
    boundaries = [b for b in every if b > start]
    program = None
    disable = (not ctx.progress) if ctx is not None else None
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=disable, dynamic_ncols=True, mininterval=1.0)
    warm = 0    # segments run by this process (the first one compiles)
    try:
        current = start
        for boundary in boundaries:
            length = boundary - current
            xs = next_batches(length, current) if host else None
            if program is None:
                program = _cached_program(step_fn, chunk, host)
            t_segment = time.perf_counter()
            state, metrics, params_finite = program(state, np.int32(length), step_args, xs)
            metrics = jax.tree.map(lambda m: np.asarray(m)[:length], to_host(metrics))
            seconds, warm = time.perf_counter() - t_segment, warm + 1
            loss_LxM = np.asarray(metrics.get("loss", np.zeros(length))).reshape(length, -1)
            if guard_state is None or not isinstance(guard_state.get("start"), np.ndarray):
                guard_state = DivergenceGuard.state_from_json(guard_state or {}, loss_LxM.shape[1])
            first_M, reasons, guard_state = guard.scan(loss_LxM, guard_state, first_step=current + 1)
            stop_at, what, error = (_first_bad(first_M, reasons, bool(params_finite), length, current)
                                    if on_divergence == "raise" else (length, None, None))
            steps = current + 1 + np.arange(stop_at)
            keep = (steps % log_every == 0) | (steps == num_steps)   # the config's rows: a resume logs the same
            # a step that reports its "tokens" gets the segment's throughput (wall clock, so not part of
            # what a resume reproduces) on the segment's last row when that row is logged; the first
            # segment compiles: none
            rate = (float(np.sum(metrics["tokens"][:stop_at])) / seconds if "tokens" in metrics and warm > 1
                    and stop_at > 0 and keep[-1] else None)
            rows = np.flatnonzero(keep)
            if metrics_writer is not None:
                for i in rows:
                    values = {k: np.asarray(v[i]) for k, v in metrics.items()}
                    if rate is not None and i == stop_at - 1:
                        values["tokens_per_s"] = rate
                    log(int(steps[i]), values)
            elif rows.size:   # in memory: the segment's rows as one block (no per-step Python)
                memory_blocks.append((steps[rows], {k: np.asarray(v)[rows] for k, v in metrics.items()}))
                if rate is not None:
                    log(int(steps[-1]), {"tokens_per_s": rate})
            if what is not None:
                last = ckpt.newest_intact(state) if ckpt is not None else None
                where = f"; last good checkpoint: step {last} in {ckpt.directory}" if last is not None else ""
                raise error(f"{desc}: {what}; stopped{where}")
            current = boundary
            bar.update(length)
            bar.set_postfix(loss=f"{float(np.nanmean(loss_LxM[-1])):.4g}",
                            **({"tok/s": f"{rate:.0f}"} if rate is not None else {}), refresh=False)
            run_hooks(current)
            if current in ckpt_steps or (ckpt is not None and current == num_steps):
                save(current)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
        if metrics_writer is not None:
            metrics_writer.flush()

    history = metrics_writer.history() if metrics_writer is not None else history_from_blocks(memory_blocks)
    diverged_at = None if guard_state is None else np.asarray(guard_state["diverged_at"]).copy()
    return FitResult(state=state, history=history, resumed_from=resumed_from, diverged_at=diverged_at)
