"""Logical-axis sharding of a `Decoder` on a (data, fsdp, tensor) device mesh.

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    shardings = param_shardings(load_config(path), mesh)          # dotted path -> NamedSharding
    model = load_pretrained(path, shardings=shardings)             # each device reads its slice
    batch = shard_batch({"tokens": ..., "loss_mask": ...}, mesh)   # batch axis over data x fsdp
    loss_B = jax.jit(make_loss_fn(graphdef))(params, batch)        # XLA propagates the rest

Rules map each logical axis a weight carries (`LOGICAL_AXES`, plus "batch" for activations and
"lora_rank" for adapters) to a mesh axis, a tuple of mesh axes, or None (replicated). A mesh
axis that does not divide the dimension, or is already used by an earlier dimension of the same
array, is dropped for that array (that dimension is then replicated over it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lsb_jax.models.lm.config import DecoderConfig
from lsb_jax.models.lm.model import Decoder

MESH_AXES = ("data", "fsdp", "tensor")
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("lora_rank", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """A (data, fsdp, tensor) mesh as config fields (`--set mesh.fsdp=4`). data=0: the devices the
    other axes leave (the default: data parallel over every device of every process)."""

    data: int = 0
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        if self.data < 0 or self.fsdp < 1 or self.tensor < 1:
            raise ValueError(f"MeshConfig: data >= 0 (0: what the others leave), fsdp >= 1, tensor >= 1; got "
                             f"({self.data}, {self.fsdp}, {self.tensor})")

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        """(data, fsdp, tensor) over `num_devices`, or a `ValueError` saying why it does not fit."""
        rest = self.fsdp * self.tensor
        data = self.data or num_devices // rest
        if data * rest != num_devices:
            raise ValueError(f"mesh data={self.data or 'auto'} x fsdp={self.fsdp} x tensor={self.tensor} does not "
                             f"fit the {num_devices} devices of this run (jax.device_count())")
        return data, self.fsdp, self.tensor

    def make(self) -> Mesh | None:
        """The mesh over every device (None on a single device: the plain single-device program)."""
        n = jax.device_count()
        shape = self.shape(n)
        return None if n == 1 else make_mesh(*shape)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types (XLA propagates shardings)."""
    return jax.make_mesh((data, fsdp, tensor), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                         devices=devices)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> PartitionSpec:
    """PartitionSpec of an array with logical `axes` under `rules` (see the module docstring)."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        target = table.get(name) if name is not None else None
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        kept = []
        for axis in targets:
            n = mesh.shape[axis]
            if axis in used or size % (n * int(np.prod([mesh.shape[a] for a in kept]))):
                continue
            kept.append(axis)
        used.update(kept)
        spec.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return PartitionSpec(*spec)


def param_shardings(model_or_cfg: Decoder | DecoderConfig, mesh: Mesh,
                    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES, *, dtype=jnp.float32
                    ) -> dict[str, NamedSharding]:
    """`NamedSharding` of every parameter (dotted path, e.g. "layers.0.attn.q.kernel") of a model
    or of the `Decoder` a config describes (built abstractly); pass to `load_pretrained`."""
    model = model_or_cfg
    if isinstance(model_or_cfg, DecoderConfig):
        model = nnx.eval_shape(lambda: Decoder(model_or_cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        shape = var.get_value().shape
        axes = var.get_metadata().get("out_sharding") or (None,) * len(shape)
        out[".".join(map(str, path))] = NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))
    return out


def shard_model(model: Decoder, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Decoder:
    """Move every parameter of `model` onto its sharding (in place); returns the model."""
    shardings = param_shardings(model, mesh, rules)
    state = nnx.state(model, nnx.Param)
    flat = [(p, v.replace(jax.device_put(v.get_value(), shardings[".".join(map(str, p))])))
            for p, v in nnx.to_flat_state(state)]
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def batch_sharding(mesh: Mesh, ndim: int = 2, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                   batch_size: int | None = None) -> NamedSharding:
    """Sharding of a [B, ...] array: the batch axis by the "batch" rule, the rest replicated."""
    size = batch_size if batch_size is not None else int(np.prod(mesh.devices.shape))
    spec = logical_to_spec(("batch",) + (None,) * (ndim - 1), (size,) + (1,) * (ndim - 1), mesh, rules)
    return NamedSharding(mesh, spec)


def shard_batch(batch: dict, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> dict:
    """`device_put` every [B, ...] array of a batch with its batch axis over the batch rule."""
    return {k: jax.device_put(v, batch_sharding(mesh, np.ndim(v), rules, np.shape(v)[0]))
            for k, v in batch.items()}
