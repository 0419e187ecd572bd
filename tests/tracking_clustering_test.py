"""k-means on trajectories against scikit-learn; hard cluster = higher loss; upsampling counts."""

import numpy as np
import pytest

from lsb_jax.tracking import hard_mask, kmeans, normalize, upsample_counts


def planted(n_easy=700, n_hard=300, k=6, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.linspace(0, 1, k)
    easy = 2.0 * np.exp(-4 * steps) + 0.1 * rng.normal(size=(n_easy, k))
    hard = 2.0 * np.exp(-0.5 * steps) + 0.1 * rng.normal(size=(n_hard, k))
    x = np.concatenate([easy, hard])
    perm = rng.permutation(len(x))
    return x[perm], (np.arange(len(x)) >= n_easy)[perm]


def test_kmeans_matches_sklearn_and_finds_the_planted_hard_cluster():
    sklearn = pytest.importorskip("sklearn.cluster")
    x, truth = planted()
    labels, centers, inertia = kmeans(x, 2, n_init=4)
    ref = sklearn.KMeans(2, n_init=4, random_state=0).fit(x)
    np.testing.assert_allclose(inertia, ref.inertia_, rtol=1e-4)
    np.testing.assert_allclose(np.sort(centers[:, -1]), np.sort(ref.cluster_centers_[:, -1]), rtol=1e-4)
    np.testing.assert_array_equal(hard_mask(x, labels), truth)


def test_upsample_counts_and_normalize():
    mask = np.array([True, False, True])
    np.testing.assert_array_equal(upsample_counts(mask, 3), [3, 1, 3])
    with pytest.raises(ValueError):
        upsample_counts(mask, 0)
    x = np.array([[1.0, 0.1], [2.0, 0.5]])
    np.testing.assert_allclose(normalize(x, "final"), [[0.1], [0.5]])
    np.testing.assert_allclose(normalize(x, "log"), np.log(x), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown"):
        normalize(x, "zscore")
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.array([[np.nan], [1.0], [2.0]]), 2)
