"""Sparse parity (seed 004 Sec. 2.2, App. B.2, C.3): data, targets, data levers and a seeds-vmapped sweep.

Inputs live on the hypercube {-1, +1}^D (the seed writes {0, 1}^D, for which the product of bits is
an AND, not a parity; we use ±1 coordinates as Barak et al. 2022 do). Without loss of generality the
k relevant bits are the first k coordinates (the MLP's init is exchangeable across input units):

    chi_j(x)  = prod_{i < j} x_i                            (chi_k: the test function)
    S_eps(x)  = chi_k(x) + eps * sum_{j=1}^{k-1} chi_j(x)    (the staircase training target, Fig. 10)

MSE loss (f(x) - y)^2; chance level is MSE 1 (predict 0) and accuracy 1/2; accuracy is
mean[sign f(x) = chi_k(x)] on a fixed test set drawn uniformly from the hypercube.

Points are generated from random bits, never stored: x = 2 * bits(u) - 1 for one uint32 u per
example (D <= 32), so a batch costs one PRNG draw and a shift. Draws are counter-based
(`lsb_jax.data.bits`: JAX's own threefry numbers, hashed in one fused kernel). The training set D
of the paper (size N = steps x batch) is a *counter-based pool*: point i is element i of
jax.random.bits(pool_key, (N,)), a pure function of (member, i). As the points are i.i.d., "a
random fraction rho of D" is distributed exactly as "the first round(rho N) points", which is what
the levers use:

    online      fresh points every step: row `step` of jax.random.bits(data_key, (steps, B))
    subsample   rho: the pool [0, K), K = round(rho N), in epochs without replacement
                (`data.Epochs`), for the same number of steps, i.e. ~1/rho epochs (Fig. 4)
    zipf        the pool cut into N/B fixed batches; batch b drawn with p ∝ (rank + 1)^-alpha,
                ranks a fixed random order (`data.Zipf` over batches, Fig. 5 / Fig. 11)
    curriculum  rho_0 (subsample) until step `switch`, then the full pool in epochs

A `Lever` (sampler, rho, alpha, switch, eps) is static: it shapes the sampler's Python structure.
`batch_sampler(cfg, lever, batch_size)` reads cfg's `dim`, `k`, `steps` and `batch_size` (the
parity sweep config, `lsb_jax.sweeps.parity.ParityConfig`); the sweep is `lsb_jax.sweeps.parity`.

Axis letters: B batch, D input dim, K staircase levels, M vmapped members, T evaluation rows.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.data import Epochs, Zipf
from lsb_jax.data.bits import stream_bits, stream_row
from lsb_jax.models.mlp import mlp_apply

SAMPLERS = ("online", "subsample", "zipf", "curriculum")
_POOL_STREAM = 0x7001  # fold_in tag of the pool key inside the member's data key

# ----------------------------------------------------------------------------- data and targets


def bits_to_signs(bits_B: jax.Array, dim: int) -> jax.Array:
    """[B] uint32 -> [B, D] float32 in {-1, +1}: x_bi = +1 if bit i of u_b is set, else -1."""
    if not 1 <= dim <= 32:
        raise ValueError(f"parity: dim must be in [1, 32] (one uint32 of bits per point), got {dim}")
    shift_D = jnp.arange(dim, dtype=jnp.uint32)
    set_BxD = (bits_B[:, None] >> shift_D) & jnp.uint32(1)
    return set_BxD.astype(jnp.float32) * 2.0 - 1.0


def sample_signs(key: jax.Array, num: int, dim: int) -> jax.Array:
    """[num, D] i.i.d. uniform points of {-1, +1}^D (one uint32 draw per point)."""
    return bits_to_signs(jax.random.bits(key, (num,), jnp.uint32), dim)


def pool_key(data_key: jax.Array) -> jax.Array:
    """The member's pool key: pool point i is `pool_points(pool_key, i)`."""
    return jax.random.fold_in(data_key, _POOL_STREAM)


def pool_points(key: jax.Array, index_B: jax.Array, dim: int) -> jax.Array:
    """[B, D] points i of the counter-based pool: x_i = signs(jax.random.bits(key, (N,))[i])."""
    return bits_to_signs(stream_bits(key, index_B), dim)


def online_points(key: jax.Array, step, batch_size: int, dim: int) -> jax.Array:
    """[B, D] the fresh points of step `step`: signs of row `step` of jax.random.bits(key, (steps, B))."""
    return bits_to_signs(stream_row(key, step, batch_size), dim)


def parity(x_BxD: jax.Array, k: int) -> jax.Array:
    """chi_k(x) = prod_{i<k} x_i, [B]."""
    return jnp.prod(x_BxD[:, :k], axis=1)


def staircase(x_BxD: jax.Array, k: int, eps) -> jax.Array:
    """chi_k(x) + eps * sum_{j=1}^{k-1} chi_j(x), [B] (eps may be traced; eps = 0 is chi_k)."""
    chi_BxK = jnp.cumprod(x_BxD[:, :k], axis=1)  # chi_BxK[:, j-1] = chi_j
    return chi_BxK[:, k - 1] + eps * jnp.sum(chi_BxK[:, : k - 1], axis=1)


def mse_losses(params, batch, activation: str = "relu") -> jax.Array:
    """Per-example (f(x) - y)^2, [B]."""
    pred_B = mlp_apply(params, batch["x"], activation)[:, 0]
    return (pred_B - batch["y"]) ** 2


def evaluate(params, x_BxD: jax.Array, y_B: jax.Array, activation: str = "relu") -> dict:
    """Test metrics of one model: {"acc": mean[sign f = y], "mse": mean (f - y)^2} (sign 0 counts wrong)."""
    pred_B = mlp_apply(params, x_BxD, activation)[:, 0]
    return {"acc": jnp.mean(pred_B * y_B > 0), "mse": jnp.mean((pred_B - y_B) ** 2)}


# ----------------------------------------------------------------------------- levers


@dataclasses.dataclass(frozen=True)
class Lever:
    """How one arm draws its training points (static: it fixes the sampler's structure)."""

    sampler: str = "online"          # online | subsample | zipf | curriculum
    rho: float = 1.0                 # subsample fraction; curriculum: the first phase's fraction
    alpha: float = 0.0               # Zipf exponent over batches
    switch: int = 100                # curriculum: rho until this step, then the full pool
    eps: float = 0.0                 # staircase weight (0 = train on chi_k)

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite value >= 0, got {self.alpha}")
        if self.switch < 0:
            raise ValueError(f"switch must be >= 0, got {self.switch}")
        if not math.isfinite(self.eps):
            raise ValueError(f"eps must be finite, got {self.eps}")


def batch_sampler(cfg, arm: Lever, batch_size: int | None = None):
    """sample_batch(data_key, step) -> {"x": [B, D], "y": [B]} for the lever and its target
    (B = batch_size, default cfg.batch_size)."""
    b = batch_size or cfg.batch_size
    n = cfg.steps * b  # the pool D: steps x batch points (seed 004 App. B.2)
    dim, k, eps = cfg.dim, cfg.k, arm.eps

    def target(x_BxD):
        return parity(x_BxD, k) if eps == 0 else staircase(x_BxD, k, eps)

    if arm.sampler == "online":
        def sample(key, step):
            x_BxD = online_points(key, step, b, dim)
            return {"x": x_BxD, "y": target(x_BxD)}
        return sample

    if arm.sampler == "subsample":
        epochs = Epochs(np.ones(max(1, round(arm.rho * n)), np.int32))

        def index(key, step):
            return epochs.sample(key, step, b).index
    elif arm.sampler == "zipf":
        zipf = Zipf(cfg.steps, arm.alpha)  # over the steps-many fixed batches of the pool

        def index(key, step):
            batch_1 = zipf.sample(key, step, 1).index
            return batch_1[0] * b + jnp.arange(b, dtype=jnp.int32)
    else:  # curriculum: rho until `switch`, then the whole pool
        small, full = Epochs(np.ones(max(1, round(arm.rho * n)), np.int32)), Epochs(np.ones(n, np.int32))

        def index(key, step):
            return jnp.where(step < arm.switch, small.sample(key, step, b).index,
                             full.sample(jax.random.fold_in(key, 1), step - arm.switch, b).index)

    def sample(key, step):
        x_BxD = pool_points(pool_key(key), index(key, step), dim)
        return {"x": x_BxD, "y": target(x_BxD)}
    return sample


def test_set(cfg) -> tuple[jax.Array, jax.Array]:
    """The fixed test set: [T, D] uniform hypercube points and chi_k labels [T]."""
    x_TxD = sample_signs(jax.random.PRNGKey(cfg.data_seed), cfg.test_size, cfg.dim)
    return x_TxD, parity(x_TxD, cfg.k)


__all__ = ["SAMPLERS", "Lever", "batch_sampler", "bits_to_signs", "evaluate", "mse_losses", "online_points",
           "parity", "pool_key", "pool_points", "sample_signs", "staircase", "test_set"]
