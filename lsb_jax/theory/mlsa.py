"""Multi-head linear self-attention (MLSA) with rank-one key/query per head, for in-context
linear regression (the model of arXiv 2602.00576, after Zhang, Singh, Latham & Saxe 2025).

Data. A sequence has context pairs (x_n, y_n), n = 1..N, and a query x_q, with
x ~ N(0, Sigma), y = w.x + eps, eps ~ N(0, sigma^2), and a task vector w ~ N(0, Omega) per
sequence. We work in Sigma's eigenbasis (the model is invariant under rotating inputs, keys and
queries together), so Sigma = diag(lam) and Omega = diag(omega) (Omega = I is the standard task
prior; other omegas are the *data lever*: they reweight which directions the tasks load on).

Model. Tokens z_n = (x_n, y_n) in R^{D+1}, query token z_q = (x_q, 0). Head h has a value,
key and query vector in R^{D+1}; the prediction is

    y_hat = sum_h (1/N) sum_n (v_h . z_n)(k_h . z_n)(q_h . z_q)          (`token_predict`)

By the symmetry w -> -w of the task prior, the subspace where every value reads the label
(v_h = (0, v_h)) and keys/queries read the inputs (k_h = (k_h, 0), q_h = (q_h, 0)) is invariant
under gradient flow of the population loss (the gradient's other components are odd in w and
average to zero; `tests/theory_mlsa_test.py` checks it exactly with antithetic tasks). On it

    y_hat = x_q^T M c,   M = sum_h v_h q_h k_h^T  (D x D, rank <= H),   c = (1/N) sum_n x_n y_n

and the population loss has the closed form (derived with Isserlis' theorem, checked by Monte
Carlo in the tests)

    L(M) = tr(Sigma M S M^T) - 2 tr(Sigma M Sigma Omega) + tr(Sigma Omega) + sigma^2,
    S    = E[c c^T] = (1 + 1/N) Sigma Omega Sigma + (tr(Omega Sigma) + sigma^2) Sigma / N.

Its minimizer over all M is M* = Omega Sigma S^-1 (diagonal: m*_i = omega_i lam_i / s_i, which is
1/lam_i for N -> infinity). "Feature i" is the eigen-direction e_i; its learned amount is
m_i = M_ii and the model has learned it when m_i reaches a fraction of m*_i.

Parameters are a dict {"v": [H], "k": [H, D], "q": [H, D]} (the invariant subspace);
`embed_tokens` maps them to the full token model {"v","k","q": [H, D+1]}.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Spectrum(NamedTuple):
    """The data distribution as arrays (so it can be vmapped or traced).

    lam: [D] input covariance eigenvalues; omega: [D] task-prior variances per direction;
    inv_n: 1/N (0 for infinite context); noise: label noise variance sigma^2.
    """
    lam: jax.Array
    omega: jax.Array
    inv_n: jax.Array
    noise: jax.Array


def spectrum(lam, omega=None, context: int | None = None, noise: float = 0.0) -> Spectrum:
    lam = jnp.asarray(lam, jnp.float32)
    omega = jnp.ones_like(lam) if omega is None else jnp.asarray(omega, jnp.float32)
    if lam.ndim != 1 or omega.shape != lam.shape:
        raise ValueError(f"lam and omega must be [D] vectors of one length, got {lam.shape} and {omega.shape}")
    if context is not None and context < 1:
        raise ValueError(f"context must be >= 1 or None (infinite), got {context}")
    inv_n = 0.0 if context is None else 1.0 / context
    return Spectrum(lam, omega, jnp.float32(inv_n), jnp.float32(noise))


def power_spectrum(dim: int, decay: float, top: float = 1.0) -> np.ndarray:
    """lam_i = top * i^-decay, i = 1..dim (decreasing)."""
    return top * np.arange(1, dim + 1, dtype=np.float64) ** -float(decay)


def reweighted_omega(lam, gamma: float) -> np.ndarray:
    """The data lever: task variances omega_i proportional to lam_i^-gamma, mean 1.

    gamma = 0 is the standard prior; gamma > 0 upsamples tasks that load on small-eigenvalue
    (late-learned) directions, keeping E||w||^2 = D.
    """
    lam = np.asarray(lam, np.float64)
    om = lam ** -float(gamma)
    return om * len(om) / om.sum()


# --- the model ------------------------------------------------------------------------------


def combine(params) -> jax.Array:
    """M = sum_h v_h q_h k_h^T  -> [D, D] (row index: query side, column: key side).

    Written as a broadcast product and a sum, not an einsum: D and H are small, and XLA:CPU lowers
    such einsums to tiny matrix products whose per-call overhead dominates a step (a simulated
    trajectory runs many times faster this way; `benchmarks/theory_scan.py` measures it)."""
    return jnp.sum(params["v"][:, None, None] * params["q"][:, :, None] * params["k"][:, None, :], axis=0)


def features(params) -> jax.Array:
    """m_i = M_ii, the learned amount of each eigen-direction -> [D]."""
    return jnp.sum(params["v"][:, None] * params["q"] * params["k"], axis=0)


def second_moment(spec: Spectrum) -> jax.Array:
    """diag(S) = diag(E[c c^T]) -> [D]."""
    lam, om = spec.lam, spec.omega
    return (1.0 + spec.inv_n) * lam ** 2 * om + (jnp.sum(lam * om) + spec.noise) * lam * spec.inv_n


def optimal_features(spec: Spectrum) -> jax.Array:
    """m*_i = omega_i lam_i / s_i, the population minimizer's diagonal -> [D]."""
    return spec.omega * spec.lam / second_moment(spec)


def population_loss(params, spec: Spectrum) -> jax.Array:
    """The closed-form expected squared error of the query prediction (scalar)."""
    m_DxD = combine(params)
    s_D = second_moment(spec)
    quad = jnp.sum(spec.lam[:, None] * m_DxD * s_D[None, :] * m_DxD)  # elementwise: see `combine`
    lin = jnp.sum(spec.lam ** 2 * spec.omega * jnp.diagonal(m_DxD))
    return quad - 2.0 * lin + jnp.sum(spec.lam * spec.omega) + spec.noise


def null_loss(spec: Spectrum) -> jax.Array:
    """Loss of the zero predictor, tr(Sigma Omega) + sigma^2 (for normalized losses)."""
    return jnp.sum(spec.lam * spec.omega) + spec.noise


def min_loss(spec: Spectrum) -> jax.Array:
    """Loss of the best M (the floor the model can reach with H >= D heads)."""
    m_D = optimal_features(spec)
    return null_loss(spec) - jnp.sum(spec.lam ** 2 * spec.omega * m_D)


def predict(params, batch) -> jax.Array:
    """y_hat_B = x_q^T M c for a batch {"c": [B, D], "xq": [B, D]} of sufficient statistics."""
    return jnp.einsum("bi,ij,bj->b", batch["xq"], combine(params), batch["c"])


def example_loss(params, batch) -> jax.Array:
    """Per-example squared error [B] (the foundation's loss_fn seam)."""
    return (predict(params, batch) - batch["yq"]) ** 2


def token_predict(token_params, z_BxNxE, zq_BxE) -> jax.Array:
    """The full token-level MLSA prediction (E = D + 1): sum_h mean_n (v.z)(k.z) (q.z_q)."""
    vz_BxNxH = jnp.einsum("bne,he->bnh", z_BxNxE, token_params["v"])
    kz_BxNxH = jnp.einsum("bne,he->bnh", z_BxNxE, token_params["k"])
    qz_BxH = jnp.einsum("be,he->bh", zq_BxE, token_params["q"])
    return jnp.einsum("bnh,bnh,bh->b", vz_BxNxH, kz_BxNxH, qz_BxH) / z_BxNxE.shape[1]


def embed_tokens(params) -> dict:
    """Reduced params -> token-level params on the invariant subspace ([H, D+1] each)."""
    h, d = params["k"].shape
    zeros_H1 = jnp.zeros((h, 1), params["k"].dtype)
    return {"v": jnp.concatenate([jnp.zeros((h, d), params["v"].dtype), params["v"][:, None]], axis=1),
            "k": jnp.concatenate([params["k"], zeros_H1], axis=1),
            "q": jnp.concatenate([params["q"], zeros_H1], axis=1)}


# --- data (Monte Carlo) ---------------------------------------------------------------------


def sample_sequences(key, spec: Spectrum, num: int, context: int) -> dict:
    """`num` sequences of `context` pairs plus a query, in the eigenbasis.

    Returns {"x": [B, N, D], "y": [B, N], "xq": [B, D], "yq": [B], "w": [B, D], "c": [B, D]},
    c = (1/N) sum_n x_n y_n being all the reduced model needs of the context.
    """
    d = spec.lam.shape[0]
    kx, kq, kw, ke, keq = jax.random.split(key, 5)
    sd_D = jnp.sqrt(spec.lam)
    x_BxNxD = jax.random.normal(kx, (num, context, d)) * sd_D
    xq_BxD = jax.random.normal(kq, (num, d)) * sd_D
    w_BxD = jax.random.normal(kw, (num, d)) * jnp.sqrt(spec.omega)
    noise_sd = jnp.sqrt(spec.noise)
    y_BxN = jnp.einsum("bnd,bd->bn", x_BxNxD, w_BxD) + noise_sd * jax.random.normal(ke, (num, context))
    yq_B = jnp.einsum("bd,bd->b", xq_BxD, w_BxD) + noise_sd * jax.random.normal(keq, (num,))
    c_BxD = jnp.einsum("bnd,bn->bd", x_BxNxD, y_BxN) / context
    return {"x": x_BxNxD, "y": y_BxN, "xq": xq_BxD, "yq": yq_B, "w": w_BxD, "c": c_BxD}


def tokens(seqs: dict) -> tuple[jax.Array, jax.Array]:
    """(z [B, N, D+1], z_q [B, D+1]) of sampled sequences, for `token_predict`."""
    z = jnp.concatenate([seqs["x"], seqs["y"][..., None]], axis=-1)
    zq = jnp.concatenate([seqs["xq"], jnp.zeros_like(seqs["xq"][:, :1])], axis=-1)
    return z, zq


# --- initialization -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Init:
    """How heads start.

    kind "random": every entry of v, k, q ~ N(0, scale^2) (generic small initialization).
    kind "ansatz": head i (< D) aligned with e_i, v = k_i = q_i = scale (balanced), plus
    N(0, (noise * scale)^2) on every entry: the paper's ansatz, slightly off the manifold.
    """
    kind: str = "random"
    scale: float = 0.05
    noise: float = 0.0

    def __post_init__(self):
        if self.kind not in ("random", "ansatz"):
            raise ValueError(f"init kind must be 'random' or 'ansatz', got '{self.kind}'")
        if self.scale <= 0 or self.noise < 0:
            raise ValueError("init scale must be > 0 and noise >= 0")


def init_params(key, heads: int, dim: int, init: Init = Init()) -> dict:
    kv, kk, kq = jax.random.split(key, 3)
    if init.kind == "random":
        s = init.scale
        return {"v": s * jax.random.normal(kv, (heads,)), "k": s * jax.random.normal(kk, (heads, dim)),
                "q": s * jax.random.normal(kq, (heads, dim))}
    eye_HxD = jnp.eye(heads, dim)
    base = {"v": init.scale * jnp.ones((heads,)), "k": init.scale * eye_HxD, "q": init.scale * eye_HxD}
    if heads > dim:  # spare heads start at the noise level only
        base["v"] = base["v"].at[dim:].set(0.0)
    sd = init.noise * init.scale
    return {"v": base["v"] + sd * jax.random.normal(kv, (heads,)),
            "k": base["k"] + sd * jax.random.normal(kk, (heads, dim)),
            "q": base["q"] + sd * jax.random.normal(kq, (heads, dim))}


def pool_optimal_features(pool) -> np.ndarray:
    """m* of a finite weighted pool {"c","xq","yq","weight"} for a diagonal M (float64 numpy):
    weighted least squares of yq on the per-direction products xq_i c_i."""
    phi_PxD = np.asarray(pool["xq"], np.float64) * np.asarray(pool["c"], np.float64)
    sw_P = np.sqrt(np.asarray(pool["weight"], np.float64))
    sol, *_ = np.linalg.lstsq(phi_PxD * sw_P[:, None], np.asarray(pool["yq"], np.float64) * sw_P, rcond=None)
    return sol
