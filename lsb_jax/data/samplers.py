"""Data-lever samplers: which items of a pool of N a training step sees.

A sampler is a pure function of (key, step): `sample(key, step, B) -> Draw(index_B, weight_B)`.
Pass the *same* data-stream key at every step; the sampler folds in `step` (or, for `Epochs`,
the epoch number) itself, so any step's batch is reproducible from the step alone and a resumed
run sees exactly the same data. Everything traces: `step` may be a traced int32 (`lax.scan`),
and numeric parameters (k, alpha, probabilities, mixture weights) may be traced arrays, so one
compiled program can be vmapped over keys and over a grid of k or alpha. `probs(step)` is the
[N] marginal probability that one draw at `step` is item i.

Fixed random orders (`Subset`, `Zipf`, `subsample_counts`) and per-epoch orders (`Epochs`) are
keyed Feistel bijections (`permutation.py`): O(1) per drawn index, no O(N) table per step.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lsb_jax.data import permutation as perm_lib
from lsb_jax.data.schedules import as_schedule, concrete_value


class Draw(NamedTuple):
    index: jax.Array  # [B] int32 indices into the pool
    weight: jax.Array  # [B] float32 per-example loss weights


class Sampler(Protocol):
    num_items: int

    def sample(self, key: jax.Array, step, batch_size: int) -> Draw: ...

    def probs(self, step) -> jax.Array: ...


# ----------------------------------------------------------------------------- helpers


class FrozenArray:
    """A read-only numpy array that hashes and compares by value (hash computed once)."""

    __slots__ = ("array", "_hash")

    def __init__(self, array):
        self.array = np.array(array)
        self.array.setflags(write=False)
        digest = hashlib.sha1(self.array.tobytes()).hexdigest()
        self._hash = hash((digest, self.array.shape, self.array.dtype.str))

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if not isinstance(other, FrozenArray):
            return NotImplemented
        return self._hash == other._hash and np.array_equal(self.array, other.array)

    def __len__(self):
        return len(self.array)

    def __repr__(self):
        return f"FrozenArray({np.array2string(self.array, threshold=8)})"


def _fail(sampler: str, field: str, msg: str):
    raise ValueError(f"{sampler}.{field}: {msg}")


def _check_num_items(sampler: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 2**31 - 1:
        _fail(sampler, "num_items", f"must be a Python int in [1, 2^31), got {n!r}")
    return int(n)


def _check_probability_vector(sampler: str, field: str, value, size: int | None):
    """Validates a concrete weight vector (1-D, finite, >= 0, not all zero); None if traced."""
    arr = concrete_value(value)
    if arr is None:
        return None
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or (size is not None and arr.shape[0] != size):
        want = f"[{size}]" if size is not None else "1-D"
        _fail(sampler, field, f"must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        _fail(sampler, field, "must be finite")
    if np.any(arr < 0):
        _fail(sampler, field, f"must be non-negative, got min {arr.min()}")
    if not arr.sum() > 0:
        _fail(sampler, field, "must not be all zero")
    return arr


def _step_key(key, step):
    return jax.random.fold_in(key, jnp.asarray(step, jnp.int32))


def _ones(batch_size: int) -> jax.Array:
    return jnp.ones((batch_size,), jnp.float32)


def _last_positive(weights_xN: jax.Array) -> jax.Array:
    """Index of the last entry > 0 along the last axis."""
    n = weights_xN.shape[-1]
    return n - 1 - jnp.argmax(weights_xN[..., ::-1] > 0, axis=-1).astype(jnp.int32)


def _inverse_cdf(key, weights_N: jax.Array, batch_size: int) -> jax.Array:
    """[B] draws of i with P(i) = w_i / sum(w), by a two-level inverse CDF in O(N + B sqrt(N)).

    A single float32 cumsum over N ~ 1e6 items cannot resolve the tail: its spacing near the
    total (~1e-6 of it) is as large as one tail item's weight, and one float32 uniform carries only
    24 bits. So the N items are cut into M blocks of S ~ sqrt(N) (zero-padded): a block b is
    drawn with P(b) = W_b / sum W (W_b = block sums), then an item within it with P = w_i / W_b,
    each level with its own uniform and a cumsum of only M or S terms. At either level the choice
    is #{j : cdf_j <= u}, u ~ U[0, total): entries with w = 0 have a flat cdf and are never hit;
    rounding that lands u on the total is mapped to the last positive entry.
    """
    n = weights_N.shape[0]
    s = 1 << max(0, (int(np.ceil(np.sqrt(n))) - 1).bit_length())  # power of two >= sqrt(N)
    m = -(-n // s)
    w_MxS = jnp.pad(weights_N, (0, m * s - n)).reshape(m, s)
    key_block, key_item = jax.random.split(key)

    w_M = jnp.sum(w_MxS, axis=1)
    cdf_M = jnp.cumsum(w_M)
    u_B = jax.random.uniform(key_block, (batch_size,), jnp.float32) * cdf_M[-1]
    block_B = jnp.searchsorted(cdf_M, u_B, side="right").astype(jnp.int32)
    block_B = jnp.minimum(block_B, _last_positive(w_M))

    row_BxS = w_MxS[block_B]
    cdf_BxS = jnp.cumsum(row_BxS, axis=1)
    v_B = jax.random.uniform(key_item, (batch_size,), jnp.float32) * cdf_BxS[:, -1]
    within_B = jnp.sum(cdf_BxS <= v_B[:, None], axis=1).astype(jnp.int32)
    within_B = jnp.minimum(within_B, _last_positive(row_BxS))
    return block_B * s + within_B


# ----------------------------------------------------------------------------- samplers


@dataclasses.dataclass(frozen=True)
class Uniform:
    """p_i = 1/N, with replacement."""

    num_items: int

    def __post_init__(self):
        _check_num_items("Uniform", self.num_items)

    def sample(self, key, step, batch_size: int) -> Draw:
        index_B = jax.random.randint(_step_key(key, step), (batch_size,), 0, self.num_items, jnp.int32)
        return Draw(index_B, _ones(batch_size))

    def probs(self, step) -> jax.Array:
        del step
        return jnp.full((self.num_items,), 1.0 / self.num_items, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Subset:
    """The first k(step) items of a fixed random order pi (seeded by perm_seed), uniform with replacement.

    index = pi(r), r ~ randint(0, k); p_i = 1{rank(i) < k} / k with rank = pi^{-1}. Growing k keeps
    the old items (a task curriculum).
    A traced or scheduled k is clipped to [1, N]; a concrete k outside it is an error.
    """

    num_items: int
    k: Any
    perm_seed: int = 0

    def __post_init__(self):
        n = _check_num_items("Subset", self.num_items)
        k = concrete_value(self.k)
        if k is not None and not callable(self.k):
            if k.ndim != 0 or k != np.round(k) or not 1 <= k <= n:
                _fail("Subset", "k", f"must be an integer in [1, num_items={n}], got {self.k!r}")
            object.__setattr__(self, "k", int(k))

    def order(self) -> jax.Array:
        """[N] int32: order[r] = the item of rank r (the first k are the active subset)."""
        return perm_lib.seed_permutation(self.perm_seed, self.num_items)

    def size(self, step) -> jax.Array:
        """k(step) as int32, clipped to [1, N]."""
        k = jnp.asarray(as_schedule(self.k)(step))
        return jnp.clip(k.astype(jnp.int32), 1, self.num_items)

    def sample(self, key, step, batch_size: int) -> Draw:
        rank_B = jax.random.randint(_step_key(key, step), (batch_size,), 0, self.size(step), jnp.int32)
        index_B = perm_lib.permute_with_round_keys(rank_B, perm_lib.seed_round_keys(self.perm_seed), self.num_items)
        return Draw(index_B, _ones(batch_size))

    def probs(self, step) -> jax.Array:
        items_N = jnp.arange(self.num_items, dtype=jnp.int32)
        rank_N = perm_lib.unpermute_with_round_keys(items_N, perm_lib.seed_round_keys(self.perm_seed), self.num_items)
        k = self.size(step)
        return jnp.where(rank_N < k, 1.0 / k.astype(jnp.float32), 0.0)


@dataclasses.dataclass(frozen=True)
class Zipf:
    """p(item of rank r) = (r+1)^(-alpha) / sum_{s<N} (s+1)^(-alpha); ranks = a fixed random order.

    alpha = 0 is uniform. Sampling: a two-level inverse CDF over ranks, O(N + B sqrt N) per step
    (~5 ms for N = 1e6, B = 512 on a CPU core; Gumbel-max over N logits costs O(N B), ~20 s),
    then rank -> item through the keyed bijection.
    """

    num_items: int
    alpha: Any
    perm_seed: int = 0

    def __post_init__(self):
        _check_num_items("Zipf", self.num_items)
        alpha = concrete_value(self.alpha)
        if alpha is not None and not callable(self.alpha):
            if alpha.ndim != 0 or not np.isfinite(alpha) or alpha < 0:
                _fail("Zipf", "alpha", f"must be a finite scalar >= 0, got {self.alpha!r}")
            object.__setattr__(self, "alpha", float(alpha))

    def order(self) -> jax.Array:
        """[N] int32: order[r] = the item of rank r (order[0] is the most frequent)."""
        return perm_lib.seed_permutation(self.perm_seed, self.num_items)

    def rank_weights(self, step) -> jax.Array:
        """[N] float32 unnormalized w_r = (r+1)^(-alpha(step))."""
        alpha = jnp.asarray(as_schedule(self.alpha)(step), jnp.float32)
        return jnp.exp(-alpha * jnp.log1p(jnp.arange(self.num_items, dtype=jnp.float32)))

    def sample(self, key, step, batch_size: int) -> Draw:
        rank_B = _inverse_cdf(_step_key(key, step), self.rank_weights(step), batch_size)
        index_B = perm_lib.permute_with_round_keys(rank_B, perm_lib.seed_round_keys(self.perm_seed), self.num_items)
        return Draw(index_B, _ones(batch_size))

    def probs(self, step) -> jax.Array:
        weights_N = self.rank_weights(step)
        items_N = jnp.arange(self.num_items, dtype=jnp.int32)
        rank_N = perm_lib.unpermute_with_round_keys(items_N, perm_lib.seed_round_keys(self.perm_seed), self.num_items)
        return weights_N[rank_N] / jnp.sum(weights_N)


@dataclasses.dataclass(frozen=True, init=False)
class Weighted:
    """p_i = w_i / sum(w), with replacement (e.g. upsampling hard examples by probability).

    Construct as `Weighted(probs)`; `probs` need not be normalized and may be traced.
    """

    weights: Any

    def __init__(self, probs):
        arr = _check_probability_vector("Weighted", "probs", probs, None)
        if arr is None and jnp.ndim(probs) != 1:
            _fail("Weighted", "probs", f"must be 1-D, got shape {jnp.shape(probs)}")
        weights = probs if arr is None else FrozenArray((arr / arr.sum()).astype(np.float32))
        object.__setattr__(self, "weights", weights)

    @property
    def num_items(self) -> int:
        return int(np.shape(self.weights)[0])

    def _weights(self) -> jax.Array:
        return jnp.asarray(self.weights, jnp.float32)

    def sample(self, key, step, batch_size: int) -> Draw:
        index_B = _inverse_cdf(_step_key(key, step), self._weights(), batch_size)
        return Draw(index_B, _ones(batch_size))

    def probs(self, step) -> jax.Array:
        del step
        weights_N = self._weights()
        return weights_N / jnp.sum(weights_N)


def subsample_counts(num_items: int, k: int, seed: int = 0) -> np.ndarray:
    """[N] int64 counts: 1 on the first k items of the order of `Subset(num_items, k, perm_seed=seed)`."""
    n = _check_num_items("subsample_counts", num_items)
    if not 1 <= k <= n:
        _fail("subsample_counts", "k", f"must be in [1, num_items={n}], got {k}")
    order_N = np.asarray(perm_lib.seed_permutation(seed, n))
    counts_N = np.zeros(n, np.int64)
    counts_N[order_N[:k]] = 1
    return counts_N


@dataclasses.dataclass(frozen=True)
class Epochs:
    """Epochs of the multiset {item i repeated counts_i times}, each visited without replacement.

    E = sum(counts) (static). The stream position of draw j at step s is t = s*B + j; it lies in
    epoch e = t // E at offset o = t mod E, and is the item owning slot pi_e(o) of the expanded
    epoch, where pi_e is a keyed bijection of [0, E) with round keys from (key, perm_seed, e)
    (threefry bits of the key, then hashed with perm_seed and with e: see `tweak_round_keys`):
        index = searchsorted(cumsum(counts), pi_e(o), side="right").
    So each epoch holds item i exactly counts_i times, in a fresh order; batches may straddle two
    epochs. p_i = counts_i / E. Positions are uint32: valid while s*B < 2^32, or for any int32 step
    when E*B + B < 2^32.
    """

    counts: Any
    perm_seed: int = 0

    def __post_init__(self):
        arr = concrete_value(self.counts)
        if arr is None:
            _fail("Epochs", "counts", "must be concrete (the epoch size E = sum(counts) is static)")
        if arr.ndim != 1 or arr.shape[0] < 1:
            _fail("Epochs", "counts", f"must be a non-empty 1-D array, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf" or np.any(arr != np.round(arr)):
            _fail("Epochs", "counts", "must hold integers")
        if np.any(arr < 0):
            _fail("Epochs", "counts", f"must be non-negative, got min {arr.min()}")
        total = int(arr.astype(np.int64).sum())
        if total < 1:
            _fail("Epochs", "counts", "empty epoch: sum(counts) must be >= 1")
        if total > 2**31 - 1:
            _fail("Epochs", "counts", f"sum(counts) = {total} must be < 2^31")
        _check_num_items("Epochs", arr.shape[0])
        object.__setattr__(self, "counts", FrozenArray(arr.astype(np.int64)))

    @classmethod
    def subsample(cls, num_items: int, fraction: float, seed: int = 0, perm_seed: int = 0) -> "Epochs":
        """Counts 1 on round(fraction * N) random items (>= 1): a rho-subsampled dataset.

        Train it for 1/rho of the steps of the full dataset to see the same number of points.
        """
        if not 0.0 < fraction <= 1.0:
            _fail("Epochs", "fraction", f"must be in (0, 1], got {fraction}")
        k = max(1, int(round(fraction * num_items)))
        return cls(subsample_counts(num_items, k, seed), perm_seed)

    @property
    def num_items(self) -> int:
        return len(self.counts)

    @property
    def epoch_size(self) -> int:
        return int(self.counts.array.sum())

    def positions(self, step, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """([B] epoch, [B] offset) uint32 of the draws at `step`."""
        e, b = self.epoch_size, batch_size
        j_B = jnp.arange(b, dtype=jnp.uint32)
        s = jnp.asarray(step).astype(jnp.uint32)
        if e * b + b < 2**32:  # s = qE + r  =>  t = (qB)E + (rB + j) with rB + j < 2^32
            q, r = s // np.uint32(e), s % np.uint32(e)
            t_B = r * np.uint32(b) + j_B
            return q * np.uint32(b) + t_B // np.uint32(e), t_B % np.uint32(e)
        t_B = s * np.uint32(b) + j_B
        return t_B // np.uint32(e), t_B % np.uint32(e)

    def sample(self, key, step, batch_size: int) -> Draw:
        epoch_B, offset_B = self.positions(step, batch_size)
        base_R = perm_lib.tweak_round_keys(perm_lib.round_keys(key), self.perm_seed)
        round_keys_BxR = perm_lib.tweak_round_keys(base_R, epoch_B)
        slot_B = perm_lib.permute_with_round_keys(offset_B, round_keys_BxR, self.epoch_size)
        ends_N = jnp.asarray(np.cumsum(self.counts.array), jnp.int32)
        index_B = jnp.searchsorted(ends_N, slot_B, side="right").astype(jnp.int32)
        return Draw(index_B, _ones(batch_size))

    def probs(self, step) -> jax.Array:
        del step
        return jnp.asarray(self.counts.array / self.epoch_size, jnp.float32)


def _as_static_vector(value):
    """Concrete vectors become tuples of floats (hashable); traced ones and schedules stay as is."""
    if callable(value):
        return value
    arr = concrete_value(value)
    return value if arr is None else tuple(float(v) for v in arr.astype(np.float64))


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Domains d = 0..D-1 own consecutive index ranges [offset_d, offset_d + size_d) of one pool.

    domain ~ Categorical(p), p = sampling_weights / sum; item ~ Uniform within the domain, so
    p_i = p_d / size_d for i in domain d. weight = loss_weights[domain] (ones if None): sampling
    weights change what is seen, loss weights how much it counts. Weights may be traced/scheduled.
    """

    domain_sizes: tuple[int, ...]
    sampling_weights: Any
    loss_weights: Any = None

    def __post_init__(self):
        sizes = tuple(self.domain_sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            _fail("Mixture", "domain_sizes", f"must be a non-empty sequence of ints >= 1, got {self.domain_sizes!r}")
        object.__setattr__(self, "domain_sizes", tuple(int(s) for s in sizes))
        _check_num_items("Mixture", sum(sizes))
        d = len(sizes)
        if not callable(self.sampling_weights):
            _check_probability_vector("Mixture", "sampling_weights", self.sampling_weights, d)
            if np.shape(self.sampling_weights) != (d,):
                _fail("Mixture", "sampling_weights", f"must have shape [{d}], got {np.shape(self.sampling_weights)}")
        if self.loss_weights is not None and not callable(self.loss_weights):
            if np.shape(self.loss_weights) != (d,):
                _fail("Mixture", "loss_weights", f"must have shape [{d}], got {np.shape(self.loss_weights)}")
        object.__setattr__(self, "sampling_weights", _as_static_vector(self.sampling_weights))
        if self.loss_weights is not None:
            object.__setattr__(self, "loss_weights", _as_static_vector(self.loss_weights))

    @property
    def num_items(self) -> int:
        return sum(self.domain_sizes)

    @property
    def num_domains(self) -> int:
        return len(self.domain_sizes)

    def offsets(self) -> np.ndarray:
        """[D] first index of each domain."""
        return np.concatenate([[0], np.cumsum(self.domain_sizes)[:-1]]).astype(np.int32)

    def domain_probs(self, step) -> jax.Array:
        w_D = jnp.asarray(as_schedule(self.sampling_weights)(step), jnp.float32)
        return w_D / jnp.sum(w_D)

    def domain_of(self, index) -> jax.Array:
        """The domain owning each pool index."""
        ends_D = jnp.asarray(np.cumsum(self.domain_sizes), jnp.int32)
        return jnp.searchsorted(ends_D, jnp.asarray(index, jnp.int32), side="right").astype(jnp.int32)

    def sample(self, key, step, batch_size: int) -> Draw:
        key_domain, key_item = jax.random.split(_step_key(key, step))
        p_D = self.domain_probs(step)
        domain_B = jax.random.categorical(key_domain, jnp.log(p_D), shape=(batch_size,)).astype(jnp.int32)
        sizes_D = jnp.asarray(self.domain_sizes, jnp.int32)
        within_B = jax.random.randint(key_item, (batch_size,), 0, sizes_D[domain_B], jnp.int32)
        index_B = jnp.asarray(self.offsets())[domain_B] + within_B
        if self.loss_weights is None:
            return Draw(index_B, _ones(batch_size))
        loss_D = jnp.asarray(as_schedule(self.loss_weights)(step), jnp.float32)
        return Draw(index_B, loss_D[domain_B])

    def probs(self, step) -> jax.Array:
        sizes = np.asarray(self.domain_sizes)
        per_item_D = self.domain_probs(step) / jnp.asarray(sizes, jnp.float32)
        return jnp.repeat(per_item_D, sizes, total_repeat_length=self.num_items)


@dataclasses.dataclass(frozen=True)
class Curriculum:
    """Stage i (start_i, sampler_i) is active for start_i <= step < start_{i+1}; start_0 = 0.

    Stages receive the absolute step (so scheduled stages keep their own clocks) and the same
    key; the active one is chosen with `lax.switch`, so `step` may be traced.
    """

    stages: tuple[tuple[int, Any], ...]

    def __post_init__(self):
        stages = tuple((s, sampler) for s, sampler in self.stages)
        if not stages:
            _fail("Curriculum", "stages", "must not be empty")
        starts = [s for s, _ in stages]
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in starts):
            _fail("Curriculum", "stages", f"start steps must be ints, got {starts}")
        if starts[0] != 0:
            _fail("Curriculum", "stages", f"the first stage must start at step 0, got {starts[0]}")
        if any(b <= a for a, b in zip(starts, starts[1:])):
            _fail("Curriculum", "stages", f"start steps must be strictly increasing, got {starts}")
        sizes = {sampler.num_items for _, sampler in stages}
        if len(sizes) != 1:
            _fail("Curriculum", "stages", f"all stages must share num_items, got {[s.num_items for _, s in stages]}")
        object.__setattr__(self, "stages", tuple((int(s), sampler) for s, sampler in stages))

    @property
    def num_items(self) -> int:
        return self.stages[0][1].num_items

    @property
    def starts(self) -> tuple[int, ...]:
        return tuple(s for s, _ in self.stages)

    def stage(self, step) -> jax.Array:
        """int32 index of the active stage: #{i >= 1 : start_i <= step}."""
        later_starts = jnp.asarray(self.starts[1:], jnp.int32)
        return jnp.sum(jnp.asarray(step, jnp.int32) >= later_starts).astype(jnp.int32)

    def _switch(self, step, fns):
        if len(fns) == 1:
            return fns[0]()
        return lax.switch(self.stage(step), fns)

    def sample(self, key, step, batch_size: int) -> Draw:
        fns = [functools.partial(s.sample, key, step, batch_size) for _, s in self.stages]
        return self._switch(step, fns)

    def probs(self, step) -> jax.Array:
        fns = [lambda s=s: jnp.asarray(s.probs(step), jnp.float32) for _, s in self.stages]
        return self._switch(step, fns)


# ----------------------------------------------------------------------------- host side


class _Static:
    """Wraps a sampler as a jit static argument: by value when hashable, else by identity."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        try:
            return hash(self.obj)
        except TypeError:
            return id(self.obj)

    def __eq__(self, other):
        if not isinstance(other, _Static):
            return NotImplemented
        if self.obj is other.obj:
            return True
        try:
            return bool(self.obj == other.obj)
        except (TypeError, ValueError):
            return False


@functools.partial(jax.jit, static_argnames=("sampler", "batch_size"))
def _host_indices(sampler: _Static, key, step, batch_size: int):
    return sampler.obj.sample(key, step, batch_size).index


def sample_indices_host(sampler, key, step: int, batch_size: int) -> np.ndarray:
    """[B] indices at `step` as numpy, for host-side loaders; = sampler.sample(key, step, B).index.

    `key` is the run's data-stream key (raw uint32[2] or typed), the same key the device path
    hands its samplers (`lsb_jax.train.data_key(state.rng)`), so a host loader and an in-step
    sampler see the same data. Compiled once per (sampler, batch_size); key and step are traced
    arguments. Samplers holding unhashable values (e.g. jax arrays inside a schedule) are cached
    by identity instead of value.
    """
    index_B = _host_indices(_Static(sampler), key, jnp.int32(step), batch_size=int(batch_size))
    return np.asarray(index_B)
