"""Learning times and entropy: the definitions against hand computations and scipy; Theorem
4.4's inequality (SAM's entropy > GD's) inside its conditions, and what happens outside them."""

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from lsb_jax.theory import learning_times, mlsa, odes, sweeps


def test_crossing_times_interpolate_and_mark_unlearned():
    steps = np.array([0, 10, 20, 30])
    vals = np.array([[0.0, 0.0], [0.2, 0.1], [0.8, 0.2], [1.0, 0.3]])
    t = learning_times.crossing_times(steps, vals, np.array([1.0, 1.0]), fraction=0.5)
    np.testing.assert_allclose(t[0], 15.0)     # 0.5 between 0.2 (step 10) and 0.8 (step 20)
    assert np.isnan(t[1])
    stacked = learning_times.crossing_times(steps, np.stack([vals, 2 * vals]), np.array([1.0, 0.4]))
    np.testing.assert_allclose(stacked[1], [10 + 10 * 0.1 / 1.2, 10.0])  # 0.4 -> 1.6 crosses 0.5; 0.2 hit exactly


def test_entropy_definition():
    t = np.array([1.0, 3.0, 6.0])
    np.testing.assert_allclose(learning_times.entropy(t), scipy_entropy(t / t.sum()))
    np.testing.assert_allclose(learning_times.entropy(np.full(5, 7.0)), np.log(5))
    np.testing.assert_allclose(learning_times.entropy(np.array([1.0, np.nan, 3.0])), scipy_entropy([0.25, 0.75]))
    np.testing.assert_allclose(learning_times.normalized_entropy(np.full(4, 2.0)), 1.0)
    # compared across arms and seeds: only over every feature (an unlearned one makes it NaN)
    rows = np.array([[1.0, 3.0, 6.0], [1.0, np.nan, 3.0]])
    got = learning_times.complete_entropy(rows)
    np.testing.assert_allclose(got[0], scipy_entropy([0.1, 0.3, 0.6]))
    assert np.isnan(got[1])


def test_data_lever_raises_gd_entropy_in_closed_form():
    """omega_i ~ lam_i^-gamma speeds up late features (kappa = lam^2 omega): the closed-form GD
    entropy increases with gamma, and m* does not change for infinite context."""
    lam = mlsa.power_spectrum(5, 1.0, 4.0)
    hs = [learning_times.entropy(odes.learning_time(lam, 0.05, omega=mlsa.reweighted_omega(lam, g)))
          for g in (0, 0.5, 1, 1.5)]
    assert all(b > a for a, b in zip(hs, hs[1:])), hs
    np.testing.assert_allclose(mlsa.optimal_features(mlsa.spectrum(lam, mlsa.reweighted_omega(lam, 1.0))), 1 / lam,
                               rtol=1e-6)
    np.testing.assert_allclose(mlsa.reweighted_omega(lam, 1.0).mean(), 1.0)


@pytest.fixture(scope="module")
def grids():
    specs = [mlsa.spectrum(mlsa.power_spectrum(4, d, 4.0)) for d in (0.5, 1.5)]
    common = dict(rhos=(0.0, 0.02, 0.04, 0.1), seeds=2, heads=4, init=mlsa.Init("ansatz", 0.05, 0.01), lr=0.02,
                  num_steps=6000, record_every=10)
    return {norm: sweeps.sweep(specs, norm=norm, **common) for norm in ("global", "per_head")}


def test_theorem_4_4_inside_its_conditions(grids):
    """Ansatz, small init, rho < sqrt3 * init: every feature is learned and SAM (global norm) has a
    higher learning-time entropy than GD for every spectrum, radius and seed (margin > 0.005)."""
    g = grids["global"]
    assert np.isfinite(g.times[:, :3]).all()
    gain = g.entropy[:, 1:3] - g.entropy[:, :1]
    assert (gain > 0.005).all(), gain


def test_outside_the_conditions(grids):
    # per-head normalization shifts every feature alike: the entropy moves by less than 0.03
    g = grids["per_head"]
    assert np.abs(g.entropy[:, 1:3] - g.entropy[:, :1]).max() < 0.03
    # rho >= sqrt3 * init scale, per-head: each factor is pushed below zero and no feature is learned
    assert np.isnan(g.times[:, 3]).all()
    # the global norm gives each head only its share of rho, so the same rho still learns every feature
    assert np.isfinite(grids["global"].times[:, 3]).all()


def test_first_crossing_is_the_inverse_interpolation_of_the_first_bracketing_segment():
    x = np.array([0.0, 0.25, 0.5, 1.0, 1.5])
    h = np.array([1.0, 1.1, 1.3, 1.35, 1.6])                      # increasing: the inverse of np.interp
    for level in (1.0, 1.05, 1.2, 1.34, 1.6):
        assert learning_times.first_crossing(x, h, level) == pytest.approx(np.interp(level, h, x))
    assert np.isnan(learning_times.first_crossing(x, h, 1.7))
    # not monotone: the first segment that brackets the level wins (0.25 + 0.25 * (1.2 - 1.1) / (1.3 - 1.1)),
    # not the later ones through 1.2 (at 0.5 + 0.5 * 2/3 and on the last segment)
    assert learning_times.first_crossing(x, [1.0, 1.1, 1.3, 1.15, 1.4], 1.2) == pytest.approx(0.375)
    assert learning_times.first_crossing([0, 1, 2], [1.0, 1.0, 2.0], 1.0) == 1.0   # flat segments skipped


def test_in_order_needs_every_feature_learned_in_index_order():
    t = np.array([[1.0, 2.0, 5.0], [1.0, 1.0, 5.0], [2.0, 1.0, 5.0], [1.0, 2.0, np.nan]])
    np.testing.assert_array_equal(learning_times.in_order(t), [True, False, False, False])
