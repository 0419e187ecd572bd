"""Closed forms of multi-domain regression against Monte Carlo; the weights reach sampler and loss.

Tolerances are stated in standard errors (SE) of the Monte Carlo estimate: exact formulas must
agree within 5 SE (a false alarm has probability ~1e-6 per comparison); leading-order (1/n)
approximations within 4 SE plus a stated relative slack.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.data import Mixture
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.tasks import multidomain as md
from lsb_jax.train import data_key, init_state, make_sampled_step, reduce_losses

EXACT_SE = 5.0


def _task(seed=0, dim=3, shift=(0.0, 0.8, 0.5)):
    k = len(shift)
    return md.make_task(seed, dim, noise=(0.3, 1.0, 0.1)[:k], scales=(1.0, 2.0, 0.5)[:k], decay=0.5,
                        shift=shift, rotate=True)


def _weighted_grads(task, key, mixture, num):
    """num single weighted-example gradients w_k g drawn through the Mixture sampler (online data)."""
    keys = jax.random.split(key, num)

    def one(k):
        batch = task.online_batch(mixture, k, 0, 1)
        return batch

    batch = jax.jit(jax.vmap(one))(keys)
    batch = jax.tree.map(lambda a: a[:, 0], batch)
    theta = {"w": jnp.asarray([0.3, -0.2, 0.5])}
    g = jax.jit(jax.vmap(jax.grad(lambda p, b: b["loss_weight"] * md.loss_fn(p, jax.tree.map(lambda a: a[None], b))[0]),
                 in_axes=(None, 0)))(theta, batch)["w"]
    return np.asarray(g, np.float64), theta["w"]


def test_gradient_moments_match_monte_carlo():
    task = _task()
    p, w = jnp.asarray([0.5, 0.2, 0.3]), jnp.asarray([1.0, 2.5, 0.4])
    mixture = Mixture((1, 1, 1), p, w)
    g_NxD, theta = _weighted_grads(task, jax.random.PRNGKey(1), mixture, 200_000)
    mean_D, cov_DxD = (np.asarray(a, np.float64) for a in md.gradient_moments(task, theta, p, w))
    n = g_NxD.shape[0]
    se_mean = g_NxD.std(0) / np.sqrt(n)
    assert np.all(np.abs(g_NxD.mean(0) - mean_D) < EXACT_SE * se_mean)
    centered = g_NxD - g_NxD.mean(0)
    prod_NxDxD = centered[:, :, None] * centered[:, None, :]
    se_cov = prod_NxDxD.std(0) / np.sqrt(n)
    assert np.all(np.abs(prod_NxDxD.mean(0) - cov_DxD) < EXACT_SE * se_cov)
    # the mean depends on the product only: same a = p w, other split -> same mean, other covariance
    p2 = jnp.asarray([0.2, 0.4, 0.4])
    w2 = md.product_weights(p, w) / p2
    mean2, cov2 = md.gradient_moments(task, theta, p2, w2)
    np.testing.assert_allclose(mean2, mean_D, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.trace(cov2), np.trace(cov_DxD), rtol=1e-2)


def test_weights_reach_sampler_and_loss_exactly():
    task = _task()
    sizes = (5, 7, 4)
    pool = task.sample_pool(jax.random.PRNGKey(0), sizes)
    p, w = np.array([0.2, 0.5, 0.3]), np.array([3.0, 0.5, 1.5])
    mixture = Mixture(sizes, p, w)
    opt = make_optimizer(OptimConfig(name="sgd", lr=0.1), 10)
    batch_size = 6

    def sample_batch(key, step):
        draw = mixture.sample(key, step, batch_size)
        return {"x": pool["x"][draw.index], "y": pool["y"][draw.index], "loss_weight": draw.weight}

    step = jax.jit(make_sampled_step(md.loss_fn, opt, sample_batch))
    state = jax.jit(lambda k: init_state(lambda kk: {"w": jax.random.normal(kk, (task.dim,))}, opt.tx, k))(
        jax.random.PRNGKey(3))
    new_state, metrics = step(state)

    # every draw of steps 0..3999 in one program; step 0's draw is the batch the train step used
    draws = jax.jit(jax.vmap(lambda s: mixture.sample(data_key(state.rng), s, batch_size)))(jnp.arange(4000))
    index_SxB, weight_SxB = np.asarray(draws.index), np.asarray(draws.weight)
    dom_SxB = np.searchsorted(np.cumsum(sizes), index_SxB, side="right")
    np.testing.assert_array_equal(weight_SxB, w[dom_SxB].astype(np.float32))                       # sampler -> weight
    domain = dom_SxB[0]
    x, y = np.asarray(pool["x"], np.float64)[index_SxB[0]], np.asarray(pool["y"], np.float64)[index_SxB[0]]
    theta = np.asarray(state.params["w"], np.float64)
    resid = x @ theta - y
    np.testing.assert_allclose(metrics["loss"], np.sum(w[domain] * 0.5 * resid ** 2) / batch_size, rtol=1e-5)
    grad = (w[domain] * resid) @ x / batch_size                                                     # weight -> loss
    np.testing.assert_allclose(new_state.params["w"], theta - 0.1 * grad, rtol=1e-5, atol=1e-6)

    # domain frequencies follow p (binomial SE)
    freq = np.bincount(dom_SxB.ravel(), minlength=3) / dom_SxB.size
    assert np.all(np.abs(freq - p) < EXACT_SE * np.sqrt(p * (1 - p) / dom_SxB.size))

    # traced per-member weights (the vmapped sweeps of the experiments) give the same steps
    def member(p_K, w_K):
        mix = Mixture(sizes, p_K, w_K)
        sb = lambda key, s: {**{k: pool[k][mix.sample(key, s, batch_size).index] for k in ("x", "y")},  # noqa: E731
                             "loss_weight": mix.sample(key, s, batch_size).weight}
        return make_sampled_step(md.loss_fn, opt, sb)(state)[0].params["w"]

    both = jax.jit(jax.vmap(member))(jnp.asarray([p, p[::-1]], jnp.float32), jnp.asarray([w, w[::-1]], jnp.float32))
    # float32: the same SGD step from another program (vmapped, traced weights) may round differently, by a
    # few ulps of the step's terms |theta| + lr |w r x| / B (error budget 16 eps of them; rtol alone would
    # demand ~1e-6 * |w_i| of a parameter near 0)
    step_scale = np.abs(theta) + 0.1 * (np.abs(w[domain] * resid) @ np.abs(x)) / batch_size
    np.testing.assert_allclose(both[0], new_state.params["w"], rtol=1e-6,
                               atol=16 * np.finfo(np.float32).eps * step_scale.max())


def test_pool_gradient_variance_matches_minibatch_monte_carlo():
    task = _task()
    sizes = (30, 10, 20)
    pool = task.sample_pool(jax.random.PRNGKey(2), sizes)
    p, w, batch_size = jnp.asarray([0.3, 0.3, 0.4]), jnp.asarray([0.5, 3.0, 1.0]), 4
    theta = {"w": jnp.asarray([0.1, 0.4, -0.3])}
    per_ex = jax.vmap(jax.grad(lambda prm, b: md.loss_fn(prm, jax.tree.map(lambda a: a[None], b))[0]),
                      in_axes=(None, 0))(theta, pool)["w"]
    mean_P, var = md.pool_gradient_variance(per_ex, pool["domain"], p, w, batch_size)

    mixture = Mixture(sizes, p, w)

    def minibatch_grad(step):
        draw = mixture.sample(jax.random.PRNGKey(9), step, batch_size)
        batch = {"x": pool["x"][draw.index], "y": pool["y"][draw.index], "loss_weight": draw.weight}
        return jax.grad(lambda prm: reduce_losses(md.loss_fn(prm, batch), batch))(theta)["w"]

    g_RxD = np.asarray(jax.jit(jax.vmap(minibatch_grad))(jnp.arange(100_000)), np.float64)
    r = g_RxD.shape[0]
    assert np.all(np.abs(g_RxD.mean(0) - np.asarray(mean_P)) < EXACT_SE * g_RxD.std(0) / np.sqrt(r))
    dev_R = np.sum((g_RxD - np.asarray(mean_P, np.float64)) ** 2, axis=1)
    assert abs(dev_R.mean() - float(var)) < EXACT_SE * dev_R.std() / np.sqrt(r)


def test_sgd_risk_curve_matches_simulated_sgd():
    task = _task(dim=3, shift=(0.0, 1.0))
    p, w, q = jnp.asarray([0.7, 0.3]), jnp.asarray([0.6, 2.0]), jnp.asarray([0.5, 0.5])
    lr, batch_size, steps, every = 0.15, 2, 120, 20
    closed = np.asarray(md.sgd_risk_curve(task, p, w, q, lr=lr, batch_size=batch_size, steps=steps, every=every))
    mixture = Mixture((1, 1), p, w)

    def run(key):
        def step(theta, s):
            batch = task.online_batch(mixture, key, s, batch_size)
            g = jax.grad(lambda th: reduce_losses(md.loss_fn({"w": th}, batch), batch))(theta)
            theta = theta - lr * g
            return theta, md.target_risk(task, theta, q)
        _, risk_T = jax.lax.scan(step, jnp.zeros(task.dim), jnp.arange(steps))
        return risk_T

    risk_RxT = np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(5), 8_000)), np.float64)
    sim = risk_RxT[:, every - 1::every]
    se = sim.std(0) / np.sqrt(sim.shape[0])
    assert np.all(np.abs(sim.mean(0) - closed[1:]) < EXACT_SE * se), (sim.mean(0), closed[1:], se)
    np.testing.assert_allclose(closed[0], md.target_risk(task, jnp.zeros(task.dim), q), rtol=1e-6)
    # late in training the mean iterate sits at the product's fixed point (not at q's optimum)
    long = md.sgd_risk_curve(task, p, w, q, lr=lr, batch_size=10_000, steps=3000, every=3000)
    theta_inf = md.fixed_point(task, md.product_weights(p, w))
    np.testing.assert_allclose(long[-1], md.target_risk(task, theta_inf, q), rtol=2e-3)


def test_weighted_least_squares_risk_and_gap_match_monte_carlo():
    """Leading order in 1/n: agree within 4 SE + 10% of the predicted excess (O(1/n^2) remainder)."""
    task = _task(dim=3, shift=(0.0, 0.7))
    n_K, a_K, q_K = (600, 150), jnp.asarray([0.35, 0.65]), jnp.asarray([0.5, 0.5])
    pred = {k: float(v) for k, v in md.erm_risk(task, a_K, n_K, q_K).items()}

    def one(key):
        pool = task.sample_pool(key, n_K)
        theta = md.weighted_least_squares(pool["x"], pool["y"], pool["domain"], a_K)
        train = md.weighted_objective(theta, pool["x"], pool["y"], pool["domain"], a_K)
        cov, w_star, s = task.arrays()
        delta = theta[None] - w_star
        pop = 0.5 * jnp.sum(a_K * (jnp.einsum("ki,kij,kj->k", delta, cov, delta) + s ** 2))
        return md.target_risk(task, theta, q_K), pop - train

    risk_R, gap_R = (np.asarray(v, np.float64)
                     for v in jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), 10_000)))
    excess_R = risk_R - pred["risk_inf"]
    excess = pred["bias_term"] + pred["variance_term"]
    assert abs(excess_R.mean() - excess) < 4 * excess_R.std() / np.sqrt(excess_R.size) + 0.1 * excess
    assert abs(gap_R.mean() - pred["gap"]) < 4 * gap_R.std() / np.sqrt(gap_R.size) + 0.1 * pred["gap"]
    assert pred["variance_term"] > 0 and pred["gap"] > 0


def test_optimal_split_and_inverse_variance_weighting():
    task = _task(dim=3, shift=(0.0, 0.8, 0.5))
    a = jnp.asarray([0.2, 0.5, 0.3])
    theta_inf = md.fixed_point(task, a)
    p_opt, w_opt = md.optimal_split(task, a)
    np.testing.assert_allclose(p_opt * w_opt, a, rtol=1e-5)
    best = float(md.gradient_variance(task, theta_inf, p_opt, w_opt, 1))
    p_SxK = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(3), size=200), jnp.float32)
    others = jax.jit(jax.vmap(lambda p: md.gradient_variance(task, theta_inf, p, a / p, 1)))(p_SxK)
    assert np.all(np.asarray(others) >= best * (1 - 1e-5))
    # shared teacher, same covariance: the variance term is smallest at a ∝ n / sigma^2
    shared = md.MultiDomainTask(np.stack([np.eye(2)] * 2), np.ones((2, 2)), np.array([0.5, 1.5]))
    n_K = (100, 400)
    grid = np.linspace(0.02, 0.98, 97)
    var = jax.jit(jax.vmap(lambda g: md.erm_risk(shared, jnp.stack([g, 1 - g]), n_K, jnp.ones(2))["variance_term"]))(
        jnp.asarray(grid, jnp.float32))
    ivw = (100 / 0.25) / (100 / 0.25 + 400 / 2.25)
    assert abs(grid[int(np.argmin(var))] - ivw) < 0.011


def test_importance_split_minimizes_variance_and_pool_moments_match_numpy():
    rng = np.random.default_rng(3)
    a = np.array([0.2, 0.5, 0.3])
    m = np.array([4.0, 0.5, 9.0])
    p, w = md.importance_split(a, m)
    np.testing.assert_allclose(np.asarray(p * w), a, rtol=1e-6)
    # sum_k a_k^2 m_k / p_k over random points of the simplex never goes below the split's value
    best = float(np.sum(a ** 2 * m / np.asarray(p)))
    q = rng.dirichlet(np.ones(3), size=20000)
    assert np.min(np.sum(a ** 2 * m / q, axis=1)) >= best * (1 - 1e-6)
    # the closed-form value (sum_k a_k sqrt(m_k))^2
    np.testing.assert_allclose(best, np.sum(a * np.sqrt(m)) ** 2, rtol=1e-5)

    g = rng.standard_normal((50, 7))
    dom = rng.integers(0, 3, 50)
    ref = [np.mean(np.sum(g[dom == k] ** 2, axis=1)) for k in range(3)]
    np.testing.assert_allclose(np.asarray(md.pool_domain_moments(jnp.asarray(g), jnp.asarray(dom), 3)), ref, rtol=1e-5)


def test_teacher_domains_match_their_definition():
    t = md.make_teacher_domains(seed=1, dim=5, hidden=7, noise=(0.5, 0.0), shift=(0.0, 0.3))
    np.testing.assert_allclose(t.w_KxHxD[0], np.random.default_rng(1).standard_normal((7, 5)))  # domain 0 = shared
    batch = t.sample_pool(jax.random.PRNGKey(0), (300, 200))
    x, dom = np.asarray(batch["x"], np.float64), np.asarray(batch["domain"])
    f = np.array([t.v_KxH[k] @ np.tanh(t.w_KxHxD[k] @ xi / np.sqrt(5)) / np.sqrt(7) for xi, k in zip(x, dom)])
    np.testing.assert_allclose(np.asarray(batch["f"]), f, atol=1e-5)
    np.testing.assert_array_equal(dom, np.repeat([0, 1], [300, 200]))
    resid = np.asarray(batch["y"]) - f
    # noiseless domain: y is the float32 teacher, f its float64 value; error budget 8 eps of the sum of |terms|
    # |v| (|tanh| + |W| |x| / sqrt(D)) / sqrt(H) per point (observed <= 0.6 eps; sigma_0 = 0.5 noise: ~1e5 x it)
    w_BxHxD, v_BxH = t.w_KxHxD[dom], t.v_KxH[dom]
    terms_BxH = np.abs(np.tanh(np.einsum("bhd,bd->bh", w_BxHxD, x) / np.sqrt(5))) + \
        np.einsum("bhd,bd->bh", np.abs(w_BxHxD), np.abs(x)) / np.sqrt(5)
    scale_B = np.einsum("bh,bh->b", np.abs(v_BxH), terms_BxH) / np.sqrt(7)
    quiet = dom == 1
    assert np.all(np.abs(resid[quiet]) <= 8 * np.finfo(np.float32).eps * scale_B[quiet]), \
        (np.abs(resid[quiet]) / scale_B[quiet]).max()
    assert 0.4 < resid[dom == 0].std() < 0.6                                  # sigma_0 = 0.5 (300 draws)
    assert np.abs(x.mean()) < 0.1 and 0.9 < x.std() < 1.1


def test_online_examples_do_not_reuse_the_samplers_keys():
    """The examples' key is a stream of its own, never one the Mixture draws its domains or items with
    (fold_in(fold_in(key, step), 1) equals the item key split(fold_in(key, step))[1] in JAX)."""
    from lsb_jax.data import samplers

    key, step = jax.random.key(3), 7
    used = {tuple(np.asarray(jax.random.key_data(k)).tolist())
            for k in jax.random.split(samplers._step_key(key, step))}
    examples = jax.random.fold_in(jax.random.fold_in(key, step), md._EXAMPLES)
    assert tuple(np.asarray(jax.random.key_data(examples)).tolist()) not in used
