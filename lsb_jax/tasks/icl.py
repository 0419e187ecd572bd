"""In-context linear regression (seed 004 Sec. 2.1 / App. B.1; Garg et al. 2022; Raventós et al. 2023).

A task is a weight vector w in R^D. A sequence holds T points (x_t, y_t), x_t ~ N(0, I_D),
y_t = <w, x_t> + eps_t, eps_t ~ N(0, sigma^2). The model sees the tokens

    [x_1, (y_1, 0, ..., 0), x_2, (y_2, 0, ..., 0), ..., x_T, (y_T, 0, ..., 0)]   in R^{2T x D}

(Garg et al.'s layout: y right-padded with D-1 zeros, one linear read-in, no type flag) and its
read-out at the position of x_t is the prediction of y_t from the t-1 pairs before it, so one
causal pass scores every context length k = t-1 = 0..T-1 (seed 004 eq. 2). The per-example loss
is the mean over the T positions of the squared error divided by D (the normalization of Garg
et al.: the zero predictor scores E[y^2]/D = (tau^2 D + sigma^2)/D under w ~ N(0, tau^2 I)).

Task distributions (the data levers of seed 004):
  * test / infinite diversity: w ~ N(0, tau^2 I), fresh at every step;
  * correlated: w ~ N(0, tau^2 C_beta), C_beta = (1 - beta) I + beta v v^T, ||v|| = 1 (Fig. 6);
  * a finite pool W_K = {w_1..w_K} drawn once from N(0, tau^2 I), indexed by a
    `lsb_jax.data` sampler (Subset = the first k tasks, Zipf, a doubling curriculum; Figs. 1, 4, 5, 7).

Baselines, vectorized over all context lengths at once (position t uses pairs 1..t-1):
  * Gaussian posterior mean (ridge for C = I, eq. 3):
        w*_t = C (X_t^T X_t C + (sigma^2 / tau^2) I)^{-1} X_t^T y_t
             = (X_t^T X_t + (sigma^2 / tau^2) I)^{-1} X_t^T y_t          for C = I;
  * finite-pool Bayes ("dMMSE", eq. 6) with pool prior pi_k (uniform by default):
        p(k | X_t, y_t) = softmax_k( log pi_k - ||y_t - X_t w_k||^2 / (2 sigma^2) ),
        w*_t = sum_k p(k | X_t, y_t) w_k.

Axis letters: B sequences, T points, D input dimension, K pool tasks, C chunk.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclasses.dataclass(frozen=True)
class ICLTask:
    """The sequence distribution: D dims, T points per sequence, noise sigma^2, prior tau^2."""

    dim: int = 20
    num_points: int = 41
    noise_var: float = 1.0     # sigma^2 (seed 004: "noise std sigma^2 = 1")
    prior_var: float = 1.0     # tau^2: the test prior w ~ N(0, tau^2 I)

    def __post_init__(self):
        for name in ("dim", "num_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"ICLTask.{name}: must be an int >= 1, got {v!r}")
        if not self.noise_var > 0:
            raise ValueError(f"ICLTask.noise_var: must be > 0, got {self.noise_var!r}")
        if not self.prior_var > 0:
            raise ValueError(f"ICLTask.prior_var: must be > 0, got {self.prior_var!r}")

    @property
    def seq_len(self) -> int:
        """Tokens per sequence, 2T (x and y tokens)."""
        return 2 * self.num_points

    def sample_tasks(self, key, num: int, beta=0.0, v_D=None) -> jax.Array:
        """[num, D] w ~ N(0, tau^2 ((1 - beta) I + beta v v^T)); beta may be traced.

        w = tau (sqrt(1 - beta) z + sqrt(beta) g v), z ~ N(0, I_D), g ~ N(0, 1): no matrix square
        root, valid for beta in [0, 1] including the rank-one end beta = 1.
        """
        if v_D is None and not (isinstance(beta, (int, float)) and beta == 0):
            raise ValueError("sample_tasks: beta needs the direction v_D (without it the tasks would have "
                             "covariance tau^2 (1 - beta) I, not the correlated one)")
        kz, kg = jax.random.split(key)
        z_NxD = jax.random.normal(kz, (num, self.dim))
        beta = jnp.clip(jnp.asarray(beta, jnp.float32), 0.0, 1.0)
        w_NxD = jnp.sqrt(1.0 - beta) * z_NxD
        if v_D is not None:
            g_N = jax.random.normal(kg, (num,))
            w_NxD = w_NxD + jnp.sqrt(beta) * g_N[:, None] * jnp.asarray(v_D, jnp.float32)[None, :]
        return np.sqrt(self.prior_var) * w_NxD

    def sample_sequences(self, key, w_BxD) -> dict:
        """{"x": [B, T, D], "y": [B, T], "w": [B, D]}: fresh inputs and noise for the given tasks."""
        kx, ke = jax.random.split(key)
        b = w_BxD.shape[0]
        x_BxTxD = jax.random.normal(kx, (b, self.num_points, self.dim))
        eps_BxT = np.sqrt(self.noise_var) * jax.random.normal(ke, (b, self.num_points))
        y_BxT = jnp.einsum("btd,bd->bt", x_BxTxD, w_BxD) + eps_BxT
        return {"x": x_BxTxD, "y": y_BxT, "w": w_BxD}

    def test_set(self, key, num: int) -> dict:
        """`num` sequences of the test distribution w ~ N(0, tau^2 I)."""
        kw, ks = jax.random.split(key)
        return self.sample_sequences(ks, self.sample_tasks(kw, num))

    def prior_cov(self, beta: float = 0.0, v_D=None) -> np.ndarray:
        """[D, D] tau^2 ((1 - beta) I + beta v v^T) (float64, numpy)."""
        return self.prior_var * correlated_cov(self.dim, beta, v_D)

    def zero_predictor_loss(self, beta: float = 0.0) -> float:
        """Expected normalized loss of predicting 0: E[y^2] / D = (tau^2 tr(C_beta) + sigma^2) / D."""
        del beta  # tr((1 - beta) I + beta v v^T) = D for every beta
        return (self.prior_var * self.dim + self.noise_var) / self.dim


def correlated_cov(dim: int, beta: float, v_D=None) -> np.ndarray:
    """[D, D] (1 - beta) I + beta v v^T (v a unit vector; beta = 0 gives I)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"correlated_cov: beta must be in [0, 1], got {beta}")
    cov = (1.0 - beta) * np.eye(dim)
    if v_D is not None:
        v = np.asarray(v_D, np.float64)
        cov = cov + beta * np.outer(v, v)
    elif beta:
        raise ValueError("correlated_cov: beta > 0 needs the direction v")
    return cov


def random_direction(key, dim: int) -> jax.Array:
    """[D] a uniformly random unit vector (the v of the correlated task prior)."""
    v_D = jax.random.normal(key, (dim,))
    return v_D / jnp.linalg.norm(v_D)


# ----------------------------------------------------------------------------- model interface


def to_tokens(x_BxTxD: jax.Array, y_BxT: jax.Array) -> jax.Array:
    """[B, 2T, D]: x_1, (y_1, 0..0), x_2, (y_2, 0..0), ... (Garg et al.'s read-in layout)."""
    b, t, d = x_BxTxD.shape
    ytok_BxTxD = jnp.zeros_like(x_BxTxD).at[:, :, 0].set(y_BxT)
    return jnp.stack([x_BxTxD, ytok_BxTxD], axis=2).reshape(b, 2 * t, d)


def read_predictions(out_Bx2TxO: jax.Array) -> jax.Array:
    """[B, T]: the first output channel at the x positions (token 2(t-1) predicts y_t)."""
    return out_Bx2TxO[:, 0::2, 0]


def squared_errors(pred_BxT: jax.Array, y_BxT: jax.Array, dim: int) -> jax.Array:
    """[B, T] (pred - y)^2 / D, the normalized loss at every context length."""
    return (pred_BxT - y_BxT) ** 2 / dim


def per_example_loss(pred_BxT: jax.Array, y_BxT: jax.Array, dim: int) -> jax.Array:
    """[B] mean over the T context lengths of (pred - y)^2 / D (eq. 2 up to the constant 1/(T D))."""
    return jnp.mean(squared_errors(pred_BxT, y_BxT, dim), axis=-1)


# ----------------------------------------------------------------------------- baselines


def _exclusive_cumsum(a, axis: int):
    return jnp.cumsum(a, axis=axis) - a


def gaussian_posterior_w(x_BxTxD, y_BxT, noise_var: float, prior_cov_DxD) -> jax.Array:
    """[B, T, D] E[w | first t-1 pairs] under w ~ N(0, Sigma): Sigma (G_t Sigma + sigma^2 I)^{-1} b_t.

    G_t = sum_{i<t} x_i x_i^T and b_t = sum_{i<t} y_i x_i (exclusive prefix sums), so all T
    context lengths come from one batched solve. The form without Sigma^{-1} allows a singular
    Sigma (beta = 1). For Sigma = tau^2 I it is ridge: (G_t + sigma^2/tau^2 I)^{-1} b_t.
    """
    x = jnp.asarray(x_BxTxD, jnp.float32)
    d = x.shape[-1]
    sigma_DxD = jnp.asarray(prior_cov_DxD, jnp.float32)
    gram_BxTxDxD = _exclusive_cumsum(jnp.einsum("btd,bte->btde", x, x), axis=1)
    xy_BxTxD = _exclusive_cumsum(x * y_BxT[..., None], axis=1)
    lhs = jnp.einsum("btde,ef->btdf", gram_BxTxDxD, sigma_DxD) + noise_var * jnp.eye(d, dtype=jnp.float32)
    sol_BxTxD = jnp.linalg.solve(lhs, xy_BxTxD[..., None])[..., 0]
    return jnp.einsum("de,bte->btd", sigma_DxD, sol_BxTxD)


def ridge_w(x_BxTxD, y_BxT, noise_var: float, prior_var: float = 1.0) -> jax.Array:
    """[B, T, D] ridge (eq. 3) with lambda = sigma^2 / tau^2 at every context length."""
    d = x_BxTxD.shape[-1]
    return gaussian_posterior_w(x_BxTxD, y_BxT, noise_var, prior_var * jnp.eye(d))


def ridge_predictions(x_BxTxD, y_BxT, noise_var: float, prior_var: float = 1.0) -> jax.Array:
    """[B, T] <w*_t, x_t>: the Bayes-optimal prediction for the Gaussian prior tau^2 I."""
    return jnp.einsum("btd,btd->bt", ridge_w(x_BxTxD, y_BxT, noise_var, prior_var), x_BxTxD)


def gaussian_bayes_predictions(x_BxTxD, y_BxT, noise_var: float, prior_cov_DxD) -> jax.Array:
    """[B, T] <E[w | context], x_t> under w ~ N(0, Sigma) (e.g. the correlated prior)."""
    return jnp.einsum("btd,btd->bt", gaussian_posterior_w(x_BxTxD, y_BxT, noise_var, prior_cov_DxD), x_BxTxD)


def pool_posterior_logits(x_BxTxD, y_BxT, pool_KxD, noise_var: float, log_prior_K=None) -> jax.Array:
    """[B, T, K] log pi_k - sum_{i<t} (y_i - <w_k, x_i>)^2 / (2 sigma^2) (unnormalized log posterior)."""
    fit_BxTxK = jnp.einsum("btd,kd->btk", x_BxTxD, pool_KxD)
    resid2_BxTxK = (y_BxT[..., None] - fit_BxTxK) ** 2
    logits = -_exclusive_cumsum(resid2_BxTxK, axis=1) / (2.0 * noise_var)
    if log_prior_K is not None:
        logits = logits + log_prior_K
    return logits


def pool_bayes_predictions(x_BxTxD, y_BxT, pool_KxD, noise_var: float, log_prior_K=None,
                           chunk: int = 64) -> jax.Array:
    """[B, T] sum_k p(k | context_t) <w_k, x_t>: the Bayes predictor of the finite pool (eq. 6).

    `log_prior_K` (default uniform) is the log of the pool's sampling distribution, e.g.
    `log(sampler.probs(step))` of a `lsb_jax.data` sampler (Subset: -inf outside the first k,
    Zipf: log rank weights). Sequences are processed `chunk` at a time (`lax.map`), so
    memory is O(chunk T K).
    """
    x = jnp.asarray(x_BxTxD, jnp.float32)
    y = jnp.asarray(y_BxT, jnp.float32)
    pool = jnp.asarray(pool_KxD, jnp.float32)
    lp = None if log_prior_K is None else jnp.asarray(log_prior_K, jnp.float32)

    def block(xy):
        xb, yb = xy
        post = jax.nn.softmax(pool_posterior_logits(xb, yb, pool, noise_var, lp), axis=-1)
        return jnp.einsum("btk,btk->bt", post, jnp.einsum("btd,kd->btk", xb, pool))

    b = x.shape[0]
    c = max(1, min(chunk, b))
    n = -(-b // c)
    pad = n * c - b
    xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    yp = jnp.concatenate([y, jnp.zeros((pad,) + y.shape[1:], y.dtype)]) if pad else y
    out = lax.map(block, (xp.reshape((n, c) + x.shape[1:]), yp.reshape((n, c) + y.shape[1:])))
    return out.reshape(n * c, -1)[:b]

