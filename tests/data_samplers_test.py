"""Samplers against independent numpy references.

Frequency checks. With n draws and counts c_i, c_i ~ Binomial(n, p_i) under the target p, so
    |c_i / n - p_i| <= Z * sqrt(p_i (1 - p_i) / n),   Z = 5,
fails with probability ~5.7e-7 per item (normal approximation, accurate here: every check keeps
n p_i >~ 70), ~1e-4 over all items of this file. On top, Pearson's chi-square over the items with
p_i > 0 rejects only at p-value < 1e-6. Items with p_i = 0 must never be drawn. Keys are fixed, so
runs are deterministic; the bounds show the checks are not tuned to the seed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lsb_jax.data import (
    Curriculum,
    Epochs,
    Mixture,
    Subset,
    Uniform,
    Weighted,
    Zipf,
    doubling,
    piecewise,
    sample_indices_host,
    samplers,
    subsample_counts,
)

KEY = jax.random.key(2024)
Z = 5.0
NUM_STEPS, BATCH = 400, 500  # 200k draws per frequency check


def draw(sampler, num_steps=NUM_STEPS, batch_size=BATCH, key=KEY, probs_step=0):
    """([S, B] index, [S, B] weight, [N] probs(probs_step)) for steps 0 .. S - 1, one jitted program."""

    def program(steps):
        out = jax.vmap(lambda s: sampler.sample(key, s, batch_size))(steps)
        return out.index, out.weight, sampler.probs(probs_step)

    return tuple(np.asarray(x) for x in jax.jit(program)(jnp.arange(num_steps, dtype=jnp.int32)))


def assert_frequencies(index, p_ref):
    p_ref = np.asarray(p_ref, np.float64)
    p_ref = p_ref / p_ref.sum()
    index = np.asarray(index).reshape(-1)
    n = index.size
    counts = np.bincount(index, minlength=p_ref.size)
    assert counts.size == p_ref.size, "index outside the pool"
    assert np.all(counts[p_ref == 0] == 0), "drew an item of probability 0"
    err = np.abs(counts / n - p_ref)
    bound = Z * np.sqrt(p_ref * (1 - p_ref) / n)
    assert np.all(err <= bound), f"worst item {np.argmax(err - bound)}: err {err.max():.2e}"
    positive = p_ref > 0
    if positive.sum() > 1:
        assert stats.chisquare(counts[positive], n * p_ref[positive]).pvalue > 1e-6


def zipf_ref(order_N, alpha):
    """numpy definition: the item of rank r has probability (r+1)^-alpha / sum_s (s+1)^-alpha."""
    weights = (np.arange(len(order_N)) + 1.0) ** -alpha
    p_N = np.empty(len(order_N))
    p_N[order_N] = weights / weights.sum()
    return p_N


def _assert_order(order_N):
    order_N = np.asarray(order_N)
    np.testing.assert_array_equal(np.sort(order_N), np.arange(order_N.size))
    assert np.mean(order_N == np.arange(order_N.size)) < 0.1  # a shuffled, not the identity, order
    return order_N


# ----------------------------------------------------------------------------- frequencies


def test_uniform_frequencies_and_probs():
    sampler = Uniform(100)
    index, weight, probs_N = draw(sampler)
    assert index.dtype == np.int32 and weight.dtype == np.float32 and np.all(weight == 1)
    assert_frequencies(index, np.ones(100))
    np.testing.assert_allclose(probs_N, np.full(100, 0.01), rtol=1e-6)


def test_subset_frequencies_and_probs():
    sampler = Subset(100, 37, perm_seed=3)
    order_N = _assert_order(sampler.order())
    p_ref = np.zeros(100)
    p_ref[order_N[:37]] = 1 / 37
    index, _, probs_N = draw(sampler, probs_step=5)
    assert_frequencies(index, p_ref)
    np.testing.assert_allclose(probs_N, p_ref, rtol=1e-6)


ALPHAS = np.array([0.0, 0.75, 1.5], np.float32)


def test_zipf_frequencies_over_a_vmapped_alpha_grid():
    """One compiled program vmapped over alpha; also the traced-alpha == per-value check."""
    sample = lambda a, s: Zipf(100, a, perm_seed=1).sample(KEY, s, BATCH).index  # noqa: E731

    def program(alphas, steps):
        index_AxSxB = jax.vmap(jax.vmap(sample, (None, 0)), (0, None))(alphas, steps)
        probs_AxN = jax.vmap(lambda a: Zipf(100, a, perm_seed=1).probs(0))(alphas)
        return index_AxSxB, probs_AxN, sample(float(ALPHAS[2]), 7)  # the last: a Python-float alpha

    index_AxSxB, probs_AxN, per_value = map(
        np.asarray, jax.jit(program)(jnp.asarray(ALPHAS), jnp.arange(NUM_STEPS, dtype=jnp.int32))
    )
    order_N = _assert_order(Zipf(100, 0.0, perm_seed=1).order())
    for alpha, index, probs_N in zip(ALPHAS, index_AxSxB, probs_AxN):
        p_ref = zipf_ref(order_N, alpha)
        assert_frequencies(index, p_ref)
        np.testing.assert_allclose(probs_N, p_ref, rtol=1e-5, atol=1e-8)
        # Independent of the exposed order: sorted frequencies vs sorted (r+1)^-alpha / sum. Sorting
        # is 1-Lipschitz in the sup norm, so the per-item bound with the largest sd carries over.
        f_sorted = np.sort(np.bincount(index.reshape(-1), minlength=100) / index.size)[::-1]
        w = (np.arange(100) + 1.0) ** -alpha
        p_sorted = w / w.sum()
        assert np.max(np.abs(f_sorted - p_sorted)) <= Z * np.sqrt(p_sorted * (1 - p_sorted) / index.size).max()
    # a per-value sampler with a Python-float alpha draws the same batch as the vmapped traced one
    np.testing.assert_array_equal(index_AxSxB[2, 7], per_value)


def test_zipf_large_pool_rank_buckets():
    """N = 2^20 (blocks of 1024 in the two-level inverse CDF): the 64 top ranks one by one, then
    log2 rank buckets [2^j, 2^(j+1)), against the numpy masses; 200k draws."""
    n, alpha = 2**20, 1.0
    sampler = Zipf(n, alpha, perm_seed=9)
    index = draw(sampler, num_steps=100, batch_size=2000)[0].reshape(-1)
    rank_of_item = np.empty(n, np.int64)
    rank_of_item[np.asarray(sampler.order())] = np.arange(n)
    edges = np.r_[np.arange(64), 2 ** np.arange(6, 21)]  # bucket b = [edges[b], edges[b+1])
    bucket_of_rank = np.searchsorted(edges, np.arange(n), side="right") - 1
    w = (np.arange(n) + 1.0) ** -alpha
    p_bucket = np.bincount(bucket_of_rank, weights=w / w.sum())
    assert_frequencies(bucket_of_rank[rank_of_item[index]], p_bucket)


def test_zipf_scheduled_alpha_probs():
    sampler = Zipf(50, piecewise([10], [0.0, 1.2]), perm_seed=2)
    order_N = np.asarray(sampler.order())
    probs_2xN = jax.jit(jax.vmap(sampler.probs))(jnp.array([9, 10]))
    np.testing.assert_allclose(probs_2xN[0], np.full(50, 0.02), rtol=1e-5)
    np.testing.assert_allclose(probs_2xN[1], zipf_ref(order_N, 1.2), rtol=1e-5)


def test_weighted_frequencies_with_zeros_and_upsampling():
    rng = np.random.default_rng(0)
    probs_N = rng.uniform(0.5, 1.0, 60)
    probs_N[[3, 17, 40]] = 0.0  # dropped
    probs_N[[5, 6]] *= 4.0  # upsampled
    sampler = Weighted(probs_N)
    assert sampler.num_items == 60
    index, _, probs_out = draw(sampler)
    assert_frequencies(index, probs_N)
    np.testing.assert_allclose(probs_out, probs_N / probs_N.sum(), rtol=1e-5)


def test_weighted_point_mass_at_either_end_with_traced_probs():
    fn = lambda p: Weighted(p).sample(KEY, 3, 1024).index  # noqa: E731
    index = np.asarray(jax.jit(jax.vmap(fn))(jnp.eye(10)[jnp.array([0, 9])]))
    assert np.all(index[0] == 0) and np.all(index[1] == 9)


# ----------------------------------------------------------------------------- epochs


@pytest.mark.parametrize("batch_size", [7, "2E+3"])
def test_epochs_each_epoch_holds_each_item_counts_times(batch_size):
    counts_N = np.random.default_rng(1).integers(0, 4, size=40)  # 0 drops, 2-3 upsample
    sampler = Epochs(counts_N, perm_seed=4)
    e = int(counts_N.sum())
    assert sampler.epoch_size == e
    b = 2 * e + 3 if batch_size == "2E+3" else batch_size
    num_epochs = 5
    num_steps = -(-num_epochs * e // b) + 1
    stream, _, probs_N = draw(sampler, num_steps=num_steps, batch_size=b)
    stream = stream.reshape(-1)
    epochs = [stream[i * e : (i + 1) * e] for i in range(num_epochs)]
    for chunk in epochs:
        np.testing.assert_array_equal(np.bincount(chunk, minlength=40), counts_N)
    for a, c in zip(epochs, epochs[1:]):
        assert np.mean(a != c) > 0.5  # a fresh order every epoch
    np.testing.assert_allclose(probs_N, counts_N / e, rtol=1e-6)


def test_epochs_position_arithmetic_does_not_overflow():
    small = Epochs(np.array([1000]))  # E * B + B < 2^32: exact for every int32 step
    for step in (0, 1, 12345, 2**31 - 1):
        epoch, offset = small.positions(step, 512)
        t = step * 512 + np.arange(512)
        np.testing.assert_array_equal(epoch, t // 1000)
        np.testing.assert_array_equal(offset, t % 1000)
    big = Epochs(np.array([2**29, 2**29]))  # E * B >= 2^32: exact while step * B < 2^32
    for step in (3, 2**28, 2**29 - 1):
        epoch, offset = big.positions(step, 8)
        t = step * 8 + np.arange(8)
        np.testing.assert_array_equal(epoch, t // 2**30)
        np.testing.assert_array_equal(offset, t % 2**30)
    assert set(np.asarray(jax.jit(big.sample, static_argnums=2)(KEY, 2**28, 8).index)) <= {0, 1}


def test_epochs_subsample_matches_subset_items():
    sampler = Epochs.subsample(1000, 0.02, seed=5)
    chosen = np.flatnonzero(sampler.counts.array)
    assert chosen.size == 20 and sampler.epoch_size == 20
    np.testing.assert_array_equal(np.sort(np.asarray(Subset(1000, 20, perm_seed=5).order())[:20]), chosen)
    np.testing.assert_array_equal(subsample_counts(1000, 20, seed=5), sampler.counts.array)
    # 1/rho = 50 epochs of the subset see the same number of points as one epoch of the whole.
    stream = draw(sampler, num_steps=50, batch_size=20)[0]
    assert set(np.unique(stream)) == set(chosen)
    np.testing.assert_array_equal(np.bincount(stream.reshape(-1), minlength=1000)[chosen], np.full(20, 50))


# ----------------------------------------------------------------------------- subset curriculum


def test_subset_with_doubling_schedule_keeps_old_items():
    sampler = Subset(64, doubling(2, first_steps=3, every=2, maximum=64), perm_seed=1)
    order_N = np.asarray(sampler.order())
    index = draw(sampler, num_steps=16, batch_size=4000)[0]
    probs_SxN = np.asarray(jax.jit(jax.vmap(sampler.probs))(jnp.arange(16)))
    previous = set()
    for step in range(16):
        k_ref = 2 if step < 3 else min(2 * 2 ** ((step - 3) // 2 + 1), 64)
        seen = set(index[step])
        assert seen == set(order_N[:k_ref]), step  # exactly the first k (4000 draws, k <= 64)
        assert previous <= seen  # old items kept
        previous = seen
        p_ref = np.zeros(64)
        p_ref[order_N[:k_ref]] = 1 / k_ref
        np.testing.assert_allclose(probs_SxN[step], p_ref, rtol=1e-6)


# ----------------------------------------------------------------------------- mixture


def test_mixture_domains_items_and_loss_weights():
    sizes, p_D, loss_D = (10, 30, 5, 55), np.array([0.1, 0.2, 0.0, 0.7]), np.array([1.0, 2.0, 3.0, 4.0])
    sampler = Mixture(sizes, p_D, loss_weights=loss_D)
    domain_of_item = np.repeat(np.arange(4), sizes)  # numpy reference for the index layout
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    index, weight, probs_N = draw(sampler)
    index, weight = index.reshape(-1), weight.reshape(-1)
    domain = domain_of_item[index]
    assert_frequencies(domain, p_D)
    for d in np.flatnonzero(p_D):
        assert_frequencies(index[domain == d] - offsets[d], np.ones(sizes[d]))  # uniform within
    np.testing.assert_array_equal(weight, loss_D[domain])
    np.testing.assert_array_equal(jax.jit(sampler.domain_of)(np.arange(100)), domain_of_item)
    np.testing.assert_allclose(probs_N, (p_D / np.array(sizes))[domain_of_item], rtol=1e-6)


# ----------------------------------------------------------------------------- curriculum


def test_curriculum_switches_at_the_start_steps():
    stages = [Weighted(np.r_[np.ones(5), np.zeros(15)]), Subset(20, 3), Uniform(20)]
    sampler = Curriculum([(0, stages[0]), (10, stages[1]), (25, stages[2])])

    def per_step(step):
        alone = [(s.sample(KEY, step, 32).index, s.probs(step)) for s in stages]
        return sampler.sample(KEY, step, 32).index, sampler.probs(step), alone

    index, probs_N, alone = jax.jit(jax.vmap(per_step))(jnp.arange(40))
    for step in range(40):
        active = 0 if step < 10 else 1 if step < 25 else 2
        np.testing.assert_array_equal(index[step], alone[active][0][step], err_msg=f"step {step}")
        np.testing.assert_allclose(probs_N[step], alone[active][1][step], rtol=1e-6)
    assert [int(sampler.stage(s)) for s in (0, 9, 10, 24, 25, 10**6)] == [0, 0, 1, 1, 2, 2]


# ----------------------------------------------------------------------------- tracing


def test_vmap_over_k_equals_per_value_samplers():
    ks = np.array([1, 5, 50, 200], np.int32)
    fn = lambda k: Subset(200, k, perm_seed=3).sample(KEY, 7, 64).index  # noqa: E731
    vmapped, per_value = jax.jit(lambda ks_: (jax.vmap(fn)(ks_), [fn(int(k)) for k in ks]))(jnp.asarray(ks))
    for i in range(len(ks)):
        np.testing.assert_array_equal(vmapped[i], per_value[i])


def test_vmap_over_mixture_weights_and_over_keys():
    weights_GxD = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    fn = lambda w: Mixture((4, 6), w).sample(KEY, 3, 50)  # noqa: E731
    keys = jax.random.split(KEY, 3)
    epochs = Epochs(np.arange(1, 11))

    def programs(keys):
        per_key = jax.vmap(lambda k: epochs.sample(k, 5, 16).index)(keys)
        return (jax.vmap(fn)(weights_GxD), fn((0.5, 0.5)), per_key,
                [epochs.sample(keys[i], 5, 16).index for i in range(3)])

    vmapped, per_value, per_key, per_key_alone = jax.jit(programs)(keys)
    assert np.all(vmapped.index[0] < 4) and np.all(vmapped.index[1] >= 4)
    np.testing.assert_array_equal(vmapped.index[2], per_value.index)
    assert np.all(vmapped.weight == 1.0)  # no loss weights: ones
    for i in range(3):
        np.testing.assert_array_equal(per_key[i], per_key_alone[i])
    assert not np.array_equal(per_key[0], per_key[1])


SCAN_SAMPLERS = [
    Subset(30, doubling(4, 2, 3, 30)),
    Zipf(30, piecewise([3], [0.0, 1.0])),
    Epochs(np.arange(30) % 3),
    Curriculum([(0, Weighted(np.linspace(0.0, 1.0, 30))), (4, Mixture((10, 20), (0.3, 0.7), (2.0, 1.0)))]),
]


@pytest.mark.parametrize("sampler", SCAN_SAMPLERS, ids=lambda s: type(s).__name__)
def test_scan_step_matches_a_lone_step(sampler):
    """A traced step inside lax.scan gives the batch that a lone call at that step gives (resume)."""

    def body(carry, step):
        out = sampler.sample(KEY, step, 24)
        return carry, (out.index, out.weight)

    def program():
        _, scanned = jax.lax.scan(body, 0, jnp.arange(8))
        return scanned, sampler.sample(KEY, 6, 24), sampler.probs(6)

    (index, weight), lone, probs_N = jax.jit(program)()
    np.testing.assert_array_equal(index[6], lone.index)
    np.testing.assert_array_equal(weight[6], lone.weight)
    assert not np.array_equal(index[5], index[6])
    assert probs_N.shape == (30,) and abs(float(probs_N.sum()) - 1) < 1e-5
    assert np.all(np.asarray(probs_N)[np.asarray(index[6])] > 0)
    assert hash(sampler) == hash(sampler) and sampler == sampler


def test_sample_indices_host_matches_and_compiles_once():
    sampler = Epochs(np.arange(1, 21), perm_seed=2)
    got = sample_indices_host(sampler, jax.random.key(5), 11, 16)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, jax.jit(sampler.sample, static_argnums=2)(jax.random.key(5), 11, 16).index)
    before = samplers._host_indices._cache_size()
    same = Epochs(np.arange(1, 21), perm_seed=2)  # equal by value
    for step in range(12, 16):
        sample_indices_host(same, jax.random.key(5), step, 16)
    assert samplers._host_indices._cache_size() == before
    unhashable = Zipf(50, piecewise([2], [jnp.float32(0.0), jnp.float32(1.0)]))  # cached by identity
    np.testing.assert_array_equal(
        sample_indices_host(unhashable, jax.random.key(1), 3, 8),
        jax.jit(unhashable.sample, static_argnums=2)(jax.random.key(1), 3, 8).index
    )
    raw = jax.random.PRNGKey(5)  # raw uint32[2] keys, as TrainState.rng holds, work too
    np.testing.assert_array_equal(sample_indices_host(sampler, raw, 11, 16), sampler.sample(raw, 11, 16).index)


# ----------------------------------------------------------------------------- validation


BAD = [
    (lambda: Uniform(0), "Uniform.num_items"),
    (lambda: Subset(10, 11), "Subset.k"),
    (lambda: Subset(10, 0), "Subset.k"),
    (lambda: Subset(10, 2.5), "Subset.k"),
    (lambda: Zipf(10, -1.0), "Zipf.alpha"),
    (lambda: Weighted([-1.0, 2.0]), "Weighted.probs"),
    (lambda: Weighted([0.0, 0.0]), "Weighted.probs"),
    (lambda: Weighted(np.ones((2, 2))), "Weighted.probs"),
    (lambda: Epochs([1, -1]), "Epochs.counts"),
    (lambda: Epochs([0, 0]), "Epochs.counts.*empty"),
    (lambda: Epochs([1.5, 1.0]), "Epochs.counts"),
    (lambda: Epochs.subsample(10, 0.0), "Epochs.fraction"),
    (lambda: Mixture((3, 4), (1.0, 2.0, 3.0)), "Mixture.sampling_weights"),
    (lambda: Mixture((3, 4), (1.0, 2.0), loss_weights=(1.0,)), "Mixture.loss_weights"),
    (lambda: Mixture((3, 0), (1.0, 1.0)), "Mixture.domain_sizes"),
    (lambda: Curriculum([]), "Curriculum.stages"),
    (lambda: Curriculum([(1, Uniform(3))]), "Curriculum.stages.*step 0"),
    (lambda: Curriculum([(0, Uniform(3)), (0, Uniform(3))]), "Curriculum.stages.*increasing"),
    (lambda: Curriculum([(0, Uniform(3)), (5, Uniform(4))]), "Curriculum.stages.*num_items"),
]


@pytest.mark.parametrize("make, match", BAD, ids=[m for _, m in BAD])
def test_bad_inputs_raise_value_error_naming_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()
