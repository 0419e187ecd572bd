"""lsb_jax.tasks.icl: sampling, token layout and the ridge / finite-pool Bayes baselines.

References are written independently in numpy/scipy (loops over sequences and context lengths,
float64), and the estimators are checked at their known limits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from lsb_jax.data import Subset, Zipf
from lsb_jax.tasks import icl


def _np_ridge_preds(x, y, noise_var, prior_cov):
    """Posterior mean of w ~ N(0, Sigma) from the first t pairs, by the textbook precision form."""
    b, t, d = x.shape
    prec0 = np.linalg.inv(prior_cov)
    out = np.zeros((b, t))
    for i in range(b):
        for j in range(t):
            xs, ys = x[i, :j].astype(np.float64), y[i, :j].astype(np.float64)
            prec = prec0 + xs.T @ xs / noise_var
            w = np.linalg.solve(prec, xs.T @ ys / noise_var)
            out[i, j] = w @ x[i, j]
    return out


def _np_pool_preds(x, y, pool, noise_var, prior=None):
    b, t, d = x.shape
    k = pool.shape[0]
    logp = np.log(np.full(k, 1.0 / k) if prior is None else prior)
    out = np.zeros((b, t))
    for i in range(b):
        for j in range(t):
            resid = y[i, :j, None] - x[i, :j] @ pool.T                 # [j, K]
            logits = logp - (resid ** 2).sum(0) / (2 * noise_var)
            post = np.exp(logits - logsumexp(logits))
            out[i, j] = post @ (pool @ x[i, j])
    return out


@pytest.fixture(scope="module")
def small():
    task = icl.ICLTask(dim=4, num_points=9, noise_var=0.5, prior_var=1.0)
    data = task.test_set(jax.random.PRNGKey(0), 6)
    return task, {k: np.asarray(v, np.float64) for k, v in data.items()}


def test_sequences_follow_the_linear_model(small):
    task, data = small
    assert data["x"].shape == (6, 9, 4) and data["y"].shape == (6, 9)
    resid = data["y"] - np.einsum("btd,bd->bt", data["x"], data["w"])
    # the residual is the noise: variance sigma^2 (loose: 54 draws)
    assert 0.2 < resid.var() < 1.0
    big = task.test_set(jax.random.PRNGKey(1), 4000)
    r = np.asarray(big["y"]) - np.einsum("btd,bd->bt", np.asarray(big["x"]), np.asarray(big["w"]))
    np.testing.assert_allclose(r.var(), task.noise_var, rtol=0.03)
    np.testing.assert_allclose(np.asarray(big["x"]).var(), 1.0, rtol=0.02)


@pytest.mark.parametrize("beta", [0.0, 0.6, 1.0])
def test_correlated_task_covariance(beta):
    task = icl.ICLTask(dim=5, prior_var=2.0)
    v = np.asarray(icl.random_direction(jax.random.PRNGKey(3), 5))
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-6)
    w = np.asarray(task.sample_tasks(jax.random.PRNGKey(4), 200_000, beta=beta, v_D=v), np.float64)
    # the reference in float64, as prior_cov: beta * np.outer(v, v) of the float32 v rounds twice in float32
    # (up to 2 u = 1.2e-7 relative, past the default rtol 1e-7 of the float64 check below)
    v64 = v.astype(np.float64)
    want = 2.0 * ((1 - beta) * np.eye(5) + beta * np.outer(v64, v64))
    np.testing.assert_allclose(np.cov(w.T), want, atol=0.03)
    np.testing.assert_allclose(task.prior_cov(beta, v), want, atol=1e-12)
    if beta > 0:   # without the direction the covariance would be tau^2 (1 - beta) I: refused
        with pytest.raises(ValueError, match="v_D"):
            task.sample_tasks(jax.random.PRNGKey(4), 10, beta=beta)


def test_token_layout_interleaves_x_and_padded_y():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    y = -np.arange(6, dtype=np.float32).reshape(2, 3) - 1
    tok = np.asarray(icl.to_tokens(jnp.asarray(x), jnp.asarray(y)))
    assert tok.shape == (2, 6, 4)
    for t in range(3):
        np.testing.assert_array_equal(tok[:, 2 * t], x[:, t])
        np.testing.assert_array_equal(tok[:, 2 * t + 1, 0], y[:, t])
        np.testing.assert_array_equal(tok[:, 2 * t + 1, 1:], 0)
    out = np.zeros((2, 6, 1), np.float32)
    out[:, 0::2, 0] = 7 + np.arange(3)          # values at the x positions
    out[:, 1::2, 0] = -100                      # y positions are never read
    np.testing.assert_array_equal(np.asarray(icl.read_predictions(jnp.asarray(out))),
                                  np.broadcast_to(7 + np.arange(3), (2, 3)))


def test_per_example_loss_is_mean_normalized_squared_error():
    pred = np.array([[1.0, 2.0, 3.0]])
    y = np.array([[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(icl.per_example_loss(pred, y, 4)), [(1 + 4 + 4) / 3 / 4])
    task = icl.ICLTask(dim=20, noise_var=1.0)
    big = task.test_set(jax.random.PRNGKey(5), 3000)
    zero = float(jnp.mean(icl.per_example_loss(jnp.zeros_like(big["y"]), big["y"], 20)))
    np.testing.assert_allclose(zero, task.zero_predictor_loss(), rtol=0.03)   # (20 + 1) / 20


def test_ridge_matches_numpy_at_every_context_length(small):
    task, data = small
    got = np.asarray(icl.ridge_predictions(data["x"], data["y"], task.noise_var, task.prior_var))
    want = _np_ridge_preds(data["x"], data["y"], task.noise_var, task.prior_var * np.eye(4))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[:, 0], 0.0)                     # no context: the prior mean


def test_gaussian_posterior_with_correlated_prior_matches_numpy(small):
    task, data = small
    v = np.array([0.6, 0.0, 0.8, 0.0])
    cov = task.prior_cov(0.7, v)
    got = np.asarray(icl.gaussian_bayes_predictions(data["x"], data["y"], task.noise_var, cov))
    want = _np_ridge_preds(data["x"], data["y"], task.noise_var, cov)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_rank_one_prior_is_one_dimensional_regression_along_v(small):
    """beta = 1: w = a v with a ~ N(0, tau^2), so E[a | X, y] = (Xv)^T y / (|Xv|^2 + sigma^2 / tau^2)."""
    task, data = small
    v = np.array([0.0, 0.6, 0.0, 0.8])
    got = np.asarray(icl.gaussian_bayes_predictions(data["x"], data["y"], task.noise_var, task.prior_cov(1.0, v)))
    x, y = data["x"], data["y"]
    xv = x @ v                                                         # [B, T]
    num = np.cumsum(xv * y, 1) - xv * y
    den = np.cumsum(xv ** 2, 1) - xv ** 2 + task.noise_var / task.prior_var
    np.testing.assert_allclose(got, num / den * xv, rtol=1e-4, atol=1e-5)


def test_pool_bayes_matches_numpy_uniform_and_weighted(small):
    task, data = small
    pool = np.asarray(task.sample_tasks(jax.random.PRNGKey(7), 13), np.float64)
    got = np.asarray(icl.pool_bayes_predictions(data["x"], data["y"], pool, task.noise_var, chunk=4))
    np.testing.assert_allclose(got, _np_pool_preds(data["x"], data["y"], pool, task.noise_var), rtol=1e-4, atol=1e-5)
    prior = np.arange(1, 14, dtype=np.float64) ** -1.5
    prior /= prior.sum()
    got = np.asarray(icl.pool_bayes_predictions(data["x"], data["y"], pool, task.noise_var, np.log(prior)))
    np.testing.assert_allclose(got, _np_pool_preds(data["x"], data["y"], pool, task.noise_var, prior),
                               rtol=1e-4, atol=1e-5)


def test_pool_bayes_with_one_task_predicts_that_task(small):
    task, data = small
    w1 = np.array([[0.3, -1.2, 0.5, 2.0]])
    got = np.asarray(icl.pool_bayes_predictions(data["x"], data["y"], w1, task.noise_var))
    np.testing.assert_allclose(got, data["x"] @ w1[0], rtol=1e-5, atol=1e-5)


def test_pool_bayes_identifies_the_generating_task_with_long_context():
    task = icl.ICLTask(dim=4, num_points=40, noise_var=0.25)
    pool = task.sample_tasks(jax.random.PRNGKey(8), 16)
    data = task.sample_sequences(jax.random.PRNGKey(9), pool[:5])
    got = np.asarray(icl.pool_bayes_predictions(data["x"], data["y"], pool, task.noise_var))
    np.testing.assert_allclose(got[:, -1], np.einsum("bd,bd->b", np.asarray(data["x"][:, -1]), np.asarray(pool[:5])),
                               atol=1e-3)


def test_pool_bayes_tends_to_ridge_as_the_pool_grows():
    """k -> infinity: the pool's empirical prior tends to N(0, I), so dMMSE tends to ridge (d = 2)."""
    task = icl.ICLTask(dim=2, num_points=6, noise_var=1.0)
    data = task.test_set(jax.random.PRNGKey(10), 64)
    ridge = np.asarray(icl.ridge_predictions(data["x"], data["y"], task.noise_var))
    errs = []
    for k in (16, 256, 65_536):
        pool = task.sample_tasks(jax.random.PRNGKey(11), k)
        got = np.asarray(icl.pool_bayes_predictions(data["x"], data["y"], pool, task.noise_var, chunk=16))
        errs.append(np.sqrt(np.mean((got - ridge) ** 2) / np.mean(ridge ** 2)))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.03


def test_pool_bayes_log_prior_from_samplers_restricts_to_active_tasks(small):
    """log(Subset.probs) puts -inf outside the first k tasks: equal to dMMSE of those k alone."""
    task, data = small
    pool = np.asarray(task.sample_tasks(jax.random.PRNGKey(12), 32))
    sub = Subset(32, 5, perm_seed=3)
    active = np.asarray(sub.order())[:5]
    got = np.asarray(icl.pool_bayes_predictions(data["x"], data["y"], pool, task.noise_var, jnp.log(sub.probs(0))))
    want = _np_pool_preds(data["x"], data["y"], pool[active], task.noise_var)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    z = Zipf(32, 1.0, perm_seed=3)
    got = np.asarray(icl.pool_bayes_predictions(data["x"], data["y"], pool, task.noise_var, jnp.log(z.probs(0))))
    want = _np_pool_preds(data["x"], data["y"], pool, task.noise_var, np.asarray(z.probs(0), np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bad_input_errors_name_the_field():
    with pytest.raises(ValueError, match="ICLTask.noise_var"):
        icl.ICLTask(noise_var=0.0)
    with pytest.raises(ValueError, match="ICLTask.dim"):
        icl.ICLTask(dim=0)
    with pytest.raises(ValueError, match="beta"):
        icl.correlated_cov(3, 1.5)
