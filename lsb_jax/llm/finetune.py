"""Fine-tuning a causal LM (full or LoRA) on the shared trainer (`lsb_jax.train.fit`).

    model = load_pretrained(path)                                       # or a proxy built from a config
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=2e-5, schedule="warmup_cosine"),
                         warmup_ratio=0.03, lora_rank=8, accum_steps=4, compute_dtype="bfloat16")
    result = finetune(model, batches, cfg, num_steps, ctx=ctx, mesh=make_mesh(data=8))
    save_pretrained(result.merged_model(), "out/")                      # LoRA folded in

The model is split once, `graphdef, trainable, frozen = nnx.split(model, TRAINABLE, ...)`:
`trainable` is `TrainState.params` (optimized, checkpointed, donated); `frozen` (the base
weights under LoRA, dropout RNG state) is a jit argument of every step (`fit(step_args=...)`),
never copied into the optimizer state. LoRA is chosen by parameter type (`nnx.LoRAParam`), not
by a second code path.

The step. A batch of B examples (`tokens`, `loss_mask`, `attention_mask` [B, T], `example_id`
[B], optional `loss_weight` [B]) is split into A = `accum_steps` micro-batches of b = B / A and

    L = sum_b w_b l_b / B = sum_a [ (b / B) reduce_losses(l_a, batch_a) ]
    g = dL/dtheta         = sum_a d[(b / B) reduce_losses(l_a, batch_a)]/dtheta

is summed over a `lax.scan` in fp32 (one micro-batch's activations live at a time), which is the
big-batch gradient up to float summation order. `l_b` is `sequence_loss`: the mean next-token
loss over example b's `loss_mask` tokens. SAM's second gradient uses the same accumulation.
Mixed precision: master parameters in `param_dtype`, cast to `compute_dtype` inside the loss
(gradients flow back through the cast, so they and the optimizer state stay in `param_dtype`).
Each step returns the per-example losses `example_loss` [B] and `example_id` [B] as metrics
(fit's history: [steps, B]), the raw material of training-loss trajectories.

Sharding: parameters are placed by `models.lm.sharding` (logical axes on a (data, fsdp,
tensor) mesh), host batches are put with their batch axis over (data, fsdp); XLA propagates
the rest. Multi-host: call `maybe_initialize_distributed()` first; each process then feeds its
own slice of the global batch (`jax.make_array_from_process_local_data`). See docs/tpu.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lsb_jax.models.lm.lora import ALL_LINEAR, ATTENTION_QV, LoRAConfig, add_lora, merge_lora
from lsb_jax.models.lm.layers import MUON_IN_AXES
from lsb_jax.models.lm.loss import sequence_loss
from lsb_jax.models.lm.model import Decoder
from lsb_jax.models.lm.sharding import batch_sharding, shard_model
from lsb_jax.optim import OptimConfig, Optimizer, make_optimizer
from lsb_jax.optim.factory import lr_schedule
from lsb_jax.train.hosts import maybe_initialize_distributed  # noqa: F401 (re-exported)
from lsb_jax.train import STREAM_STEP, FitResult, Hook, TrainState, fit, reduce_losses, step_key

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
LORA_TARGETS = {"qv": ATTENTION_QV, "all_linear": ALL_LINEAR}
EXAMPLE_ID = "example_id"


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """What to train and how (flat fields, so `--set finetune.lora_rank=8` works).

    lora_rank: 0 = full fine-tuning; > 0 adds adapters (`lora_targets`: "qv", "all_linear" or a
      regex on module paths such as "layers.0.attn.q") and trains only them.
    accum_steps: micro-batches per step (the batch size must be divisible by it).
    warmup_ratio: if > 0, sets `optim.warmup_steps = round(warmup_ratio * num_steps)`.
    param_dtype / compute_dtype: master weights / the forward-backward pass ("float32", "bfloat16").
    loss_chunk: sequence positions per chunk of the vocabulary projection (`sequence_loss`).
    """

    optim: OptimConfig = OptimConfig(name="adamw", lr=2e-5, schedule="warmup_cosine")
    warmup_ratio: float = 0.03
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: str = "qv"
    lora_dropout: float = 0.0
    lora_seed: int = 0
    accum_steps: int = 1
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    loss_chunk: int = 128
    seed: int = 0

    def __post_init__(self):
        for field in ("param_dtype", "compute_dtype"):
            if getattr(self, field) not in DTYPES:
                raise ValueError(f"FinetuneConfig.{field}: unknown dtype {getattr(self, field)!r}; "
                                 f"expected one of {tuple(DTYPES)}")
        if self.lora_rank < 0:
            raise ValueError(f"FinetuneConfig.lora_rank must be >= 0, got {self.lora_rank}")
        if self.accum_steps < 1:
            raise ValueError(f"FinetuneConfig.accum_steps must be >= 1, got {self.accum_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"FinetuneConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"FinetuneConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora_rank == 0:   # full fine-tuning: adapter options would be silently ignored
            defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
            changed = [k for k in ("lora_targets", "lora_alpha", "lora_dropout")
                       if getattr(self, k) != defaults[k]]
            if changed:
                raise ValueError(f"FinetuneConfig: {', '.join(changed)} set but lora_rank=0 (full fine-tuning "
                                 "trains no adapters): set lora_rank > 0 or leave them at their defaults")
        elif self.lora_targets not in LORA_TARGETS:
            try:
                re.compile(self.lora_targets)
            except re.error as e:
                raise ValueError(f"FinetuneConfig.lora_targets: {self.lora_targets!r} is neither "
                                 f"{' nor '.join(repr(k) for k in LORA_TARGETS)} nor a valid regular expression "
                                 f"({e})") from None
        if self.loss_chunk < 1:
            raise ValueError(f"FinetuneConfig.loss_chunk must be >= 1, got {self.loss_chunk}")
        if self.optim.pcgrad:
            raise ValueError("FinetuneConfig.optim.pcgrad: per-example gradients of an LLM are not supported")

    @property
    def lora(self) -> LoRAConfig | None:
        if self.lora_rank == 0:
            return None
        return LoRAConfig(rank=self.lora_rank, alpha=self.lora_alpha,
                          targets=LORA_TARGETS.get(self.lora_targets, self.lora_targets), dropout=self.lora_dropout)

    @property
    def trainable(self):
        """The NNX filter of the optimized parameters."""
        return nnx.LoRAParam if self.lora_rank else nnx.Param

    def schedule(self, num_steps: int) -> dict[str, int]:
        """The lr schedule's lengths of a run of `num_steps`: {"total_steps", "warmup_steps"}
        (warmup from `warmup_ratio`: at least 1 step and fewer than num_steps, as warmup_cosine
        needs a decay; else `optim.warmup_steps`)."""
        warmup = self.optim.warmup_steps
        if self.warmup_ratio > 0:
            warmup = min(max(1, round(self.warmup_ratio * num_steps)), max(0, num_steps - 1))
        return {"total_steps": int(num_steps), "warmup_steps": int(warmup)}

    def optimizer(self, num_steps, warmup_steps=None) -> Optimizer:
        """The optimizer of a run of `num_steps` (warmup: `schedule`, or `warmup_steps`); both
        may be traced, as in the shared step of `make_finetune_step(..., optimizer=None)`."""
        optim = self.optim
        if optim.name == "muon":   # the decoder's 3-D attention kernels are Muon matrices too
            defaults = {k: v for k, v in MUON_IN_AXES.items() if k not in optim.muon_in_axes}
            optim = dataclasses.replace(optim, muon_in_axes={**optim.muon_in_axes, **defaults})
        if warmup_steps is None:
            warmup_steps = self.schedule(num_steps)["warmup_steps"]
        return make_optimizer(optim, num_steps, warmup_steps=warmup_steps)


# ----------------------------------------------------------------------------- model <-> pytrees


@dataclasses.dataclass(frozen=True)
class Split:
    """A model split for training: `nnx.merge(graphdef, params, frozen)` rebuilds it."""

    graphdef: nnx.GraphDef
    frozen: nnx.State

    def merge(self, params) -> Decoder:
        return nnx.merge(self.graphdef, params, self.frozen)

    def merged_model(self, params) -> Decoder:
        """The trained model with LoRA adapters folded in (export with `save_pretrained`)."""
        return merge_lora(self.merge(params))


def prepare(model: Decoder, cfg: FinetuneConfig, mesh: Mesh | None = None) -> tuple[Split, nnx.State]:
    """Adds LoRA (if configured), casts to `param_dtype`, shards over `mesh`, splits.

    Returns (split, trainable params). `model` is modified in place (adapters, dtype).
    """
    lora = cfg.lora
    if lora is not None:
        add_lora(model, lora, rngs=nnx.Rngs(cfg.lora_seed))
    param_dtype = DTYPES[cfg.param_dtype]
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x.astype(param_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                   params))
    model.dtype = DTYPES[cfg.compute_dtype]   # activations, rotary tables (read at call time)
    if mesh is not None:
        shard_model(model, mesh)
    graphdef, trainable, frozen = nnx.split(model, cfg.trainable, ...)
    return Split(graphdef, frozen), trainable


def _cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_split_loss_fn(split_graphdef: nnx.GraphDef, cfg: FinetuneConfig, train: bool = True) -> Callable:
    """loss_fn(params, frozen, batch, rng) -> loss_B (the per-example mean token loss).

    Parameters are cast to `compute_dtype` here. With LoRA dropout and `train` the model runs in
    train mode with every RNG stream reseeded from `rng` (a function of (seed, step,
    micro-batch)); `train=False` (scoring) runs it in eval mode (rng unused).
    """
    compute = DTYPES[cfg.compute_dtype]
    dropout = cfg.lora is not None and cfg.lora.dropout > 0

    def loss_fn(params, frozen, batch, rng):
        model = nnx.merge(split_graphdef, _cast(params, compute), _cast(frozen, compute))
        if dropout and train:
            model.train()
            tags = sorted({s.tag for _, s in nnx.iter_graph(model) if isinstance(s, nnx.RngStream)})
            nnx.reseed(model, **{t: jax.random.fold_in(rng, i) for i, t in enumerate(tags)})
        elif dropout:
            model.eval()
        return sequence_loss(model, batch, chunk_size=cfg.loss_chunk)[0]

    return loss_fn


# ----------------------------------------------------------------------------- the step


def accumulated_value_and_grad(loss_fn: Callable, params, batch: dict, accum_steps: int, rng=None):
    """(L, loss_B, g): the batch objective L = reduce_losses(loss_B, batch), the per-example
    losses and dL/dparams, over `accum_steps` sequential micro-batches (see the module docstring).

    `loss_fn(params, micro_batch, rng) -> [b]`; micro-batch a gets `fold_in(rng, a)`.
    Gradients are summed in fp32 and returned in the parameters' dtypes.
    """
    B = jax.tree.leaves(batch)[0].shape[0]
    if B % accum_steps:
        raise ValueError(f"batch size {B} is not divisible by accum_steps={accum_steps}")
    b = B // accum_steps
    rng = jax.random.PRNGKey(0) if rng is None else rng

    def objective(p, micro, a):
        loss_b = loss_fn(p, micro, jax.random.fold_in(rng, a))
        return reduce_losses(loss_b, micro) * (b / B), loss_b

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    if accum_steps == 1:
        (value, loss_B), grads = grad_fn(params, batch, 0)
        return value, loss_B, grads

    micro_AxB = jax.tree.map(lambda x: x.reshape((accum_steps, b) + x.shape[1:]), batch)

    def body(carry, xs):
        value_sum, g_sum = carry
        micro, a = xs
        (value, loss_b), g = grad_fn(params, micro, a)
        g_sum = jax.tree.map(lambda s, x: s + x.astype(jnp.float32), g_sum, g)
        return (value_sum + value, g_sum), loss_b

    g0 = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
    (value, g_sum), loss_AxB = jax.lax.scan(body, (jnp.zeros((), jnp.float32), g0),
                                            (micro_AxB, jnp.arange(accum_steps)))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), g_sum, params)
    return value, loss_AxB.reshape(B), grads


def make_finetune_step(split_graphdef: nnx.GraphDef, cfg: FinetuneConfig, optimizer: Optimizer | None = None):
    """step(state, batch, frozen) -> (state, metrics) for `fit(..., step_args=(frozen,))`.

    With `optimizer=None` the step is step(state, batch, frozen, schedule) and builds
    `cfg.optimizer(schedule["total_steps"], schedule["warmup_steps"])` from those traced
    scalars: one compiled program serves runs of any length (`shared_finetune_step`).
    metrics: loss (the batch objective), lr (the schedule's value at this update; shared step only), grad_norm (global
    L2 norm of the accumulated gradient, before any clipping), tokens (target tokens in the batch;
    `fit` turns them into tokens_per_s), example_loss [B] and example_id [B] (if in the batch).
    The optimizer is called as `tx.update(g, opt_state, params, grad_fn=...)` (SAM evaluates
    the accumulated gradient at its adversarial point with the same micro-batches and rng).
    """
    if optimizer is not None and optimizer.grad_mode != "mean":
        raise ValueError(f"fine-tuning needs grad_mode 'mean', got {optimizer.grad_mode!r}")
    loss_fn = make_split_loss_fn(split_graphdef, cfg)

    def step(state: TrainState, batch: dict, frozen, schedule=None):
        tx = (optimizer or cfg.optimizer(schedule["total_steps"], schedule["warmup_steps"])).tx
        rng = step_key(state.rng, STREAM_STEP, state.step)
        lf = lambda p, micro, r: loss_fn(p, frozen, micro, r)  # noqa: E731
        value, loss_B, grads = accumulated_value_and_grad(lf, state.params, batch, cfg.accum_steps, rng)
        grad_fn = lambda p, _: accumulated_value_and_grad(lf, p, batch, cfg.accum_steps, rng)[2]  # noqa: E731
        updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value, "grad_norm": optax.tree.norm(grads).astype(jnp.float32),
                   "tokens": batch["loss_mask"][:, 1:].sum().astype(jnp.int32), "example_loss": loss_B}
        if schedule is not None:   # the schedule of the shared step (an explicit optimizer hides its own)
            lr = lr_schedule(cfg.optim, schedule["total_steps"], cfg.optim.lr, schedule["warmup_steps"])
            metrics["lr"] = jnp.asarray(lr(state.step) if callable(lr) else lr, jnp.float32)
        if EXAMPLE_ID in batch:
            metrics[EXAMPLE_ID] = batch[EXAMPLE_ID].astype(jnp.int32)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


class _StepKey:
    """A config as a cache key: equal when everything but the seeds (which live in the train
    state and the adapters' init, not in the step) is equal."""

    def __init__(self, cfg: FinetuneConfig):
        self.cfg, self.key = cfg, repr(dataclasses.replace(cfg, seed=0, lora_seed=0))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _StepKey) and other.key == self.key


@functools.lru_cache(maxsize=8)   # one entry per (model, config): the arms of a protocol share it
def _shared_step(graphdef: nnx.GraphDef, cfg: _StepKey):
    return make_finetune_step(graphdef, cfg.cfg)


def shared_finetune_step(graphdef: nnx.GraphDef, cfg: FinetuneConfig):
    """`make_finetune_step(graphdef, cfg)` with a traced schedule, the same function object for
    equal (graph, config up to the seeds): `fit` caches its compiled program per step function,
    so fine-tuning runs of other lengths, data or seeds compile once."""
    return _shared_step(graphdef, _StepKey(cfg))


def init_finetune_state(params, optimizer: Optimizer, seed: int) -> TrainState:
    """TrainState(step 0, params, tx.init(params) (jitted, so it inherits the params' shardings))."""
    opt_state = jax.jit(optimizer.tx.init)(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                      rng=jax.random.PRNGKey(seed))


# ----------------------------------------------------------------------------- host batches


class ProcessShare:
    """This process's rows of every global batch of `batches` (rows [p B / P, (p + 1) B / P) of
    process p of P): what each host feeds `stacked_batch_put` in a multi-process run, where every
    host iterates the same global order (same data, same key). get/set_state forwarded."""

    def __init__(self, batches: Iterator[dict], index: int | None = None, count: int | None = None):
        self._it = batches
        self.index = jax.process_index() if index is None else index
        self.count = jax.process_count() if count is None else count

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self._it)
        B = len(next(iter(batch.values())))
        if B % self.count:
            raise ValueError(f"a batch of {B} rows cannot be split over {self.count} processes")
        n = B // self.count
        return {k: np.asarray(v)[self.index * n:(self.index + 1) * n] for k, v in batch.items()}

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state) -> None:
        self._it.set_state(state)


def stacked_batch_put(mesh: Mesh | None) -> Callable[[dict], dict]:
    """`fit(prepare_batches=...)` for a segment's stacked batches [L, B, ...]: the batch axis goes
    over the mesh's (data, fsdp) axes. With several processes each one passes its local slice."""
    def put(xs: dict) -> dict:
        if mesh is None:
            return xs
        out = {}
        for k, x in xs.items():
            x = np.asarray(x)
            global_b = x.shape[1] * jax.process_count()
            spec = batch_sharding(mesh, x.ndim - 1, batch_size=global_b).spec
            sharding = NamedSharding(mesh, PartitionSpec(None, *spec))
            if jax.process_count() > 1:   # global_shape: JAX refuses local rows that are not this process's share
                global_shape = (x.shape[0], global_b) + x.shape[2:]
                out[k] = jax.make_array_from_process_local_data(sharding, x, global_shape)
            else:
                out[k] = jax.device_put(x, sharding)
        return out

    return put


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class FinetuneResult:
    split: Split
    fit: FitResult
    tokens: int            # target tokens (loss_mask) seen, over all steps (also those before a resume) and processes
    seconds: float

    @property
    def params(self):
        return self.fit.state.params

    def model(self) -> Decoder:
        return self.split.merge(self.params)

    def merged_model(self) -> Decoder:
        return self.split.merged_model(self.params)


class HostBatches:
    """Wraps a host batch iterator: right-pads every batch to `pad_length` (if given), checks that
    shapes agree when `fixed_shape`, counts the target tokens handed out; get/set_state forwarded."""

    def __init__(self, batches: Iterator[dict], pad_length: int | None = None, fixed_shape: bool = True):
        self._it = batches
        self.pad_length, self.fixed_shape = pad_length, fixed_shape
        self.tokens = 0
        self._shape = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = dict(next(self._it))
        T = np.shape(batch["tokens"])[1]
        if self.pad_length is not None:
            if T > self.pad_length:
                raise ValueError(f"a batch of length {T} does not fit pad_length={self.pad_length}")
            batch = {k: (np.pad(np.asarray(v), ((0, 0), (0, self.pad_length - T))) if np.ndim(v) == 2 else v)
                     for k, v in batch.items()}
        shape = {k: np.shape(v) for k, v in batch.items()}
        if self._shape is None:
            self._shape = shape
        elif self.fixed_shape and shape != self._shape:
            raise ValueError(f"batch shapes changed from {self._shape} to {shape}: fit stacks chunk_size batches "
                             "per segment; pass pad_length (or chunk_size=1)")
        self.tokens += int(np.asarray(batch["loss_mask"])[:, 1:].sum())
        return batch

    def get_state(self) -> dict:
        # the token count travels with the iterator position it describes (restored on resume)
        return {"iterator": self._it.get_state(), "tokens": self.tokens}

    def set_state(self, state) -> None:
        if isinstance(state, dict) and set(state) == {"iterator", "tokens"}:
            self._it.set_state(state["iterator"])
            self.tokens = int(state["tokens"])
        else:   # checkpoints of older versions: the iterator's state alone
            self._it.set_state(state)


def finetune(model: Decoder, batches: Iterator[dict], cfg: FinetuneConfig, num_steps: int, *,
             mesh: Mesh | None = None, **kw) -> FinetuneResult:
    """Fine-tunes `model` (modified in place: adapters, dtype, sharding) for `num_steps` steps:
    `prepare` then `finetune_split` (whose keyword arguments `kw` are)."""
    split, params = prepare(model, cfg, mesh)
    return finetune_split(split, params, batches, cfg, num_steps, mesh=mesh, **kw)


def finetune_split(split: Split, params, batches: Iterator[dict], cfg: FinetuneConfig, num_steps: int, *, ctx=None,
                   mesh: Mesh | None = None, hooks: Sequence[Hook] = (), checkpoint_every: int | None = None,
                   checkpoint_dir=None, resume: bool | None = None, chunk_size: int = 10, log_every: int = 1,
                   pad_length: int | None = None, desc: str | None = None) -> FinetuneResult:
    """Trains the `params` of a prepared model for `num_steps` steps on the shared `fit` loop.

    `batches` yields host batches (dicts of [B, ...] numpy arrays); for an exact resume it needs
    `get_state()/set_state()` (saved in every checkpoint). `fit` stacks the `chunk_size` batches
    of a segment, so their shapes must agree: give `pad_length` (every batch right-padded to it;
    padding is masked, the loss is unchanged) or `chunk_size=1` (one compile per length).
    Checkpoints (params, optimizer state, step, key, iterator state) go to `ctx.checkpoint_dir`
    or `checkpoint_dir`; with `resume` (default: `ctx.resume`) the latest one is restored and
    training continues to a bit-identical end. Hooks see `state.params` (the trainable part).
    """
    if desc is None:   # progress bars and errors name the phase: the run folder (e.g. pretrain_proxy, an arm)
        desc = Path(ctx.dir).name if ctx is not None else "finetune"
    optimizer = cfg.optimizer(num_steps)
    if optimizer.grad_mode != "mean":
        raise ValueError(f"fine-tuning needs grad_mode 'mean', got {optimizer.grad_mode!r}")
    state = init_finetune_state(params, optimizer, cfg.seed)
    if mesh is not None:   # leaves off the mesh (step, key, optimizer counts) replicated on it, as a restore puts them
        replicated, devices = NamedSharding(mesh, PartitionSpec()), set(mesh.devices.flat)
        on_mesh = lambda x: getattr(x, "sharding", None) is not None and x.sharding.device_set == devices  # noqa: E731
        state = jax.tree.map(lambda x: x if on_mesh(x) else jax.device_put(x, replicated), state)
    step = shared_finetune_step(split.graphdef, cfg)    # compiled once for every run length
    schedule = {k: np.int32(v) for k, v in cfg.schedule(num_steps).items()}
    counting = HostBatches(batches, pad_length, fixed_shape=chunk_size > 1)
    t0 = time.perf_counter()
    result = fit(step, state, num_steps, ctx=ctx, hooks=hooks, batches=counting,
                 step_args=(split.frozen, schedule),
                 chunk_size=chunk_size, checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir,
                 resume=resume, log_every=log_every, desc=desc, donate_state=True,
                 prepare_batches=stacked_batch_put(mesh))
    jax.block_until_ready(result.state.params)
    tokens = counting.tokens
    if jax.process_count() > 1:   # each process counted the rows it fed: the run's tokens are their sum
        from jax.experimental import multihost_utils  # noqa: PLC0415
        tokens = int(np.sum(multihost_utils.process_allgather(np.int64(tokens))))
    return FinetuneResult(split, result, tokens, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- multi-host


def steps_for_epochs(num_examples: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps for `epochs` passes over `num_examples` at `batch_size` (at least 1)."""
    return max(1, math.ceil(epochs * num_examples / batch_size))
