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
    """x @ w whose weight gradient is a plain row-major product (the same product and derivatives).

    Differentiating x @ w gives g @ w^T and x^T @ g. XLA folds the transpose of x^T @ g into the
    dot's dimension numbers, and on CPU a batched dot that contracts the rows of both operands (a
    vmapped ensemble's weight gradients) falls off the fast matmul path. Here x^T is copied
    explicitly, behind an optimization barrier, so the weight gradient multiplies canonical layouts.
    (g @ w^T stays as it is: it is on the fast path, and copying w^T costs more than it saves.)
    The rule is a JVP, so forward mode (jvp, jacfwd, hessians) works too.
    """
    return x @ w


def _dense_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = x @ w
    out = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):    # the inputs' tangent (none for the data at layer 0)
        out = out + dx @ w
    if not isinstance(dw, SymbolicZero):    # a single example (x of rank 1) has no rows to transpose
        out = out + (_swap(jax.lax.optimization_barrier(_swap(x))) if x.ndim > 1 else x) @ dw
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
