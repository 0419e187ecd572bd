"""Data levers: stateless samplers `(key, step) -> Draw(index_B, weight_B)` over a pool of N items.

    Uniform(N)                       p_i = 1/N
    Subset(N, k, perm_seed)          first k(step) items of a fixed random order (growing k keeps old items)
    Zipf(N, alpha, perm_seed)        p(rank r) ∝ (r+1)^-alpha, random rank assignment
    Weighted(probs)                  p_i ∝ probs_i
    Epochs(counts, perm_seed)        epochs of item i repeated counts_i times, without replacement
    Mixture(sizes, p, loss_weights)  domain ~ p, then uniform within it; weight = loss_weights[domain]
    Curriculum([(start, sampler)])   switch samplers at given steps

Numbers may be schedules (`schedules.py`) or traced arrays; `sample` works under jit, scan, vmap.
"""

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

__all__ = [
    "Curriculum",
    "Draw",
    "Epochs",
    "Mixture",
    "Sampler",
    "Subset",
    "Uniform",
    "Weighted",
    "Zipf",
    "as_schedule",
    "constant",
    "doubling",
    "permute",
    "piecewise",
    "sample_indices_host",
    "subsample_counts",
    "unpermute",
]
