"""LoRA adapters on a `Decoder`'s linear layers, selected by parameter type (`nnx.LoRAParam`).

    model = add_lora(load_pretrained(path), LoRAConfig(rank=8, alpha=16), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.LoRAParam)   # trains A and B only
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    save_pretrained(merge_lora(model), "out/")                               # plain HF checkpoint

Each targeted `Linear` (kernel W [*in, *out]) gets `lora.a` [*in, r] (random) and `lora.b`
[r, *out] (zeros, so the adapted model starts equal to the base) and computes
W x + (alpha / r) B A dropout(x). `nnx.LoRAParam` subclasses `nnx.Param`: select the base
weights alone with `nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))`. Adapter weights carry the
logical axes of the kernel plus "lora_rank" (replicate it when sharding).
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
from flax import nnx

from lsb_jax.models.lm.layers import Linear
from lsb_jax.models.lm.model import Decoder

# Module paths of every Linear: layers.{i}.attn.{q,k,v,o}, layers.{i}.mlp.{gate,up,down}, lm_head.
ATTENTION_QV = r".*\.attn\.(q|v)"
ALL_LINEAR = r"layers\..*"


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """`targets`: regular expression matched (fullmatch) against dotted module paths such as
    "layers.0.attn.q" or "layers.3.mlp.down"; `dropout` applies to the adapter input in
    training mode (`model.train()`), not in `model.eval()`."""

    rank: int = 8
    alpha: float = 16.0
    targets: str = ATTENTION_QV
    dropout: float = 0.0


class LoRA(nnx.Module):
    """The low-rank term (alpha / r) * (dropout(x) . A) . B of one `Linear` with kernel shape
    `in_shape + out_shape` and logical axes `axes`."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], axes: tuple, cfg: LoRAConfig,
                 *, dtype, rngs: nnx.Rngs):
        n_in, r = len(in_shape), cfg.rank
        std = 1.0 / math.sqrt(math.prod(in_shape))  # W's own scale; B = 0 keeps the sum unchanged
        a = std * jax.random.normal(rngs.params(), in_shape + (r,), jnp.float32)
        self.a = nnx.LoRAParam(a.astype(dtype), out_sharding=tuple(axes[:n_in]) + ("lora_rank",),
                               eager_sharding=False)
        self.b = nnx.LoRAParam(jnp.zeros((r,) + out_shape, dtype),
                               out_sharding=("lora_rank",) + tuple(axes[n_in:]), eager_sharding=False)
        self.scale = cfg.alpha / r
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs) if cfg.dropout > 0 else None

    def delta(self) -> jax.Array:
        """(alpha / r) A B, shaped like the kernel [*in, *out] (fp32)."""
        a, b = self.a[...].astype(jnp.float32), self.b[...].astype(jnp.float32)
        return self.scale * jnp.tensordot(a, b, axes=1)

    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = self.a[...].ndim - 1
        if self.dropout is not None:
            x = self.dropout(x)
        z = jnp.tensordot(x, self.a[...], axes=n_in)
        return (self.scale * jnp.tensordot(z, self.b[...], axes=1)).astype(x.dtype)


def _linears(model: Decoder):
    for path, node in nnx.iter_graph(model):
        if isinstance(node, Linear):
            yield ".".join(str(p) for p in path), node


def add_lora(model: Decoder, cfg: LoRAConfig, *, rngs: nnx.Rngs) -> Decoder:
    """Attach adapters (in place) to every `Linear` whose dotted path fullmatches `cfg.targets`;
    returns the model. Raises `ValueError` if nothing matches or a layer already has one."""
    pattern = re.compile(cfg.targets)
    targets = [(p, lin) for p, lin in _linears(model) if pattern.fullmatch(p)]
    if not targets:
        raise ValueError(f"LoRA targets {cfg.targets!r} match no linear layer "
                         f"(paths look like {next(_linears(model))[0]!r})")
    for path, lin in targets:
        if lin.lora is not None:
            raise ValueError(f"{path} already has a LoRA adapter")
        kernel = lin.kernel
        x_spec, k_spec = lin.eqn.split("->")[0].split(",")
        n_in = sum(c in x_spec for c in k_spec)  # contracted (input) axes lead the kernel
        axes = kernel.get_metadata().get("out_sharding") or (None,) * kernel[...].ndim
        shape = kernel[...].shape
        lin.lora = LoRA(shape[:n_in], shape[n_in:], axes, cfg, dtype=kernel[...].dtype, rngs=rngs)
    return model


def lora_paths(model: Decoder) -> list[str]:
    """Dotted paths of the Linear layers that carry an adapter."""
    return [p for p, lin in _linears(model) if lin.lora is not None]


def merge_lora(model: Decoder) -> Decoder:
    """A copy of `model` with W + (alpha / r) A B folded into each adapted kernel and the
    adapters removed (a plain `Decoder`: export it with `save_pretrained`). Input unchanged."""
    merged = nnx.clone(model)
    for _, lin in _linears(merged):
        if lin.lora is not None:
            w = lin.kernel[...]
            lin.kernel[...] = (w.astype(jnp.float32) + lin.lora.delta()).astype(w.dtype)
            lin.lora = None
    return merged
