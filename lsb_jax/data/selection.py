"""Uniform subsets: greedy farthest-point (k-center) selection and the minimum pairwise distance h_min.

A set S is "uniform" when its points are spread out: its minimum pairwise distance
    h_min(S) = min_{i != j in S} ||s_i - s_j||
is large (seed 003: a larger h_min speeds up gradient descent). Choosing the k-subset with the
largest h_min (max-min dispersion) is NP-hard; the greedy farthest-point rule (Gonzalez 1985)
    s_1 = start,   s_{j+1} = argmax_i min_{l <= j} ||x_i - s_l||
is a 2-approximation of it: let r_j = min_{l < j} ||s_j - s_l|| be the distance at which pick j
was added. The r_j are non-increasing, so h_min(first j picks) = r_j; when pick j is made every
point is within r_j of the j-1 earlier picks, so any j-subset O has two points within r_j of the
same earlier pick (pigeonhole), i.e. h_min(O) <= 2 r_j. Hence OPT/2 <= h_min(greedy) <= OPT,
from any start. The same picks are Gonzalez's 2-approximation of k-center (minimize the cover
radius max_i min_l ||x_i - s_l||).

Scale: one pick costs one pass over the N x D points (a matrix-vector product against the new
center, ||x||^2 - 2 x.c + ||c||^2, whose only temporaries are [N]: chunking the rows only
slowed it down on CPU, measured) and O(N) state (distance to the nearest pick and its id); never
an N x N matrix. Pairwise quantities (h_min, nearest neighbours, the picks' insertion distances)
are computed in row blocks of [block, N]. All k picks run as one `lax.fori_loop` in one
compiled program. The expansion loses accuracy far from the origin (absolute error ~ eps
||x||^2), so the points are centred first (distances do not change under a shift; features
such as hidden states often share a large mean), and reported distances (`radius_K`,
`nearest_neighbor`) are recomputed exactly as ||a - b|| of the given rows for the chosen pairs.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class KCenter(NamedTuple):
    index_K: jax.Array       # [K] int32 picks in order
    radius_K: jax.Array      # [K] distance of pick j to picks < j (inf for j = 0); h_min(first j+1) = radius_K[j]
    assign_N: jax.Array      # [N] int32 position (in index_K) of each point's nearest pick
    cover_radius: jax.Array  # max_i min_j ||x_i - x_{index_j}||: the k-center objective

    @property
    def h_min(self) -> jax.Array:
        """Minimum pairwise distance of the selected set (inf for K = 1)."""
        return self.radius_K[-1]


def _pad_rows(x_NxD: jax.Array, chunk: int) -> tuple[jax.Array, int]:
    n = x_NxD.shape[0]
    pad = (-n) % chunk
    return (jnp.pad(x_NxD, ((0, pad), (0, 0))) if pad else x_NxD), n + pad


@functools.partial(jax.jit, static_argnames=("k",))
def _kcenter(x_NxD, start, k: int):
    n, _ = x_NxD.shape
    given_NxD, x_NxD = x_NxD, _centred(x_NxD)
    sq_N = jnp.sum(x_NxD * x_NxD, axis=1)

    def update(j, pick, dist_N, assign_N):
        # squared distances to the new pick: one matrix-vector product, temporaries [N] only
        c_D = x_NxD[pick]
        new_N = jnp.maximum(sq_N - 2.0 * (x_NxD @ c_D) + jnp.dot(c_D, c_D), 0.0)
        closer_N = new_N < dist_N
        # a pick's own distance is rounding (~eps ||x||^2), not 0: mark it -1 so that argmax never
        # picks it again (once only duplicates of picks remain, an unpicked duplicate at ~0 wins)
        return (jnp.where(closer_N, new_N, dist_N).at[pick].set(-1.0),
                jnp.where(closer_N, j, assign_N).at[pick].set(j))

    def body(j, carry):
        index_K, dist_N, assign_N = carry
        pick = jnp.argmax(dist_N).astype(jnp.int32)  # first maximum: ties go to the smallest index
        dist_N, assign_N = update(j, pick, dist_N, assign_N)
        return index_K.at[j].set(pick), dist_N, assign_N

    dist_N = jnp.full((n,), jnp.inf, x_NxD.dtype)
    dist_N, assign_N = update(0, start, dist_N, jnp.zeros((n,), jnp.int32))
    index_K = jnp.zeros((k,), jnp.int32).at[0].set(start)
    index_K, dist_N, assign_N = lax.fori_loop(1, k, body, (index_K, dist_N, assign_N))
    # the insertion distances, recomputed exactly (||a - b||) against all earlier picks
    radius_K = _prefix_nearest(given_NxD[index_K])
    return KCenter(index_K, radius_K, assign_N, jnp.sqrt(jnp.maximum(jnp.max(dist_N), 0.0)))   # picks: -1


def _centred(x_NxD: jax.Array) -> jax.Array:
    """x minus its column means: the same distances, and ||x||^2 - 2 x.c + ||c||^2 keeps its digits."""
    return x_NxD - jnp.mean(x_NxD, axis=0, keepdims=True)


def _prefix_nearest(s_KxD: jax.Array, block: int = 256) -> jax.Array:
    """[K] exact min_{l < j} ||s_j - s_l|| (inf for j = 0), rows in blocks (K x block temporaries)."""
    k = s_KxD.shape[0]
    block = min(block, k)
    c_KxD = _centred(s_KxD)
    sp_PxD, k_pad = _pad_rows(c_KxD, block)
    given_PxD, _ = _pad_rows(s_KxD, block)
    sq_K = jnp.sum(c_KxD * c_KxD, axis=1)

    def rows(start):
        a_BxD = lax.dynamic_slice_in_dim(sp_PxD, start, block)
        i_B = start + jnp.arange(block)
        d2_BxK = jnp.sum(a_BxD * a_BxD, 1)[:, None] + sq_K[None, :] - 2.0 * a_BxD @ c_KxD.T
        earlier_BxK = jnp.arange(k)[None, :] < i_B[:, None]
        nn_B = jnp.argmin(jnp.where(earlier_BxK, d2_BxK, jnp.inf), axis=1)
        exact_B = jnp.linalg.norm(lax.dynamic_slice_in_dim(given_PxD, start, block) - s_KxD[nn_B], axis=1)
        return jnp.where(i_B > 0, exact_B, jnp.inf)

    out = lax.map(rows, jnp.arange(0, k_pad, block))
    return out.reshape(-1)[:k]


def kcenter_greedy(x_NxD, k: int, *, start: int = 0) -> KCenter:
    """Greedy farthest-point selection of k of the N rows of x (one compiled program).

    start: index of the first pick (any start keeps the 2-approximation of max-min h_min).
    Ties are broken towards the smallest index. Returns `KCenter` (picks, their insertion
    distances = prefix h_min, each point's nearest pick, the cover radius).
    """
    x_NxD = jnp.asarray(x_NxD)
    n = x_NxD.shape[0]
    if x_NxD.ndim != 2 or n < 1:
        raise ValueError(f"x must be a non-empty [N, D] array, got shape {x_NxD.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}], got {k}")
    if not 0 <= start < n:
        raise ValueError(f"start must be in [0, N={n}), got {start}")
    return _kcenter(x_NxD, jnp.int32(start), k=int(k))


@functools.partial(jax.jit, static_argnames=("block",))
def _nearest(x_NxD, block: int):
    n = x_NxD.shape[0]
    c_NxD = _centred(x_NxD)
    cp_PxD, n_pad = _pad_rows(c_NxD, block)
    given_PxD, _ = _pad_rows(x_NxD, block)
    sq_N = jnp.sum(c_NxD * c_NxD, axis=1)
    idx_N = jnp.arange(n)

    def rows(start):
        a_BxD = lax.dynamic_slice_in_dim(cp_PxD, start, block)
        i_B = start + jnp.arange(block)
        d2_BxN = jnp.sum(a_BxD * a_BxD, 1)[:, None] + sq_N[None, :] - 2.0 * a_BxD @ c_NxD.T
        d2_BxN = jnp.where(idx_N[None, :] == i_B[:, None], jnp.inf, d2_BxN)
        nn_B = jnp.argmin(d2_BxN, axis=1).astype(jnp.int32)
        return nn_B, jnp.linalg.norm(lax.dynamic_slice_in_dim(given_PxD, start, block) - x_NxD[nn_B], axis=1)

    nn, dist = lax.map(rows, jnp.arange(0, n_pad, block))
    return nn.reshape(-1)[:n], dist.reshape(-1)[:n]


def nearest_neighbor(x_NxD, block: int = 1024) -> tuple[jax.Array, jax.Array]:
    """([N] index, [N] exact distance) of each row's nearest other row; blocks of [block, N]."""
    x_NxD = jnp.asarray(x_NxD)
    if x_NxD.ndim != 2 or x_NxD.shape[0] < 2:
        raise ValueError(f"x must be [N >= 2, D], got shape {x_NxD.shape}")
    return _nearest(x_NxD, block=int(min(block, x_NxD.shape[0])))


def min_pairwise_distance(x_NxD, block: int = 1024) -> jax.Array:
    """h_min = min_{i != j} ||x_i - x_j|| in O(N^2 D) time and O(block N) memory."""
    return jnp.min(nearest_neighbor(x_NxD, block)[1])


def features_in_batches(features: Callable, x, batch_size: int = 256) -> np.ndarray:
    """[N, F] rows `features(x[i:i+b])` stacked on the host (any callable: a jitted model's hidden
    states, a text encoder); x may be an array or a list (e.g. of strings)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    out = [np.asarray(features(x[i:i + batch_size])) for i in range(0, n, batch_size)]
    feats = np.concatenate(out, axis=0)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise ValueError(f"features must map [b, ...] to [b, F], got {feats.shape} for {n} inputs")
    return feats


def select_uniform(features: Callable, x, k: int, *, batch_size: int = 256, start: int = 0) -> KCenter:
    """k-center greedy on the feature vectors `features(x)` (e.g. a model's hidden states)."""
    return kcenter_greedy(features_in_batches(features, x, batch_size), k, start=start)
