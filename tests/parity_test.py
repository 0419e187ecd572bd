"""lsb_jax.tasks.parity: inputs, parity/staircase targets and metrics against direct numpy definitions;
the data levers draw what they claim; a tiny MLP learns a 2-sparse parity."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsb_jax.models.mlp import init_mlp
from lsb_jax.optim import OptimConfig
from lsb_jax.sweeps import parity as S
from lsb_jax.sweeps.parity import ParityConfig
from lsb_jax.tasks import parity as P


def _np_signs(bits, dim):
    return np.array([[1.0 if (int(u) >> i) & 1 else -1.0 for i in range(dim)] for u in bits])


def _np_staircase(x, k, eps):
    """chi_k + eps * sum_{j=1}^{k-1} chi_j by explicit loops; chi_j = (-1)^(# of -1 among the first j)."""
    out = []
    for row in x:
        chi = [(-1.0) ** int(np.sum(row[:j] < 0)) for j in range(1, k + 1)]
        out.append(chi[k - 1] + eps * sum(chi[: k - 1]))
    return np.array(out)


def test_bits_to_signs_matches_numpy_bit_extraction():
    bits = np.array([0, 1, 2**31 + 5, 0xFFFFFFFF, 123456789], np.uint32)
    got = np.asarray(P.bits_to_signs(jnp.asarray(bits), 32))
    np.testing.assert_array_equal(got, _np_signs(bits, 32))
    assert got.dtype == np.float32
    with pytest.raises(ValueError, match="dim"):
        P.bits_to_signs(jnp.asarray(bits), 33)


def test_sample_signs_is_uniform_on_the_hypercube():
    x = np.asarray(P.sample_signs(jax.random.PRNGKey(0), 64_000, 3))
    assert set(np.unique(x)) == {-1.0, 1.0}
    codes = ((x > 0) * np.array([1, 2, 4])).sum(1)
    counts = np.bincount(codes, minlength=8)
    chi2 = ((counts - 8000) ** 2 / 8000).sum()
    assert chi2 < 24.3  # chi-square, 7 dof, p = 0.001


@pytest.mark.parametrize("k", [1, 3, 6])
def test_parity_labels_match_the_direct_definition(k):
    x = np.asarray(P.sample_signs(jax.random.PRNGKey(k), 200, 20))
    want = np.array([(-1.0) ** int(np.sum(row[:k] < 0)) for row in x])
    np.testing.assert_array_equal(np.asarray(P.parity(jnp.asarray(x), k)), want)


def test_parity_of_all_points_is_balanced_and_orthogonal_to_lower_monomials():
    x = np.array(list(itertools.product([-1.0, 1.0], repeat=6)))
    chi6 = np.asarray(P.parity(jnp.asarray(x), 6))
    assert chi6.sum() == 0
    for j in range(1, 6):
        assert np.dot(chi6, np.asarray(P.parity(jnp.asarray(x), j))) == 0


@pytest.mark.parametrize("k,eps", [(6, 0.0), (6, 0.1), (4, 0.3), (1, 0.5)])
def test_staircase_matches_the_direct_definition(k, eps):
    x = np.asarray(P.sample_signs(jax.random.PRNGKey(1), 300, 20))
    np.testing.assert_allclose(np.asarray(P.staircase(jnp.asarray(x), k, eps)), _np_staircase(x, k, eps), atol=1e-6)


def test_evaluate_and_losses_match_numpy_forward():
    params = init_mlp(jax.random.PRNGKey(0), (8, 5, 5, 1))
    x = np.asarray(P.sample_signs(jax.random.PRNGKey(2), 64, 8))
    y = np.asarray(P.parity(jnp.asarray(x), 2))
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    h = np.maximum(x @ p["layers_0"]["kernel"] + p["layers_0"]["bias"], 0)
    h = np.maximum(h @ p["layers_1"]["kernel"] + p["layers_1"]["bias"], 0)
    f = (h @ p["layers_2"]["kernel"] + p["layers_2"]["bias"])[:, 0]
    np.testing.assert_allclose(np.asarray(P.mse_losses(params, {"x": x, "y": y})), (f - y) ** 2, rtol=1e-5, atol=1e-6)
    m = P.evaluate(params, jnp.asarray(x), jnp.asarray(y))
    assert float(m["acc"]) == pytest.approx(np.mean(np.sign(f) == y))
    assert float(m["mse"]) == pytest.approx(np.mean((f - y) ** 2), rel=1e-5)


def _points(cfg, arm, steps, key=jax.random.PRNGKey(3)):
    sample = jax.jit(P.batch_sampler(cfg, arm))
    return [np.asarray(sample(key, jnp.int32(s))["x"]) for s in range(steps)]


def test_subsample_visits_round_rho_n_points_once_per_epoch():
    cfg = ParityConfig(dim=32, k=3, batch_size=4, steps=50)   # pool of 200 points
    xs = _points(cfg, P.Lever("subsample", rho=0.1), 10)     # K = 20 points, 5 steps per epoch
    rows = [tuple(r) for x in xs for r in x]
    assert len(set(rows)) == 20
    first, second = rows[:20], rows[20:]
    assert len(set(first)) == 20 and set(second) == set(first) and second != first  # a fresh order per epoch


def test_online_points_are_fresh_and_zipf_batches_are_fixed_blocks():
    cfg = ParityConfig(dim=32, k=3, batch_size=4, steps=64)
    online = _points(cfg, P.Lever(), 20)
    assert len({tuple(r) for x in online for r in x}) == 80
    zipf = _points(cfg, P.Lever("zipf", alpha=3.0), 200)   # p(top batch) = 1/zeta(3) ~ 0.83
    batches = [tuple(map(tuple, x)) for x in zipf]
    top, count = max(((b, batches.count(b)) for b in set(batches)), key=lambda t: t[1])
    assert 0.7 < count / 200 < 0.95
    assert len(set(top)) == 4   # a batch is B distinct pool points


def test_online_and_pool_points_are_slices_of_one_long_jax_draw():
    """Online step t = row t of jax.random.bits(data_key, (steps, B)); pool point i = element i of
    jax.random.bits(pool_key, (N,)): JAX's own draws, signs read off by numpy."""
    cfg = ParityConfig(dim=20, k=3, batch_size=4, steps=16)
    key = jax.random.PRNGKey(11)
    online = _points(cfg, P.Lever(), 16, key)
    ref = np.asarray(jax.random.bits(key, (16, 4), jnp.uint32))
    for t in range(16):
        np.testing.assert_array_equal(online[t], _np_signs(ref[t], 20))
    idx = jnp.asarray([0, 5, 63, 17], jnp.int32)
    pool = np.asarray(jax.jit(P.pool_points, static_argnums=2)(P.pool_key(key), idx, 20))
    ref_pool = np.asarray(jax.random.bits(P.pool_key(key), (64,), jnp.uint32))[np.asarray(idx)]
    np.testing.assert_array_equal(pool, _np_signs(ref_pool, 20))


def test_curriculum_switches_from_the_small_set_to_the_full_pool():
    cfg = ParityConfig(dim=32, k=3, batch_size=4, steps=100)
    xs = _points(cfg, P.Lever("curriculum", rho=0.02, switch=10), 30)   # K = 8 points
    early = {tuple(r) for x in xs[:10] for r in x}
    late = {tuple(r) for x in xs[10:] for r in x}
    assert len(early) == 8 and len(late) == 80 and len(late - early) > 70


def test_staircase_arm_trains_on_the_staircase_target():
    cfg = ParityConfig(dim=20, k=4, batch_size=16, steps=10)
    batch = P.batch_sampler(cfg, P.Lever(eps=0.2))(jax.random.PRNGKey(0), 3)
    np.testing.assert_allclose(np.asarray(batch["y"]), _np_staircase(np.asarray(batch["x"]), 4, 0.2), atol=1e-6)


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="rho"):
        P.Lever("subsample", rho=0.0)
    with pytest.raises(ValueError, match="sampler"):
        P.Lever("bogus")
    with pytest.raises(ValueError, match="k <= dim"):
        ParityConfig(dim=4, k=6)
    with pytest.raises(ValueError, match="solve_acc"):
        ParityConfig(solve_acc=0.3)


def test_vmapped_seeds_learn_a_two_sparse_parity():
    cfg = ParityConfig(dim=8, k=2, hidden=(32, 32), steps=600, seeds=3, base_seeds=(0,), test_size=512,
                       eval_every=100, chunk_size=300, optim=OptimConfig(name="sgd", lr=0.1))
    res = S.run_sweep(cfg, None, [S.arm("online")], "")
    acc = np.asarray([c for c in res["curves"]["online"]["test_acc_mean"]])
    assert acc.shape == (7,) and acc[0] < 0.75           # chance at init (mean over the 3 seeds)
    s = res["per_arm"]["online"]
    assert s["final_test_acc_mean"] >= 0.99 and s["solved_fraction"] == 1.0   # x1 x2 learned by every seed
    assert s["steps_to_solve_rmean"] <= 600 and s["steps_to_solve_reached"] == 3
