"""Gradient transformations: gradient biasing, PCGrad, safe normalization, SAM, Muon.

Each is an `optax` transformation with explicit state. Hyperparameters documented as
"may be traced" can be jax arrays (e.g. under `jax.vmap` over hyperparameters).

Axis letters: G = groups (examples or tasks) stacked on the leading axis, P = parameters
of the flattened pytree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from lsb_jax.optim.partition import param_path

# ----------------------------------------------------------------------------- gradient bias


class GradientBiasState(NamedTuple):
    count: jax.Array  # int32 [], number of updates so far
    g_bias: optax.Updates  # the gradient stored at the last refresh step


def gradient_bias(gamma, every: int) -> optax.GradientTransformation:
    """Gradient biasing (seed 004, Fig. 2): u_t = g_t + gamma * g_bias.

    g_bias <- g_t at the steps t with t % every == 0 (t counts from 0), so a refresh step
    outputs (1 + gamma) g_t. `gamma` may be traced; `every` is static.
    """
    if every < 1:
        raise ValueError(f"gradient_bias: every must be >= 1, got {every}")

    def init_fn(params):
        return GradientBiasState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        refresh = state.count % every == 0
        g_bias = jax.tree.map(lambda g, b: jnp.where(refresh, g, b).astype(b.dtype), updates, state.g_bias)
        out = jax.tree.map(lambda g, b: (g + gamma * b).astype(g.dtype), updates, g_bias)
        return out, GradientBiasState(optax.safe_increment(state.count), g_bias)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- PCGrad


def pcgrad_project(g_GxP: jax.Array, order_GxG: jax.Array, conditional: bool = True) -> jax.Array:
    """PCGrad projection (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Alg. 1).

    For each i, starting from g_i' = g_i and for j in `order_GxG[i]` (a permutation of 0..G-1;
    the entry j = i is skipped):
        if (not conditional) or g_i'.g_j < 0:   g_i' <- g_i' - (g_i'.g_j / |g_j|^2) g_j
    always against the *original* g_j; a zero g_j is skipped. Returns g'_GxP.
    The unconditional variant is seed 004's formula. Cost O(G^2 P); vmap over i, scan over j.
    """
    sqnorm_G = jnp.sum(g_GxP * g_GxP, axis=-1)

    def project_one(i, gi_P, order_G):
        def body(gi_P, j):
            gj_P = g_GxP[j]
            dot = jnp.dot(gi_P, gj_P)
            nonzero = sqnorm_G[j] > 0
            active = (j != i) & nonzero
            if conditional:
                active = active & (dot < 0)
            coef = jnp.where(active, dot / jnp.where(nonzero, sqnorm_G[j], 1.0), 0.0)
            return gi_P - coef.astype(gi_P.dtype) * gj_P, None

        gi_P, _ = jax.lax.scan(body, gi_P, order_G)
        return gi_P

    return jax.vmap(project_one)(jnp.arange(g_GxP.shape[0]), g_GxP, order_GxG)


class PCGradState(NamedTuple):
    key: jax.Array  # uint32 [2], raw PRNG key
    count: jax.Array  # int32 [], number of updates so far


def pcgrad(conditional: bool = True, shuffle: bool = True, seed=0,
           reduce: str = "mean") -> optax.GradientTransformation:
    """PCGrad over per-group gradients: every update leaf has a leading axis [G].

    Each group's gradient is flattened to g_GxP, projected with `pcgrad_project` (orders:
    independent random permutations per i, drawn from fold_in(key, step), when `shuffle`;
    index order otherwise), then reduced: mean (or sum) over i of g_i'. The output has the
    parameter tree's shapes (no leading axis). `seed` may be traced.
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"pcgrad: reduce must be 'mean' or 'sum', got {reduce!r}")

    def init_fn(params):
        del params
        return PCGradState(jax.random.PRNGKey(jnp.asarray(seed).astype(jnp.int32)), jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], updates))
        g_GxP = jax.vmap(lambda tree: ravel_pytree(tree)[0])(updates)
        num_groups = g_GxP.shape[0]
        if shuffle:
            keys = jax.random.split(jax.random.fold_in(state.key, state.count), num_groups)
            order_GxG = jax.vmap(lambda k: jax.random.permutation(k, num_groups))(keys)
        else:
            order_GxG = jnp.tile(jnp.arange(num_groups), (num_groups, 1))
        projected_GxP = pcgrad_project(g_GxP, order_GxG, conditional)
        out_P = projected_GxP.mean(0) if reduce == "mean" else projected_GxP.sum(0)
        return unravel(out_P), PCGradState(state.key, optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def reduce_leading_axis(reduce: str = "mean") -> optax.GradientTransformation:
    """u = mean_i g_i (or sum): collapses the leading [G] axis of per-group gradients. Stateless."""
    op = jnp.mean if reduce == "mean" else jnp.sum

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: op(g, axis=0), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# ----------------------------------------------------------------------------- normalize, SAM


SAM_NORMS = ("global", "per_head")


def _per_head_norm(updates) -> jax.Array:
    """[H] L2 norms of the slices g[h] taken together over every leaf (all leaves share axis 0 = H)."""
    leaves = jax.tree.leaves(updates)
    heads = {x.shape[0] if x.ndim else None for x in leaves}
    if len(heads) != 1 or None in heads:
        raise ValueError(f"normalize(per_head): every leaf needs the same leading (head) axis, got sizes {heads}")
    return jnp.sqrt(sum(jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1) for x in leaves))


def normalize(eps: float = 1e-12, norm: str = "global") -> optax.GradientTransformation:
    """u = g / (|g| + eps); 0 at g = 0.

    norm="global": |g| the L2 norm over all leaves (what SAM does). norm="per_head": every leaf has
    the same leading axis H and head h is normalized by the norm of (g_leaf[h] for every leaf)
    (e.g. the MLSA model's (v_h, k_h, q_h), the per-feature picture of its reduced ODEs).
    (`optax.contrib.normalize` divides by |g| and returns NaN at a zero gradient.)
    """
    if norm not in SAM_NORMS:
        raise ValueError(f"normalize: norm must be one of {SAM_NORMS}, got {norm!r}")

    def update_fn(updates, state, params=None):
        del params
        if norm == "global":
            g_norm = optax.tree.norm(updates)
            return jax.tree.map(lambda g: (g / (g_norm + eps)).astype(g.dtype), updates), state
        inv_H = 1.0 / (_per_head_norm(updates) + eps)
        return jax.tree.map(lambda g: (g * inv_H.reshape((-1,) + (1,) * (g.ndim - 1))).astype(g.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def sam(
    base: optax.GradientTransformation,
    rho,
    adv_eps: float = 1e-12,
    *,
    adv_pre: optax.GradientTransformation | None = None,
    norm: str = "global",
) -> optax.GradientTransformationExtraArgs:
    """Sharpness-aware minimization (Foret et al. 2021, arXiv:2010.01412), one ascent step.

        e = rho * g / (|g| + adv_eps),   g = grad L(w)     (the incoming gradient)
        u = base(grad L(w + e))                           (grad_fn(w + e, 0))

    |g| is the global norm, or with norm="per_head" the norm of each head's slice of every leaf
    (`normalize`): each head then moves rho along its own gradient direction.

    Built on `optax.contrib.sam(base, chain(normalize, sgd(rho)), sync_period=2,
    opaque_mode=True)`: sgd(rho) gives -e and optax.contrib.sam negates it, so w + e is an
    ascent step. `update` must get `grad_fn=`; it is called once. `rho` may be traced.
    `adv_pre` (optional) is applied to g before normalizing, e.g. reducing per-example
    gradients or zeroing frozen leaves; its state is reset every step.
    """
    adv = [normalize(adv_eps, norm), optax.sgd(rho)]
    if adv_pre is not None:
        adv.insert(0, adv_pre)
    return optax.contrib.sam(base, optax.chain(*adv), sync_period=2, opaque_mode=True)


# ----------------------------------------------------------------------------- Muon


def muon_input_axes(name: str, ndim: int, in_axes: Mapping[str, int]) -> int | None:
    """Leading input (reduction) axes of a leaf for Muon, or None when it is not a Muon matrix.

    A 2-D leaf is (fan_in, fan_out). A leaf of more dims is a matrix only if a regex of `in_axes`
    matches its path: its first n axes are the input, the rest the output (e.g. an attention
    kernel [D, N, H] has n = 1 and is the D x (N H) matrix; the output projection [N, H, D] has
    n = 2). The first matching regex wins.
    """
    for pattern, n in in_axes.items():
        if re.search(pattern, name):
            return n if 1 <= n < ndim else None
    return 1 if ndim == 2 else None


def _dims(params, in_axes: Mapping[str, int]):
    """Per-leaf `MuonDimensionNumbers` (masked leaves of `optax.partition` get a dummy)."""

    def one(path, x):
        n = muon_input_axes(param_path(path), getattr(x, "ndim", 0), in_axes) or 1
        ndim = max(getattr(x, "ndim", 2), 2)
        return optax.contrib.MuonDimensionNumbers(tuple(range(n)), tuple(range(n, ndim)))

    return jax.tree_util.tree_map_with_path(one, params)


def _scale_by_width(in_axes: Mapping[str, int], consistent_rms=None) -> optax.GradientTransformation:
    """u <- sqrt(max(1, fan_out / fan_in)) u, fan_in / fan_out the products of the input / output
    axes (Jordan's Muon scaling), or with `consistent_rms` r: u <- r sqrt(max(fan_in, fan_out)) u
    (Liu et al. 2025, arXiv 2502.16982: an orthogonalized update has RMS 1 / sqrt(max(fan_in,
    fan_out)), so every matrix's update gets RMS r, about AdamW's, and Muon reuses AdamW's lr)."""

    def update_fn(updates, state, params=None):
        del params

        def one(path, u):
            n = muon_input_axes(param_path(path), u.ndim, in_axes) or 1
            fan_in, fan_out = math.prod(u.shape[:n]), math.prod(u.shape[n:])
            if consistent_rms is not None:
                return u * (consistent_rms * max(fan_in, fan_out) ** 0.5)
            return u * max(1.0, fan_out / fan_in) ** 0.5

        return jax.tree_util.tree_map_with_path(one, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def muon_labels(params, exclude: Sequence[str], in_axes: Mapping[str, int] = {}):  # noqa: B006 (read-only)
    """'muon' for matrices (`muon_input_axes`) whose path matches no regex in `exclude`, else 'adam'."""
    exclude = tuple(exclude)

    def label(path, x):
        name = param_path(path)
        matrix = muon_input_axes(name, x.ndim, in_axes) is not None
        return "muon" if matrix and not any(re.search(p, name) for p in exclude) else "adam"

    return jax.tree_util.tree_map_with_path(label, params)


def muon(
    learning_rate,
    *,
    beta=0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
    weight_decay=0.0,
    adam_b1=0.9,
    adam_b2=0.999,
    adam_eps=1e-8,
    adam_weight_decay=0.0,
    exclude: Sequence[str] = (r"embed", r"lm_head", r"head"),
    in_axes: Mapping[str, int] | None = None,
    consistent_rms=None,
) -> optax.GradientTransformationExtraArgs:
    """Muon (Jordan et al. 2024) on weight matrices; AdamW on everything else.

    Matrix W (fan_in x fan_out) with gradient G, step t = 1, 2, ...:
        M <- beta M + (1 - beta) G
        M^ = beta M / (1 - beta^(t+1)) + (1 - beta) G / (1 - beta^t)   (nesterov; else M / (1 - beta^t))
        O  = NS5(M^)  (transpose if rows > cols, X <- X / (|X|_F + 1e-8), then 5 times
                        X <- a X + (b A + c A^2) X with A = X X^T, (a, b, c) = (3.4445, -4.7750, 2.0315))
        W <- W - lr (sqrt(max(1, fan_out / fan_in)) O + weight_decay W)
    (with `consistent_rms` r: r sqrt(max(fan_in, fan_out)) O instead, the update RMS matched to
    AdamW's so both parts share one lr, as Moonlight does; `optax.contrib.muon`'s option of the
    same name).
    The matrices are the 2-D leaves and the leaves of more dims named in `in_axes` (regex on the
    path -> number of leading input axes; the leaf is orthogonalized as the reshaped
    prod(input) x prod(output) matrix, see `muon_input_axes`). The momentum/Newton-Schulz part is
    `optax.contrib.scale_by_muon`. Other leaves and those whose path matches a regex in `exclude`
    (embeddings, read-out) get `optax.adamw(lr, adam_b1, adam_b2, adam_eps, adam_weight_decay)` --
    plain AdamW: `optax.contrib.muon` would instead use Nesterov AdamW there and share its NS eps
    with Adam's eps. `learning_rate` may be a schedule; all numeric arguments except `ns_steps`
    may be traced.
    """
    exclude, in_axes = tuple(exclude), dict(in_axes or {})
    muon_tx = optax.chain(
        optax.contrib.scale_by_muon(ns_steps=ns_steps, beta=beta, nesterov=nesterov,
                                    weight_dimension_numbers=lambda tree: _dims(tree, in_axes)),
        _scale_by_width(in_axes, consistent_rms),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    adam_tx = optax.adamw(learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps, weight_decay=adam_weight_decay)
    return optax.partition({"muon": muon_tx, "adam": adam_tx}, lambda tree: muon_labels(tree, exclude, in_axes))
