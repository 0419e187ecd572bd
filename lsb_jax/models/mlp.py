"""A plain multilayer perceptron as pure functions of a params pytree (cheap to vmap over seeds).

Layer l has kernel [D_in, D_out] (LeCun-normal init, variance 1/D_in) and bias [D_out];
`layers_<l>` names make parameters addressable by path (layer-wise LR, freezing).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "linear": lambda x: x,
}


def init_mlp(key: jax.Array, sizes: Sequence[int], scale: float = 1.0) -> dict:
    """sizes = (D_in, H_1, ..., D_out). Kernels ~ N(0, scale^2 / D_in), biases zero."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for l, (k, d_in, d_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        params[f"layers_{l}"] = {
            "kernel": scale * jax.random.normal(k, (d_in, d_out)) / jnp.sqrt(d_in),
            "bias": jnp.zeros((d_out,)),
        }
    return params


def _swap(a: jax.Array) -> jax.Array:
    return jnp.swapaxes(a, -1, -2)


@jax.custom_jvp
def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """x @ w whose reverse pass multiplies canonical layouts: the same product and derivatives.

    Differentiating x @ w gives g @ w^T and x^T @ g. XLA folds those transposes into the dots'
    dimension numbers, and on CPU a batched dot that contracts a transposed operand (a vmapped
    ensemble's backward pass) falls off the fast matmul path. Here the transposed copies are
    made explicitly, behind an optimization barrier, so both backward dots are plain row-major
    products. The rule is a JVP, so forward mode (jvp, jacfwd, hessians) works too.
    """
    return x @ w


def _dense_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = x @ w
    out = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):    # the inputs' tangent (none for the data at layer 0)
        out = out + dx @ _swap(jax.lax.optimization_barrier(_swap(w)))
    if not isinstance(dw, SymbolicZero):
        out = out + _swap(jax.lax.optimization_barrier(_swap(x))) @ dw
    return y, out


dense.defjvp(_dense_jvp, symbolic_zeros=True)


def mlp_apply(params: dict, x_BxD: jax.Array, activation: str = "tanh") -> jax.Array:
    """Forward pass; the last layer is linear. Returns [B, D_out]."""
    act = ACTIVATIONS[activation]
    n = len(params)
    h = x_BxD
    for l in range(n):
        layer = params[f"layers_{l}"]
        h = dense(h, layer["kernel"]) + layer["bias"]
        if l < n - 1:
            h = act(h)
    return h


def squared_error(activation: str) -> Callable:
    """loss_fn(params, batch) -> the per-example squared error [B] of the scalar-output MLP with
    `activation` on {"x", "y"} (the toy's and the uniformity experiment's training loss)."""
    def loss_fn(params, batch):
        return (mlp_apply(params, batch["x"], activation)[:, 0] - batch["y"]) ** 2
    return loss_fn
