"""sweeps/uniformity: the pool, k-center training sets and the NTK eigenvalue against numpy / scipy."""

import jax.numpy as jnp
import numpy as np
from scipy.spatial.distance import pdist

from lsb_jax.sweeps import uniformity


def test_pool_is_on_the_sphere_and_sets_have_their_h_min():
    x, y, rng = uniformity.clustered_sphere_pool(0, 4, 300, 3, 0.3, 0.1)
    assert x.shape == (300, 4) and y.shape == (300,)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    set_SxN, group_S, h_min_S = uniformity.kcenter_training_sets(x, 10, (10, 300), 3, rng)
    assert set_SxN.shape == (6, 10) and list(group_S) == [10] * 3 + [300] * 3
    for s, h in zip(set_SxN, h_min_S):
        assert len(set(s)) == 10
        np.testing.assert_allclose(h, pdist(x[s].astype(np.float64)).min(), rtol=1e-4)
    # greedy over the whole pool spreads the points further than a random set of 10
    assert h_min_S[3:].min() > h_min_S[:3].max()


def test_ntk_min_eigenvalue_matches_numpy_jacobian():
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((3, 5)), rng.standard_normal(5)
    w2, b2 = rng.standard_normal((5, 1)), rng.standard_normal(1)
    x = rng.standard_normal((4, 3))
    params = {"layers_0": {"kernel": jnp.float32(w1), "bias": jnp.float32(b1)},
              "layers_1": {"kernel": jnp.float32(w2), "bias": jnp.float32(b2)}}
    z = x @ w1 + b1
    act = (z > 0).astype(np.float64)
    h = np.maximum(z, 0)
    # d f / d (b1, W1, b2, W2) of f = relu(x W1 + b1) W2 + b2
    jac = np.concatenate([act * w2[:, 0], (x[:, :, None] * (act * w2[:, 0])[:, None, :]).reshape(4, -1),
                          np.ones((4, 1)), h], 1)
    want = np.linalg.eigvalsh(jac @ jac.T / 4)[0]
    np.testing.assert_allclose(float(uniformity.ntk_min_eigenvalue(params, jnp.float32(x))), want, rtol=1e-3,
                               atol=1e-5)
