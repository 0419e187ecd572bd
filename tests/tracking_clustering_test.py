"""k-means on trajectories against scikit-learn; hard cluster = higher loss; upsampling counts."""

import numpy as np
import pytest

from lsb_jax.tracking import hard_mask, kmeans, normalize, selection_counts, upsample_counts


def planted(n_easy=700, n_hard=300, k=6, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.linspace(0, 1, k)
    easy = 2.0 * np.exp(-4 * steps) + 0.1 * rng.normal(size=(n_easy, k))
    hard = 2.0 * np.exp(-0.5 * steps) + 0.1 * rng.normal(size=(n_hard, k))
    x = np.concatenate([easy, hard])
    perm = rng.permutation(len(x))
    return x[perm], (np.arange(len(x)) >= n_easy)[perm]


@pytest.mark.parametrize("checkpoints", [6, 32])
def test_kmeans_matches_sklearn_and_finds_the_planted_hard_cluster(checkpoints):
    from lsb_jax.tracking.clustering import OWN_KERNELS_UP_TO
    assert 6 <= OWN_KERNELS_UP_TO < 32      # the two cases compile with each kernel choice
    sklearn = pytest.importorskip("sklearn.cluster")
    x, truth = planted(k=checkpoints)
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


def test_selection_counts_against_scikit_learn():
    KMeans = pytest.importorskip("sklearn.cluster").KMeans
    r = np.random.RandomState(0)
    K = 5
    decay = np.exp(-np.arange(K) / 1.5)
    easy = 2.0 * decay * r.uniform(0.8, 1.2, (30, 1)) + 0.05 * r.randn(30, K)
    hard = 2.0 + 0.1 * r.randn(12, K)
    losses = np.concatenate([easy, hard]).astype(np.float32)
    perm = r.permutation(len(losses))
    losses = losses[perm]
    truth = perm >= 30

    def sk_hard(x):
        labels = KMeans(2, n_init=10, random_state=0).fit_predict(x)
        means = [losses[labels == c].mean() for c in range(2)]
        return labels == int(np.argmax(means))

    counts, mask = selection_counts(losses, "hard", factor=3)
    np.testing.assert_array_equal(mask, sk_hard(losses))
    np.testing.assert_array_equal(mask, truth)
    np.testing.assert_array_equal(counts, np.where(truth, 3, 1))
    np.testing.assert_array_equal(selection_counts(losses, "easy")[1], ~sk_hard(losses))
    np.testing.assert_array_equal(selection_counts(losses, "final_loss")[1], sk_hard(losses[:, -1:]))
    top = selection_counts(losses, "top_q", q=0.25)[1]
    np.testing.assert_array_equal(np.flatnonzero(top), np.sort(np.argsort(-losses[:, -1])[:round(0.25 * 42)]))
    assert selection_counts(losses, "top_q")[1].sum() == truth.sum()         # matched to the hard cluster
    rand = selection_counts(losses, "random", seed=3)[1]
    assert rand.sum() == truth.sum() and np.array_equal(rand, selection_counts(losses, "random", seed=3)[1])
    assert not np.array_equal(rand, selection_counts(losses, "random", seed=4)[1])
    # draw_seed: another draw of the same size (the hard cluster, seeded by `seed`, sets the size)
    redraw = selection_counts(losses, "random", seed=3, draw_seed=(3, 1))[1]
    assert redraw.sum() == truth.sum() and not np.array_equal(redraw, rand)
    assert np.array_equal(selection_counts(losses, "random", seed=3, draw_seed=3)[1], rand)
    np.testing.assert_array_equal(selection_counts(losses, "uniform")[0], np.ones(42, np.int32))
    # per group: each group's own hard cluster
    groups = np.arange(42) % 2
    grouped = selection_counts(losses, "hard", groups_N=groups)[1]
    for g in (0, 1):
        rows = groups == g
        labels = KMeans(2, n_init=10, random_state=0).fit_predict(losses[rows])
        means = [losses[rows][labels == c].mean() for c in range(2)]
        np.testing.assert_array_equal(grouped[rows], labels == int(np.argmax(means)))
    with pytest.raises(ValueError, match="unknown selection"):
        selection_counts(losses, "hardest")
    with pytest.raises(ValueError, match="NaN"):
        selection_counts(np.full((4, 2), np.nan), "hard")
