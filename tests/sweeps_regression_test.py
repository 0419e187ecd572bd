"""sweeps/regression: the toy's sampler names map onto the data levers."""

import numpy as np
import pytest

from lsb_jax.data import Epochs, Subset, Uniform, Zipf
from lsb_jax.sweeps.regression import SAMPLERS, make_sampler


def test_every_sampler_name_builds_its_lever_and_draws_from_the_pool():
    import jax
    want = {"uniform": Uniform, "subset": Subset, "zipf": Zipf, "epochs": Epochs, "curriculum": Subset}
    for kind in SAMPLERS:
        sampler = make_sampler(kind, 64, subset_k=8, zipf_alpha=1.0, curriculum_first=10, curriculum_every=10,
                               perm_seed=0)
        assert isinstance(sampler, want[kind])
        index = np.asarray(sampler.sample(jax.random.PRNGKey(0), 0, 16).index)
        assert index.min() >= 0 and index.max() < 64
        if kind in ("subset", "curriculum"):   # the first 8 (permuted) items only, at step 0
            assert len(set(index)) <= 8
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_sampler("magic", 64, subset_k=8, zipf_alpha=1.0, curriculum_first=10, curriculum_every=10, perm_seed=0)
