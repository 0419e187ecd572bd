"""sweeps/mixing: members, tail means, gradient statistics and the ERM Monte Carlo against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import analysis
from lsb_jax.sweeps import mixing
from lsb_jax.tasks import multidomain as md


def _enumerated_variance(g_NxP, domain_N, p1, a1, batch_size):
    """Minibatch gradient variance by enumerating every single draw (k ~ p, i uniform in k, weight a_k/p_k)."""
    p = np.array([1 - p1, p1], np.float64)
    w = np.array([1 - a1, a1], np.float64) / p
    n = np.bincount(domain_N, minlength=2)
    prob_N = p[domain_N] / n[domain_N]
    draw_NxP = w[domain_N][:, None] * g_NxP
    mean_P = prob_N @ draw_NxP
    return (prob_N @ np.sum(draw_NxP ** 2, 1) - mean_P @ mean_P) / batch_size


def _linear_pool(rng, n0=5, n1=3, d=3):
    x = rng.standard_normal((n0 + n1, d))
    return {"x": x.astype(np.float32), "y": rng.standard_normal(n0 + n1).astype(np.float32),
            "domain": np.r_[np.zeros(n0, np.int32), np.ones(n1, np.int32)]}


def test_members_are_seed_major_with_common_keys():
    configs = [(0.2, 0.3), (0.5, 0.5), (0.7, 0.1)]
    members = mixing.mixing_members(3, 2, configs)
    assert members.size == 6
    np.testing.assert_array_equal(np.asarray(members.hparams["p1"]), np.float32([0.2, 0.5, 0.7] * 2))
    np.testing.assert_array_equal(np.asarray(members.hparams["a1"]), np.float32([0.3, 0.5, 0.1] * 2))
    keys = np.asarray(members.keys)
    assert (keys[:3] == keys[0]).all() and (keys[3:] == keys[3]).all() and not (keys[0] == keys[3]).all()
    assert mixing.grid_configs([1, 2], [10, 20]) == [(1, 10), (2, 10), (1, 20), (2, 20)]
    np.testing.assert_array_equal(members.hparams["base"], [0] * 6)
    np.testing.assert_array_equal(mixing.mixing_members((3, 4), 2, configs).hparams["base"], [0] * 6 + [1] * 6)


def test_each_base_seed_draws_its_own_pool():
    task = md.make_task(0, 3, (1.0, 0.2), decay=0.5, shift=(0.0, 0.5), rotate=True)
    pools = mixing.base_pools(task, 7, (5, 3), (0, 2))
    assert pools["x"].shape == (2, 8, 3)
    for r, b in enumerate((0, 2)):
        want = task.sample_pool(jax.random.fold_in(jax.random.PRNGKey(7), b), (5, 3))
        for k in want:
            np.testing.assert_array_equal(np.asarray(mixing.pool_of(pools, r)[k]), np.asarray(want[k]))
    assert not np.allclose(pools["x"][0], pools["x"][1])


def test_tail_mean_and_points():
    assert mixing.tail_points(0.25, 3000, 100) == 8 and mixing.tail_points(0.001, 100, 10) == 1
    v = np.arange(5 * 6, dtype=np.float64).reshape(5, 6)
    np.testing.assert_allclose(mixing.tail_mean(v, 2, 2), v[-2:].mean(0).reshape(2, 3))


def _stack(*pools):
    return {k: np.stack([p[k] for p in pools]) for k in pools[0]}


def test_linear_pool_grad_variance_matches_enumeration():
    """Each member on its own base seed's pool (members: 2 base seeds x 1 seed x 2 configs)."""
    rng = np.random.default_rng(0)
    pools = [_linear_pool(rng), _linear_pool(rng)]
    configs = [(0.3, 0.6), (0.8, 0.2)]
    members = mixing.mixing_members((0, 1), 1, configs)
    w_MxD = rng.standard_normal((4, 3)).astype(np.float32)
    got = mixing.linear_pool_grad_variance({"w": jnp.asarray(w_MxD)}, members, _stack(*pools), batch_size=4)
    want = []
    for m in range(4):
        pool, (p1, a1) = pools[m // 2], np.float32(configs[m % 2])
        x, y = pool["x"].astype(np.float64), pool["y"].astype(np.float64)
        want.append(_enumerated_variance(x * (x @ w_MxD[m] - y)[:, None], pool["domain"], p1, a1, 4))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_per_example_grads_arm_variance_and_moments_match_numpy_backprop():
    rng = np.random.default_rng(1)
    pool = _linear_pool(rng, n0=4, n1=3, d=2)
    params_M = {"layers_0": {"kernel": jnp.asarray(rng.standard_normal((4, 2, 3)), jnp.float32),
                             "bias": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)},
                "layers_1": {"kernel": jnp.asarray(rng.standard_normal((4, 3, 1)), jnp.float32),
                             "bias": jnp.asarray(rng.standard_normal((4, 1)), jnp.float32)}}

    def numpy_grads(m):  # backprop of 0.5 (tanh(x W1 + b1) W2 + b2 - y)^2 per example, in ravel_pytree order
        w1, b1 = (np.asarray(params_M["layers_0"][k][m], np.float64) for k in ("kernel", "bias"))
        w2, b2 = (np.asarray(params_M["layers_1"][k][m], np.float64) for k in ("kernel", "bias"))
        x = pool["x"].astype(np.float64)
        h = np.tanh(x @ w1 + b1)
        r = (h @ w2 + b2)[:, 0] - pool["y"]
        dz = r[:, None] * w2[:, 0] * (1 - h ** 2)
        return np.concatenate([dz, (x[:, :, None] * dz[:, None, :]).reshape(len(x), -1), r[:, None],
                               h * r[:, None]], 1)

    grads = mixing.per_example_grads(mixing.mlp_loss, pool)
    for m in range(4):
        np.testing.assert_allclose(np.asarray(grads(mixing.member_params(params_M, m))), numpy_grads(m),
                                   rtol=1e-4, atol=1e-5)
    configs = [(0.4, 0.5), (0.1, 0.7)]
    members = mixing.mixing_members((0, 1), 1, configs)           # base seed 1's members on a second pool
    other = dict(pool, y=pool["y"][::-1].copy())
    grads_other = mixing.per_example_grads(mixing.mlp_loss, other)
    got_SxC = mixing.arm_gradient_variance(params_M, members, configs, [grads, grads_other], _stack(pool, other),
                                           batch_size=3)
    for m in range(4):
        s, i = divmod(m, 2)
        p1, a1 = np.float32(configs[i])
        g = numpy_grads(m) if s == 0 else np.asarray(grads_other(mixing.member_params(params_M, m)))
        np.testing.assert_allclose(got_SxC[s, i], _enumerated_variance(g, pool["domain"], p1, a1, 3), rtol=1e-4)
    assert not np.allclose(got_SxC[1], mixing.arm_gradient_variance(params_M, members, configs, [grads, grads],
                                                                    _stack(pool, pool), batch_size=3)[1])
    moments = mixing.domain_moments(params_M, [1, 3], grads, pool["domain"])
    sq = [np.sum(numpy_grads(m) ** 2, 1) for m in (1, 3)]
    want = np.mean([[q[pool["domain"] == k].mean() for k in (0, 1)] for q in sq], 0)
    np.testing.assert_allclose(moments, want, rtol=1e-4)


def test_erm_monte_carlo_matches_numpy_weighted_least_squares():
    task = md.make_task(0, 3, (1.0, 0.2), decay=0.5, shift=(0.0, 0.5), rotate=True)
    sizes, q = (40, 10), np.array([0.5, 0.5])
    key, a_line = jax.random.PRNGKey(7), np.float32([0.2, 0.7])
    risk_RxA, gap_RxA = mixing.erm_monte_carlo(task, key, 2, a_line, sizes, jnp.asarray(q, jnp.float32), 0.1)
    cov, w_star, s = (np.asarray(v, np.float64) for v in task.arrays())
    for r, k in enumerate(jax.random.split(key, 2)):
        fresh = {n: np.asarray(v) for n, v in task.sample_pool(k, sizes).items()}
        x, y, dom = fresh["x"].astype(np.float64), fresh["y"].astype(np.float64), fresh["domain"]
        for j, a1 in enumerate(a_line):
            a = np.array([1 - a1, a1], np.float64)
            c = a[dom] / np.bincount(dom)[dom]
            theta = np.linalg.lstsq(np.sqrt(c)[:, None] * x, np.sqrt(c) * y, rcond=None)[0]
            d = theta[None] - w_star
            per_K = np.einsum("ki,kij,kj->k", d, cov, d) + s ** 2
            train = np.sum(c * 0.5 * (x @ theta - y) ** 2)
            np.testing.assert_allclose(risk_RxA[r, j], 0.5 * q @ per_K - 0.1, rtol=2e-3)
            np.testing.assert_allclose(gap_RxA[r, j], 0.5 * a @ per_K - train, rtol=2e-2, atol=1e-4)


def test_standard_error_is_scipy_sem():
    from scipy.stats import sem
    x = np.random.default_rng(2).standard_normal((5, 3))
    np.testing.assert_allclose(analysis.standard_error(x), sem(x, axis=0, ddof=1))
    assert np.isnan(analysis.standard_error(x[:1])).all()
