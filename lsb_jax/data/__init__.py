"""Data levers: stateless samplers `(key, step) -> Draw(index_B, weight_B)` over a pool of N items.

    Uniform(N)                       p_i = 1/N
    Subset(N, k, perm_seed)          first k(step) items of a fixed random order (growing k keeps old items)
    Zipf(N, alpha, perm_seed)        p(rank r) ∝ (r+1)^-alpha, random rank assignment
    Weighted(probs)                  p_i ∝ probs_i
    Epochs(counts, perm_seed)        epochs of item i repeated counts_i times, without replacement
    Mixture(sizes, p, loss_weights)  domain ~ p, then uniform within it; weight = loss_weights[domain]
    Curriculum([(start, sampler)])   switch samplers at given steps

Uniform subsets (seed 003): `kcenter_greedy(x, k)` picks k rows maximizing the minimum
pairwise distance h_min (greedy farthest point, 2-approximation), `min_pairwise_distance`,
`nearest_neighbor`, `select_uniform(features, x, k)`; sentence embeddings in `lsb_jax.data.embed`
(optional extra `embed`).

Counter-based draws (`bits.py`): `stream_bits(key, index)` / `stream_row(key, row, width)` are
elements of one long jax.random.bits(key, ...) stream, hashed in one fused kernel (no PRNG loop).

Numbers may be schedules (`schedules.py`) or traced arrays; `sample` works under jit, scan, vmap.
"""

from lsb_jax.data.bits import stream_bits, stream_row
from lsb_jax.data.permutation import permute, unpermute  # the module `permutation` stays importable by name
from lsb_jax.data.samplers import (
    Curriculum,
    Draw,
    Epochs,
    Mixture,
    Sampler,
    Subset,
    Uniform,
    Weighted,
    Zipf,
    sample_indices_host,
    subsample_counts,
)
from lsb_jax.data.schedules import as_schedule, constant, doubling, piecewise
from lsb_jax.data.selection import KCenter, kcenter_greedy, min_pairwise_distance, nearest_neighbor, select_uniform

__all__ = [
    "Curriculum",
    "Draw",
    "Epochs",
    "KCenter",
    "Mixture",
    "Sampler",
    "Subset",
    "Uniform",
    "Weighted",
    "Zipf",
    "as_schedule",
    "constant",
    "doubling",
    "kcenter_greedy",
    "min_pairwise_distance",
    "nearest_neighbor",
    "permute",
    "piecewise",
    "sample_indices_host",
    "select_uniform",
    "stream_bits",
    "stream_row",
    "subsample_counts",
    "unpermute",
]
