"""`OptimConfig` -> `Optimizer`: the base optimizer, schedule and optional interventions.

Chain (each stage only when enabled by the *static* config):

    [pcgrad] -> [gradient_bias] -> [clip] -> base(lr schedule) -> [layer_lr] -> [freeze], all in [sam]

Numeric fields can be replaced by traced arrays through `make_optimizer(cfg, T, **overrides)`
(e.g. `lr=hp["lr"], sam_rho=hp["rho"]` under `jax.vmap`); whether a stage is on is still
decided by the config (`cfg.sam_rho > 0`), its value comes from the override.

Weight decay: decoupled (`w <- w - lr (u + wd w)`) for adamw and muon; an L2 term added to the
gradient (g + wd w, PyTorch's `weight_decay`) for sgd, momentum and adam.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re

import jax.numpy as jnp
import optax

from lsb_jax.optim import partition, transforms

NAMES = ("sgd", "momentum", "adam", "adamw", "muon")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear_warmup")
# Fields a caller may replace by (possibly traced) values.
OVERRIDABLE = ("lr", "momentum", "b1", "b2", "eps", "weight_decay", "clip_norm", "sam_rho", "grad_bias_gamma",
               "pcgrad_seed", "warmup_steps")
# Stages switched on by a positive config value; an override cannot switch them on.
_GATES = {"sam_rho": "SAM", "grad_bias_gamma": "gradient biasing", "clip_norm": "clipping"}


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """What the train step needs: `tx.update(grads, state, params, grad_fn=grad_fn)`.

    grad_mode: "mean" (grads are the batch-mean gradient) or "per_example" (every leaf has a
      leading axis [B] that `tx` reduces, as PCGrad does).
    grad_evals_per_step: gradient evaluations per step (2 with SAM); for cost accounting.
    """

    tx: optax.GradientTransformationExtraArgs
    grad_mode: str = "mean"
    grad_evals_per_step: int = 1


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # sgd | momentum | adam | adamw | muon
    lr: float = 1e-3
    momentum: float = 0.9  # for "momentum" (muon uses beta = 0.95)
    b1: float = 0.9  # adam/adamw, and muon's AdamW part
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | warmup_cosine | linear_warmup
    warmup_steps: int = 0
    clip_norm: float = 0.0  # 0 disables global-norm clipping
    sam_rho: float = 0.0  # > 0 wraps the optimizer in SAM
    sam_norm: str = "global"  # SAM's ascent norm: global | per_head (leaves share a leading head axis)
    grad_bias_gamma: float = 0.0  # > 0 enables gradient biasing
    grad_bias_every: int = 100
    pcgrad: bool = False  # per-example PCGrad (sets grad_mode="per_example")
    pcgrad_conditional: bool = True
    layer_lr: dict[str, float] = dataclasses.field(default_factory=dict)  # regex on param path -> lr factor
    freeze: tuple[str, ...] = ()  # regexes of frozen parameters
    muon_exclude: tuple[str, ...] = ("embed", "head")
    muon_in_axes: dict[str, int] = dataclasses.field(default_factory=dict)  # regex -> leading input axes (>2-D)
    muon_consistent_rms: float = 0.0  # > 0: Muon updates scaled to this RMS (AdamW's lr works); 0: width scaling
    pcgrad_seed: int = 0  # PRNG seed of PCGrad's random projection orders

    def __post_init__(self):
        # checks that need no total_steps, so a bad `--set optim.x=...` fails before a run starts
        validate(self, math.inf, {})


def _check_regexes(field: str, patterns) -> None:
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"OptimConfig.{field}: invalid regex {p!r}: {e}") from None


def _check_value(field: str, value, lo: float, hi: float = math.inf, hi_open: bool = False) -> None:
    if not isinstance(value, numbers.Real):  # traced or array: cannot be checked here
        return
    bad = value < lo or value > hi or (hi_open and value >= hi) or math.isnan(value)
    if bad:
        interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise ValueError(f"OptimConfig.{field} must be in {interval}, got {value}")


def validate(cfg: OptimConfig, total_steps: int, overrides: dict) -> None:
    """Raises ValueError naming the field for any config or override the factory cannot honour."""
    if cfg.name not in NAMES:
        raise ValueError(f"OptimConfig.name: unknown optimizer {cfg.name!r}; expected one of {NAMES}")
    if cfg.sam_norm not in transforms.SAM_NORMS:
        raise ValueError(f"OptimConfig.sam_norm: unknown norm {cfg.sam_norm!r}; expected one of {transforms.SAM_NORMS}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"OptimConfig.schedule: unknown schedule {cfg.schedule!r}; expected one of {SCHEDULES}")
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"make_optimizer: cannot override {unknown}; overridable fields are {OVERRIDABLE}")
    for field, what in _GATES.items():
        if field in overrides and getattr(cfg, field) <= 0:
            raise ValueError(f"OptimConfig.{field}: override given but cfg.{field} = {getattr(cfg, field)} "
                             f"leaves {what} off; set cfg.{field} > 0 to enable it")
    if "weight_decay" in overrides and cfg.weight_decay <= 0 and cfg.name in ("sgd", "momentum", "adam"):
        raise ValueError(f"OptimConfig.weight_decay: override given but cfg.weight_decay = 0 leaves the L2 term of "
                         f"{cfg.name!r} off; set cfg.weight_decay > 0 to enable it")
    for field in ("lr", "weight_decay", "clip_norm", "sam_rho", "grad_bias_gamma", "eps"):
        _check_value(field, overrides.get(field, getattr(cfg, field)), 0.0)
    for field in ("momentum", "b1", "b2"):
        _check_value(field, overrides.get(field, getattr(cfg, field)), 0.0, 1.0, hi_open=True)
    if cfg.grad_bias_every < 1:
        raise ValueError(f"OptimConfig.grad_bias_every must be >= 1, got {cfg.grad_bias_every}")
    if cfg.warmup_steps < 0:
        raise ValueError(f"OptimConfig.warmup_steps must be >= 0, got {cfg.warmup_steps}")
    if cfg.warmup_steps > 0 and cfg.schedule in ("constant", "cosine"):
        raise ValueError(f"OptimConfig.warmup_steps={cfg.warmup_steps} has no effect with schedule={cfg.schedule!r}; "
                         "use 'warmup_cosine' or 'linear_warmup'")
    # traced step counts (one compiled step for runs of any length) cannot be checked here
    warmup = overrides.get("warmup_steps", cfg.warmup_steps)
    total_known, warmup_known = isinstance(total_steps, numbers.Real), isinstance(warmup, numbers.Real)
    if total_known and cfg.schedule in ("cosine", "warmup_cosine") and not total_steps > 0:
        raise ValueError(f"OptimConfig.schedule={cfg.schedule!r} needs total_steps > 0, got {total_steps}")
    if total_known and warmup_known and cfg.schedule == "warmup_cosine" and not warmup < total_steps:
        raise ValueError(f"OptimConfig.warmup_steps ({warmup}) must be < total_steps ({total_steps}) "
                         "for schedule='warmup_cosine'")
    if warmup_known and cfg.schedule == "linear_warmup" and warmup < 1:
        raise ValueError("OptimConfig.warmup_steps must be >= 1 for schedule='linear_warmup'")
    for pattern, factor in cfg.layer_lr.items():
        if isinstance(factor, numbers.Real) and factor < 0:
            raise ValueError(f"OptimConfig.layer_lr[{pattern!r}] must be >= 0, got {factor}")
    _check_regexes("layer_lr", cfg.layer_lr)
    _check_regexes("freeze", cfg.freeze)
    _check_regexes("muon_exclude", cfg.muon_exclude)
    _check_regexes("muon_in_axes", cfg.muon_in_axes)
    if cfg.muon_consistent_rms < 0:
        raise ValueError(f"OptimConfig.muon_consistent_rms must be >= 0, got {cfg.muon_consistent_rms}")
    for pattern, n in cfg.muon_in_axes.items():
        if not (isinstance(n, numbers.Integral) and n >= 1):
            raise ValueError(f"OptimConfig.muon_in_axes[{pattern!r}] must be an integer >= 1, got {n!r}")


def lr_schedule(cfg: OptimConfig, total_steps, lr, warmup_steps=None):
    """lr_t = lr * f(t), t = 0, 1, ... the update count; T = total_steps, W = warmup_steps
    (default `cfg.warmup_steps`).

    constant: f = 1; cosine: f = (1 + cos(pi min(t, T) / T)) / 2;
    warmup_cosine: f = t / W for t < W, then (1 + cos(pi min(t - W, T - W) / (T - W))) / 2;
    linear_warmup: f = min(1, t / W). The shape is static; `lr`, T and W may be traced, so one
    compiled train step serves runs of any length (`llm.finetune` passes them as step arguments).
    Computed in float32, as optax's schedules are.
    """
    if cfg.schedule == "constant":
        return lr
    warmup = cfg.warmup_steps if warmup_steps is None else warmup_steps

    def factor(count):
        t = jnp.asarray(count, jnp.float32)
        T, W = jnp.asarray(total_steps, jnp.float32), jnp.asarray(warmup, jnp.float32)
        # the max(., 1) guards only matter for traced lengths the config check could not see
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, T) / jnp.maximum(T, 1.0)))
        if cfg.schedule == "linear_warmup":
            return jnp.minimum(1.0, t / jnp.maximum(W, 1.0))
        decay = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(t - W, 0.0, T - W) / jnp.maximum(T - W, 1.0)))
        return jnp.where(t < W, t / jnp.maximum(W, 1.0), decay)

    return lambda count: lr * factor(count)


def _base(cfg: OptimConfig, hp: dict, lr) -> optax.GradientTransformation:
    l2 = [optax.add_decayed_weights(hp["weight_decay"])] if cfg.weight_decay > 0 else []
    if cfg.name == "sgd":
        return optax.chain(*l2, optax.sgd(lr))
    if cfg.name == "momentum":
        return optax.chain(*l2, optax.sgd(lr, momentum=hp["momentum"]))
    if cfg.name == "adam":
        return optax.chain(*l2, optax.adam(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]))
    if cfg.name == "adamw":
        return optax.adamw(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], weight_decay=hp["weight_decay"])
    return transforms.muon(lr, weight_decay=hp["weight_decay"], adam_b1=hp["b1"], adam_b2=hp["b2"], adam_eps=hp["eps"],
                           adam_weight_decay=hp["weight_decay"], exclude=cfg.muon_exclude,
                           in_axes=cfg.muon_in_axes, consistent_rms=cfg.muon_consistent_rms or None)


def make_optimizer(cfg: OptimConfig, total_steps: int, **overrides) -> Optimizer:
    """Builds the optimizer for `cfg`; `overrides` replace numeric fields (see `OVERRIDABLE`)."""
    validate(cfg, total_steps, overrides)
    hp = {f: overrides.get(f, getattr(cfg, f)) for f in OVERRIDABLE}
    stages = []
    if cfg.pcgrad:
        stages.append(transforms.pcgrad(conditional=cfg.pcgrad_conditional, shuffle=True, seed=hp["pcgrad_seed"]))
    if cfg.grad_bias_gamma > 0:
        stages.append(transforms.gradient_bias(hp["grad_bias_gamma"], cfg.grad_bias_every))
    if cfg.clip_norm > 0:
        stages.append(optax.clip_by_global_norm(hp["clip_norm"]))
    stages.append(_base(cfg, hp, lr_schedule(cfg, total_steps, hp["lr"], hp["warmup_steps"])))
    if cfg.layer_lr:
        stages.append(partition.scale_by_group(cfg.layer_lr))
    tx = optax.chain(*stages)
    if cfg.freeze:
        tx = partition.freeze(tx, cfg.freeze)
    if cfg.sam_rho > 0:
        adv_pre = transforms.reduce_leading_axis() if cfg.pcgrad else None
        if cfg.freeze:
            adv_pre = partition.freeze(adv_pre or optax.identity(), cfg.freeze)
        tx = transforms.sam(tx, hp["sam_rho"], adv_pre=adv_pre, norm=cfg.sam_norm)
    if cfg.freeze or cfg.layer_lr:   # every pattern must name some parameter (checked once the params are known)
        patterns = {"freeze": tuple(cfg.freeze), "layer_lr": tuple(cfg.layer_lr)}
        init = tx.init
        tx = tx._replace(init=lambda params: (partition.check_patterns_match(params, patterns), init(params))[1])
    return Optimizer(
        tx=optax.with_extra_args_support(tx),
        grad_mode="per_example" if cfg.pcgrad else "mean",
        grad_evals_per_step=2 if cfg.sam_rho > 0 else 1,
    )
