"""LoRA adapters on a `Decoder`'s linear layers, selected by parameter type (`nnx.LoRAParam`).

    model = add_lora(load_pretrained(path), LoRAConfig(rank=8, alpha=16), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.LoRAParam)   # trains A and B only
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    save_pretrained(merge_lora(model), "out/")                               # plain HF checkpoint
    save_peft_adapter(model, "adapter/", base_model="Qwen/Qwen3-0.6B")      # peft loads it onto the base

Each targeted `Linear` (kernel W [*in, *out]) gets `lora.a` [*in, r] (random) and `lora.b`
[r, *out] (zeros, so the adapted model starts equal to the base) and computes
W x + (alpha / r) B A dropout(x). `nnx.LoRAParam` subclasses `nnx.Param`: select the base
weights alone with `nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))`. Adapter weights carry the
logical axes of the kernel plus "lora_rank" (replicate it when sharding).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsb_jax.models.lm import names
from lsb_jax.models.lm.layers import Linear
from lsb_jax.models.lm.model import Decoder
from lsb_jax.train.hosts import to_host

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


def save_peft_adapter(model: Decoder, folder, *, base_model: str, revision: str | None = None, dropout: float = 0.0):
    """Write the model's adapters as a `peft` LoRA adapter (`adapter_config.json` +
    `adapter_model.safetensors`, fp32) that `PeftModel.from_pretrained(base, folder)` loads onto
    the Hugging Face model `base_model` (hub id or folder; `revision` a hub revision) with the same
    outputs as ours.

    Per adapted HF module: lora_A [r, in] = A^T, lora_B [out, r] = B^T (flattened in the HF
    weight's order, `names.to_hf`), scaling alpha / r as ours. GPT-NeoX's fused query_key_value
    carries the adapters of its adapted parts (q, k, v) as one adapter of rank m * r (A stacked,
    each part's B in its own rows and columns, so the product is exactly the parts' deltas; alpha
    m * alpha keeps the scaling), declared in `rank_pattern` / `alpha_pattern`. `target_modules`
    is a regex of the exact module names, so peft adapts exactly these."""
    from safetensors.numpy import save_file  # noqa: PLC0415

    adapters = {p: lin.lora for p, lin in _linears(model) if lin.lora is not None}
    if not adapters:
        raise ValueError("save_peft_adapter: the model has no LoRA adapters")
    first = next(iter(adapters.values()))
    r, scale = int(first.a[...].shape[-1]), float(first.scale)
    if any(int(x.a[...].shape[-1]) != r or float(x.scale) != scale for x in adapters.values()):
        raise ValueError("save_peft_adapter: adapters of different ranks or scales")
    cfg = model.cfg
    kernels = {f"{p}.kernel" for p, _ in _linears(model)}
    host = {p: (np.asarray(to_host(x.a[...]), np.float32), np.asarray(to_host(x.b[...]), np.float32))
            for p, x in adapters.items()}
    tensors, modules, rank_pattern, alpha_pattern = {}, [], {}, {}
    for hf, ours, kind in names.expand(cfg.family, cfg.num_layers, kernels):
        parts = [o[:-len(".kernel")] for o in ours]
        adapted = [p for p in parts if p in host]
        if not adapted:
            continue
        module = names.runtime_module(cfg.family, hf[:-len(".weight")])
        if kind == "qkv":     # GPT-NeoX: HF rows ordered [N, 3, H]; ours q, k, v kernels [D, N, H]
            _, b0 = host[adapted[0]]
            _, N, H = b0.shape
            m = len(adapted)
            a_mrxD = np.concatenate([host[p][0].T for p in adapted])
            b_Nx3xHxmr = np.zeros((N, 3, H, m * r), np.float32)
            for jj, p in enumerate(adapted):
                b_Nx3xHxmr[:, parts.index(p), :, jj * r:(jj + 1) * r] = host[p][1].transpose(1, 2, 0)
            a_hf, b_hf = a_mrxD, b_Nx3xHxmr.reshape(N * 3 * H, m * r)
            if m > 1:   # keyed without the first path part: peft < 0.14 matches keys as r".*\.{key}$"
                key = re.escape(module.split(".", 1)[-1])
                rank_pattern[key] = m * r
                alpha_pattern[key] = m * scale * r
        elif kind in ("linear", "linear_nh"):
            a, b = host[adapted[0]]
            a_hf, b_hf = a.reshape(-1, r).T, b.reshape(r, -1).T
        else:
            raise ValueError(f"save_peft_adapter: no adapter mapping for {hf} ({kind})")
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(a_hf)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(b_hf)
        modules.append(module)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_model),
              "revision": revision,
              "r": r, "lora_alpha": scale * r, "lora_dropout": float(dropout), "bias": "none",
              "target_modules": "(" + "|".join(re.escape(m) for m in modules) + ")",
              "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern, "fan_in_fan_out": False,
              "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True,
              "modules_to_save": None}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def linear_paths(cfg) -> list[str]:
    """Dotted paths of every `Linear` of a `Decoder` with `DecoderConfig` cfg (built abstractly: no
    weights), what `LoRAConfig.targets` is matched against: check a regex before loading a model."""
    return [p for p, _ in _linears(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))]
