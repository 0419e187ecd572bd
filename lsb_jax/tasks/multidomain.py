"""Multi-domain linear regression: sampling weights p and loss weights w in closed form (seed 002).

Domains k = 1..K. In domain k, x ~ N(0, Sigma_k) (D-dim), y = <w*_k, x> + sigma_k eps. The
model is linear, theta in R^D, with per-example loss l = (x.theta - y)^2 / 2. A batch of B
examples draws each example's domain k_b ~ p (normalized sampling weights), the example within
the domain uniformly (finite pool) or fresh (online), and weighs it by the loss weight w_{k_b}:
the step's gradient is g_hat = (1/B) sum_b w_{k_b} g_b (the reduction of `lsb_jax.train.step`
with `Mixture(sizes, p, w)` draws).

Closed forms (derived here; every one is checked by simulation in tests/tasks_multidomain_test.py):

1. One example's gradient at theta, delta_k = theta - w*_k:  g = x x^T delta_k - sigma_k eps x, so
       E[w g]     = sum_k a_k Sigma_k delta_k = H theta - b,    a_k = p_k w_k,
                    H = sum_k a_k Sigma_k,  b = sum_k a_k Sigma_k w*_k,
       E[w^2 g g^T] = Q(theta) = sum_k p_k w_k^2 M_k(delta_k),
       M_k(delta) = 2 Sigma_k delta delta^T Sigma_k + (delta^T Sigma_k delta + sigma_k^2) Sigma_k
   (Gaussian fourth moment E[x x^T A x x^T] = 2 Sigma A Sigma + tr(A Sigma) Sigma). The minibatch
   gradient has mean H theta - b and covariance (Q - g_bar g_bar^T) / B.
   => the mean (and so the fixed point theta_inf = H^{-1} b, where SGD and the weighted
   empirical risk minimizer go) depends on p and w only through the product a = p * w, while
   the noise depends on p_k w_k^2 = a_k^2 / p_k separately. That is the complementary-roles
   mechanism: the product decides WHERE training goes (generalization), the split between
   p and w decides HOW NOISILY it gets there. For a fixed product, the gradient variance at
   theta_inf, (1/B) sum_k a_k^2 m_k / p_k with m_k = tr M_k(theta_inf - w*_k), is smallest
   for p_k ∝ a_k sqrt(m_k) (importance sampling), w_k = a_k / p_k: `optimal_split`.

2. Expected SGD risk, exactly (online data, B i.i.d. draws, step theta' = theta - lr g_hat): the
   moments mu = E theta, S = E theta theta^T follow the linear recursion
       mu' = mu - lr (H mu - b)
       S'  = S - lr (S H + H S - mu b^T - b mu^T)
             + lr^2 [(1 - 1/B)(H S H - H mu b^T - b mu^T H + b b^T) + (1/B) E Q]
       E Q = sum_k p_k w_k^2 [2 Sigma_k P_k Sigma_k + (tr(Sigma_k P_k) + sigma_k^2) Sigma_k],
       P_k = E[(theta - w*_k)(theta - w*_k)^T] = S - mu w*_k^T - w*_k mu^T + w*_k w*_k^T,
   and the expected risk on target domain weights q is sum_k q_k (tr(Sigma_k P_k) + sigma_k^2) / 2.

3. Weighted least squares on finite pools of n_k examples per domain: sampling with p and loss
   weights w make SGD minimize L_hat_a(theta) = sum_k (a_k / n_k) sum_{i in k} l_i, whose
   minimizer theta_hat has, to leading order in 1/n (delta method; u_k = w*_k - theta_inf):
       Cov(theta_hat) ~ C = H^{-1} J H^{-1},   J = sum_k (a_k^2 / n_k) V_k,
       V_k = Sigma_k u_k u_k^T Sigma_k + (u_k^T Sigma_k u_k + sigma_k^2) Sigma_k,
       E theta_hat - theta_inf ~ beta = -H^{-1} sum_k (a_k^2 / n_k)(Sigma_k H^{-1} Sigma_k
                                                                    + tr(H^{-1} Sigma_k) Sigma_k) u_k,
   so the expected target risk is R_q(theta_inf) + grad R_q(theta_inf).beta + tr(H_q C) / 2
   (H_q = sum_k q_k Sigma_k), and the generalization gap of the weighted objective is
       E[L_a(theta_hat) - L_hat_a(theta_hat)] ~ tr(H^{-1} J)     (Takeuchi's correction).
   With a shared teacher (u_k = 0) and Sigma_k = Sigma the variance part is minimized by
   inverse-variance weighting a_k ∝ n_k / sigma_k^2.

Arrays: K domains, D features; weights are [K] and need not be normalized (p is normalized
inside, w is used as given, as `Mixture` does). Everything is jnp and vmaps over weight vectors.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lsb_jax.data.samplers import Mixture


@dataclasses.dataclass(frozen=True, eq=False)
class MultiDomainTask:
    """K Gaussian linear-regression domains. cov_KxDxD: Sigma_k; w_star_KxD: teachers; noise_K: sigma_k."""

    cov_KxDxD: np.ndarray
    w_star_KxD: np.ndarray
    noise_K: np.ndarray

    def __post_init__(self):
        cov = np.asarray(self.cov_KxDxD, np.float64)
        w = np.asarray(self.w_star_KxD, np.float64)
        s = np.asarray(self.noise_K, np.float64)
        k, d = w.shape
        if cov.shape != (k, d, d) or s.shape != (k,):
            raise ValueError(f"shapes: cov {cov.shape}, w_star {w.shape}, noise {s.shape} (want [K,D,D], [K,D], [K])")
        if np.any(s < 0) or not np.allclose(cov, np.swapaxes(cov, 1, 2)):
            raise ValueError("noise must be >= 0 and covariances symmetric")
        object.__setattr__(self, "cov_KxDxD", cov)
        object.__setattr__(self, "w_star_KxD", w)
        object.__setattr__(self, "noise_K", s)
        object.__setattr__(self, "_chol_KxDxD", np.linalg.cholesky(cov + 1e-12 * np.eye(d)))

    @property
    def num_domains(self) -> int:
        return self.w_star_KxD.shape[0]

    @property
    def dim(self) -> int:
        return self.w_star_KxD.shape[1]

    def arrays(self):
        """(Sigma_KxDxD, w*_KxD, sigma_K) as float32 jnp arrays."""
        return (jnp.asarray(self.cov_KxDxD, jnp.float32), jnp.asarray(self.w_star_KxD, jnp.float32),
                jnp.asarray(self.noise_K, jnp.float32))

    # --- data ------------------------------------------------------------------------------
    def sample_examples(self, key, domain_B: jax.Array) -> dict:
        """Fresh examples for the given domains: {"x": [B, D], "y": [B], "domain": [B]}."""
        kx, ke = jax.random.split(key)
        domain_B = jnp.asarray(domain_B, jnp.int32)
        z_BxD = jax.random.normal(kx, (domain_B.shape[0], self.dim))
        chol_KxDxD = jnp.asarray(self._chol_KxDxD, jnp.float32)
        x_BxD = jnp.einsum("bij,bj->bi", chol_KxDxD[domain_B], z_BxD)
        _, w_KxD, s_K = self.arrays()
        y_B = jnp.sum(x_BxD * w_KxD[domain_B], axis=1) + s_K[domain_B] * jax.random.normal(ke, domain_B.shape)
        return {"x": x_BxD, "y": y_B, "domain": domain_B}

    def sample_pool(self, key, sizes_K: Sequence[int]) -> dict:
        """A finite pool with domains in consecutive index ranges (the layout `Mixture` samples)."""
        domain_N = jnp.asarray(np.repeat(np.arange(len(sizes_K)), sizes_K), jnp.int32)
        return self.sample_examples(key, domain_N)

    def online_batch(self, mixture: Mixture, key, step, batch_size: int) -> dict:
        """Fresh examples whose domains and loss weights come from `mixture` (one item per domain)."""
        draw = mixture.sample(key, step, batch_size)
        # a stream of its own: fold_in(fold_in(key, step), 1) would be the Mixture's item key
        batch = self.sample_examples(jax.random.fold_in(jax.random.fold_in(key, step), _EXAMPLES), draw.index)
        return {**batch, "loss_weight": draw.weight}


_EXAMPLES = 0x5EED_E7A1 & 0x7FFFFFFF   # the online examples' fold-in tag (not a sampler's 0, 1)


def make_task(seed: int, dim: int, noise: Sequence[float], scales: Sequence[float] = (),
              decay: float = 0.0, shift: Sequence[float] = (), rotate: bool = False) -> MultiDomainTask:
    """K = len(noise) domains: Sigma_k = scale_k R_k diag(i^-decay) R_k^T (R_k random orthogonal if
    rotate, else I), w*_k = w* + shift_k u_k with w* ~ N(0, I / sum_i lambda_i) (signal variance
    w*^T Sigma w* ~ scale_k) and u_k random unit vectors."""
    k = len(noise)
    scales = tuple(scales) or (1.0,) * k
    shift = tuple(shift) or (0.0,) * k
    if len(scales) != k or len(shift) != k:
        raise ValueError("noise, scales and shift need one entry per domain: "
                         f"{len(noise)}, {len(scales)}, {len(shift)}")
    rng = np.random.default_rng(seed)
    lam_D = np.arange(1, dim + 1, dtype=np.float64) ** (-decay)
    covs = []
    for s in scales:
        r = np.linalg.qr(rng.standard_normal((dim, dim)))[0] if rotate else np.eye(dim)
        covs.append(s * (r * lam_D) @ r.T)
    w_star = rng.standard_normal(dim) / np.sqrt(lam_D.sum())
    u_KxD = rng.standard_normal((k, dim))
    u_KxD /= np.linalg.norm(u_KxD, axis=1, keepdims=True)
    return MultiDomainTask(np.stack(covs), w_star[None] + np.asarray(shift)[:, None] * u_KxD,
                           np.asarray(noise, np.float64))


def loss_fn(params: dict, batch: dict) -> jax.Array:
    """Per-example (x.theta - y)^2 / 2 for params {"w": [D]} (the loss of the closed forms)."""
    return 0.5 * (batch["x"] @ params["w"] - batch["y"]) ** 2


# --- closed forms ----------------------------------------------------------------------------


def _normalize(p_K):
    p_K = jnp.asarray(p_K, jnp.float32)
    return p_K / jnp.sum(p_K)


def product_weights(p_K, w_K) -> jax.Array:
    """a_k = p_k w_k with p normalized: all that the mean gradient (and the fixed point) sees."""
    return _normalize(p_K) * jnp.asarray(w_K, jnp.float32)


def fixed_point(task: MultiDomainTask, a_K) -> jax.Array:
    """theta_inf = (sum_k a_k Sigma_k)^{-1} sum_k a_k Sigma_k w*_k: where SGD and weighted ERM go."""
    cov, w_star, _ = task.arrays()
    a_K = jnp.asarray(a_K, jnp.float32)
    h_DxD = jnp.einsum("k,kij->ij", a_K, cov)
    return jnp.linalg.solve(h_DxD, jnp.einsum("k,kij,kj->i", a_K, cov, w_star))


def target_risk(task: MultiDomainTask, theta_D, q_K) -> jax.Array:
    """R_q(theta) = sum_k q_k (delta_k^T Sigma_k delta_k + sigma_k^2) / 2, q normalized."""
    cov, w_star, s = task.arrays()
    delta_KxD = theta_D[None] - w_star
    per_K = jnp.einsum("ki,kij,kj->k", delta_KxD, cov, delta_KxD) + s ** 2
    return 0.5 * jnp.sum(_normalize(q_K) * per_K)


def bayes_risk(task: MultiDomainTask, q_K) -> jax.Array:
    """sum_k q_k sigma_k^2 / 2: the floor no predictor beats (excess risk = R_q - this)."""
    return 0.5 * jnp.sum(_normalize(q_K) * jnp.asarray(task.noise_K, jnp.float32) ** 2)


def _m_matrix(cov_DxD, p_DxD, noise):
    """E over delta with E[delta delta^T] = P of M(delta) = 2 S P S + (tr(S P) + sigma^2) S."""
    return 2.0 * cov_DxD @ p_DxD @ cov_DxD + (jnp.trace(cov_DxD @ p_DxD) + noise ** 2) * cov_DxD


def gradient_moments(task: MultiDomainTask, theta_D, p_K, w_K) -> tuple[jax.Array, jax.Array]:
    """(mean [D], covariance [D, D]) of ONE weighted example's gradient w_k g at theta (online data)."""
    cov, w_star, s = task.arrays()
    p_K = _normalize(p_K)
    w_K = jnp.asarray(w_K, jnp.float32)
    delta_KxD = theta_D[None] - w_star
    mean_D = jnp.einsum("k,kij,kj->i", p_K * w_K, cov, delta_KxD)
    m_KxDxD = jax.vmap(_m_matrix)(cov, jnp.einsum("ki,kj->kij", delta_KxD, delta_KxD), s)
    second_DxD = jnp.einsum("k,kij->ij", p_K * w_K ** 2, m_KxDxD)
    return mean_D, second_DxD - jnp.outer(mean_D, mean_D)


def gradient_variance(task: MultiDomainTask, theta_D, p_K, w_K, batch_size: int) -> jax.Array:
    """E ||g_hat - E g_hat||^2 of the size-B minibatch gradient = tr(Cov of one example) / B."""
    return jnp.trace(gradient_moments(task, theta_D, p_K, w_K)[1]) / batch_size


def domain_noise(task: MultiDomainTask, theta_D) -> jax.Array:
    """[K] m_k = tr M_k(theta - w*_k) = E_k ||g||^2 at theta (unweighted, one example)."""
    cov, w_star, s = task.arrays()
    delta_KxD = theta_D[None] - w_star
    m_KxDxD = jax.vmap(_m_matrix)(cov, jnp.einsum("ki,kj->kij", delta_KxD, delta_KxD), s)
    return jnp.trace(m_KxDxD, axis1=1, axis2=2)


def importance_split(a_K, m_K) -> tuple[jax.Array, jax.Array]:
    """(p, w) with p * w = a (normalized) minimizing sum_k a_k^2 m_k / p_k: p ∝ a sqrt(m), w = a / p.

    m_k = E_k ||g||^2 is a domain's per-example gradient second moment at the point of interest
    (any model: measure it with per-example gradients, e.g. `pool_domain_moments`).
    """
    a_K = _normalize(a_K)
    p_K = _normalize(a_K * jnp.sqrt(jnp.asarray(m_K, jnp.float32)))
    return p_K, a_K / p_K


def optimal_split(task: MultiDomainTask, a_K) -> tuple[jax.Array, jax.Array]:
    """(p, w) with p * w = a that minimize the gradient variance at theta_inf(a): p ∝ a sqrt(m)."""
    a_K = jnp.asarray(a_K, jnp.float32)
    m_K = domain_noise(task, fixed_point(task, a_K))
    p_K = _normalize(a_K * jnp.sqrt(m_K))
    return p_K, a_K / p_K


def sgd_risk_curve(task: MultiDomainTask, p_K, w_K, q_K, *, lr: float, batch_size: int, steps: int,
                   theta0_D=None, every: int = 1) -> jax.Array:
    """[steps // every + 1] exact E[R_q(theta_t)] at t = 0, every, 2 every, ... (online SGD, formula 2)."""
    cov, w_star, s = task.arrays()
    p_K = _normalize(p_K)
    w_K = jnp.asarray(w_K, jnp.float32)
    a_K, c_K = p_K * w_K, p_K * w_K ** 2
    q_K = _normalize(q_K)
    h_DxD = jnp.einsum("k,kij->ij", a_K, cov)
    b_D = jnp.einsum("k,kij,kj->i", a_K, cov, w_star)
    mu_D = jnp.zeros(task.dim, jnp.float32) if theta0_D is None else jnp.asarray(theta0_D, jnp.float32)
    s_DxD = jnp.outer(mu_D, mu_D)
    inv_b = 1.0 / batch_size

    def p_of(mu_D, s_DxD):
        mw_KxDxD = jnp.einsum("i,kj->kij", mu_D, w_star)
        return s_DxD[None] - mw_KxDxD - jnp.swapaxes(mw_KxDxD, 1, 2) + jnp.einsum("ki,kj->kij", w_star, w_star)

    def risk(mu_D, s_DxD):
        trace_K = jnp.einsum("kij,kji->k", cov, p_of(mu_D, s_DxD))
        return 0.5 * jnp.sum(q_K * (trace_K + s ** 2))

    def step(carry, _):
        mu_D, s_DxD = carry
        p_KxDxD = p_of(mu_D, s_DxD)
        eq_DxD = jnp.einsum("k,kij->ij", c_K, jax.vmap(_m_matrix)(cov, p_KxDxD, s))
        hmb_DxD = jnp.outer(h_DxD @ mu_D, b_D)
        mean_sq = h_DxD @ s_DxD @ h_DxD - hmb_DxD - hmb_DxD.T + jnp.outer(b_D, b_D)
        cross = s_DxD @ h_DxD - jnp.outer(mu_D, b_D)
        s_new = s_DxD - lr * (cross + cross.T) + lr ** 2 * ((1.0 - inv_b) * mean_sq + inv_b * eq_DxD)
        mu_new = mu_D - lr * (h_DxD @ mu_D - b_D)
        return (mu_new, 0.5 * (s_new + s_new.T)), None

    def block(carry, _):
        carry, _ = lax.scan(step, carry, None, length=every)
        return carry, risk(*carry)

    _, risks = lax.scan(block, (mu_D, s_DxD), None, length=steps // every)
    return jnp.concatenate([risk(mu_D, s_DxD)[None], risks])


def erm_risk(task: MultiDomainTask, a_K, n_K, q_K) -> dict:
    """Leading-order (in 1/n) expected risks of the weighted least-squares solution (formula 3).

    Returns {"risk_inf": R_q(theta_inf), "bias_term": grad R_q . beta, "variance_term": tr(H_q C)/2,
    "risk": their sum = E R_q(theta_hat), "gap": tr(H^{-1} J) = E[L_a(theta_hat) - L_hat_a(theta_hat)]
    with a normalized to sum 1, "train_objective_inf": L_a(theta_inf)}.
    """
    cov, w_star, s = task.arrays()
    a_K = _normalize(a_K)
    n_K = jnp.asarray(n_K, jnp.float32)
    q_K = _normalize(q_K)
    theta_D = fixed_point(task, a_K)
    h_DxD = jnp.einsum("k,kij->ij", a_K, cov)
    h_inv = jnp.linalg.inv(h_DxD)
    u_KxD = w_star - theta_D[None]
    su_KxD = jnp.einsum("kij,kj->ki", cov, u_KxD)
    v_KxDxD = (jnp.einsum("ki,kj->kij", su_KxD, su_KxD)
               + (jnp.einsum("ki,ki->k", u_KxD, su_KxD) + s ** 2)[:, None, None] * cov)
    c_K = a_K ** 2 / n_K
    j_DxD = jnp.einsum("k,kij->ij", c_K, v_KxDxD)
    c_DxD = h_inv @ j_DxD @ h_inv
    inner_KxDxD = (jnp.einsum("kij,jl,klm->kim", cov, h_inv, cov)
                   + jnp.einsum("ij,kji->k", h_inv, cov)[:, None, None] * cov)
    beta_D = -h_inv @ jnp.einsum("k,kij,kj->i", c_K, inner_KxDxD, u_KxD)
    grad_q_D = -jnp.einsum("k,ki->i", q_K, su_KxD)
    hq_DxD = jnp.einsum("k,kij->ij", q_K, cov)
    risk_inf = target_risk(task, theta_D, q_K)
    bias_term = grad_q_D @ beta_D
    var_term = 0.5 * jnp.trace(hq_DxD @ c_DxD)
    train_inf = 0.5 * jnp.sum(a_K * (jnp.einsum("ki,ki->k", u_KxD, su_KxD) + s ** 2))
    return {"risk_inf": risk_inf, "bias_term": bias_term, "variance_term": var_term,
            "risk": risk_inf + bias_term + var_term, "gap": jnp.trace(h_inv @ j_DxD), "train_objective_inf": train_inf}


# --- finite pools ----------------------------------------------------------------------------


def weighted_least_squares(x_NxD, y_N, domain_N, a_K, ridge: float = 0.0) -> jax.Array:
    """argmin_theta sum_k (a_k / n_k) sum_{i in k} (x_i.theta - y_i)^2 / 2 (+ ridge |theta|^2 / 2)."""
    a_K = jnp.asarray(a_K, jnp.float32)
    k = a_K.shape[0]
    n_K = jnp.zeros(k).at[domain_N].add(1.0)
    c_N = (a_K / jnp.maximum(n_K, 1.0))[domain_N]
    h_DxD = jnp.einsum("n,ni,nj->ij", c_N, x_NxD, x_NxD) + ridge * jnp.eye(x_NxD.shape[1])
    return jnp.linalg.solve(h_DxD, jnp.einsum("n,ni,n->i", c_N, x_NxD, y_N))


def weighted_objective(theta_D, x_NxD, y_N, domain_N, a_K) -> jax.Array:
    """L_hat_a(theta) = sum_k (a_k / n_k) sum_{i in k} (x_i.theta - y_i)^2 / 2."""
    a_K = jnp.asarray(a_K, jnp.float32)
    n_K = jnp.zeros(a_K.shape[0]).at[domain_N].add(1.0)
    loss_N = 0.5 * (x_NxD @ theta_D - y_N) ** 2
    return jnp.sum((a_K / jnp.maximum(n_K, 1.0))[domain_N] * loss_N)


def pool_gradient_variance(grads_NxP, domain_N, p_K, w_K, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """(mean [P], variance) of the minibatch gradient under `Mixture(sizes, p, w)` on a finite pool.

    Exact for any model: grads_NxP are the per-example gradients of the pool (flattened), the
    domain of each example, and a draw is (k ~ p, i ~ uniform in k, weight w_k). Then
        E g_hat = sum_k p_k w_k gbar_k,   Var = (sum_k p_k w_k^2 E_k ||g||^2 - ||E g_hat||^2) / B.
    """
    p_K = _normalize(p_K)
    w_K = jnp.asarray(w_K, jnp.float32)
    k = p_K.shape[0]
    n_K = jnp.zeros(k).at[domain_N].add(1.0)
    mean_KxP = jax.ops.segment_sum(grads_NxP, domain_N, k) / n_K[:, None]
    sq_K = jax.ops.segment_sum(jnp.sum(grads_NxP ** 2, axis=1), domain_N, k) / n_K
    mean_P = jnp.einsum("k,kp->p", p_K * w_K, mean_KxP)
    return mean_P, (jnp.sum(p_K * w_K ** 2 * sq_K) - jnp.sum(mean_P ** 2)) / batch_size


def pool_domain_moments(grads_NxP, domain_N, num_domains: int) -> jax.Array:
    """[K] m_k = mean over the pool's domain-k examples of ||g_i||^2 (for `importance_split`)."""
    n_K = jnp.zeros(num_domains).at[domain_N].add(1.0)
    return jax.ops.segment_sum(jnp.sum(grads_NxP ** 2, axis=1), domain_N, num_domains) / jnp.maximum(n_K, 1.0)


# --- beyond linear regression: domains with nonlinear teachers --------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherDomains:
    """K regression domains with nonlinear teachers: x ~ N(0, I_D) in every domain and
    y = f_k(x) + sigma_k eps, f_k(x) = v_k . tanh(W_k x / sqrt(D)) / sqrt(H), where
    (W_k, v_k) = (W, v) + shift_k (U_k, u_k): a shared teacher plus a domain-specific
    perturbation of relative size shift_k (all entries standard normal). The same weighting
    questions as `MultiDomainTask`, without closed forms: the experiments measure them."""

    w_KxHxD: np.ndarray
    v_KxH: np.ndarray
    noise_K: np.ndarray

    @property
    def num_domains(self) -> int:
        return self.v_KxH.shape[0]

    @property
    def dim(self) -> int:
        return self.w_KxHxD.shape[2]

    def teacher(self, x_BxD: jax.Array, domain_B: jax.Array) -> jax.Array:
        """[B] f_{k_b}(x_b) (noise-free)."""
        w_KxHxD = jnp.asarray(self.w_KxHxD, jnp.float32)
        v_KxH = jnp.asarray(self.v_KxH, jnp.float32)
        h_BxH = jnp.tanh(jnp.einsum("bhd,bd->bh", w_KxHxD[domain_B], x_BxD) / np.sqrt(self.dim))
        return jnp.sum(v_KxH[domain_B] * h_BxH, axis=1) / np.sqrt(self.v_KxH.shape[1])

    def sample_examples(self, key, domain_B: jax.Array) -> dict:
        """{"x": [B, D], "y": [B], "f": [B] (noise-free teacher), "domain": [B]}."""
        kx, ke = jax.random.split(key)
        domain_B = jnp.asarray(domain_B, jnp.int32)
        x_BxD = jax.random.normal(kx, (domain_B.shape[0], self.dim))
        f_B = self.teacher(x_BxD, domain_B)
        noise_K = jnp.asarray(self.noise_K, jnp.float32)
        return {"x": x_BxD, "y": f_B + noise_K[domain_B] * jax.random.normal(ke, domain_B.shape), "f": f_B,
                "domain": domain_B}

    def sample_pool(self, key, sizes_K: Sequence[int]) -> dict:
        """A finite pool with domains in consecutive index ranges (the layout `Mixture` samples)."""
        return self.sample_examples(key, jnp.asarray(np.repeat(np.arange(len(sizes_K)), sizes_K), jnp.int32))


def make_teacher_domains(seed: int, dim: int, hidden: int, noise: Sequence[float],
                         shift: Sequence[float] = ()) -> TeacherDomains:
    """`TeacherDomains` with K = len(noise) domains drawn from `seed`."""
    k = len(noise)
    shift = tuple(shift) or (0.0,) * k
    if len(shift) != k or min(noise) < 0 or dim < 1 or hidden < 1:
        raise ValueError(f"need one shift per domain ({len(shift)} vs {k}), noise >= 0, dim and hidden >= 1")
    rng = np.random.default_rng(seed)
    w_HxD, v_H = rng.standard_normal((hidden, dim)), rng.standard_normal(hidden)
    s_K = np.asarray(shift, np.float64)
    w = w_HxD[None] + s_K[:, None, None] * rng.standard_normal((k, hidden, dim))
    v = v_H[None] + s_K[:, None] * rng.standard_normal((k, hidden))
    return TeacherDomains(w, v, np.asarray(noise, np.float64))
