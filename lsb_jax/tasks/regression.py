"""Teacher-student linear regression with a planted input spectrum (the foundation's toy task).

x ~ N(0, diag(lambda)), lambda_i = i^(-decay) (i = 1..D): directions with small eigenvalues are
learned late by gradient descent, the simplest instance of simplicity bias. y = <w*, x> + sigma*eps.
A finite training pool of N examples is drawn once; batches index into it (the data lever).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class RegressionTask:
    dim: int = 20
    spectrum_decay: float = 1.0
    noise: float = 0.1

    def eigenvalues(self) -> np.ndarray:
        return np.arange(1, self.dim + 1, dtype=np.float64) ** (-self.spectrum_decay)

    def sample(self, key: jax.Array, num: int, w_star_D: jax.Array) -> dict:
        """{"x": [num, D], "y": [num]} drawn from the task distribution for teacher w*."""
        kx, ke = jax.random.split(key)
        x_NxD = jax.random.normal(kx, (num, self.dim)) * jnp.sqrt(jnp.asarray(self.eigenvalues(), jnp.float32))
        y_N = x_NxD @ w_star_D + self.noise * jax.random.normal(ke, (num,))
        return {"x": x_NxD, "y": y_N}

    def teacher(self, key: jax.Array) -> jax.Array:
        """w* ~ N(0, I_D)."""
        return jax.random.normal(key, (self.dim,))


def least_squares_test_mse(pool_x: np.ndarray, pool_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test MSE of the ordinary least-squares fit (with intercept) on the pool: a numpy reference."""
    def design(x):
        return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design(np.asarray(pool_x, np.float64)), np.asarray(pool_y, np.float64), rcond=None)
    pred = design(np.asarray(test_x, np.float64)) @ coef
    return float(np.mean((pred - np.asarray(test_y, np.float64)) ** 2))
