"""Per-example loss trajectories against numpy: pool scoring, the store, the fit() hook."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lsb_jax import train
from lsb_jax.tracking import LossTracker, TrajectoryStore, evenly_spaced_steps, pool_scorer

D, N, B, LR = 3, 50, 5, 0.1
rng = np.random.default_rng(0)
X = rng.normal(size=(N, D)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=N)).astype(np.float32)
POOL = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}


def loss_fn(p, batch):
    return (batch["x"] @ p - batch["y"]) ** 2


@dataclasses.dataclass(frozen=True)
class SGD:
    tx: object = optax.with_extra_args_support(optax.sgd(LR))
    grad_mode: str = "mean"


def test_evenly_spaced_steps():
    assert evenly_spaced_steps(100, 5) == (0, 25, 50, 75, 100)
    assert evenly_spaced_steps(3, 10) == (0, 1, 2, 3)
    assert evenly_spaced_steps(100, 4, include_start=False)[-1] == 100


@pytest.mark.parametrize("batch_size", [7, 50, 64])
def test_pool_scorer_matches_numpy(batch_size):
    w = np.array([0.3, 0.2, -0.1], np.float32)
    got = np.asarray(jax.jit(pool_scorer(loss_fn, batch_size))(jnp.asarray(w), POOL))
    np.testing.assert_allclose(got, (X.astype(np.float64) @ w - Y) ** 2, rtol=1e-5, atol=1e-6)


def test_store_is_atomic_and_reloads(tmp_path):
    path = tmp_path / "traj.npz"
    store = TrajectoryStore(path, num_examples=4, steps=(0, 10), member_shape=(2,))
    store.write(0, np.ones((2, 4)))
    store.write(10, np.full((2, 2), 3.0), rows=np.array([1, 3]))
    again = TrajectoryStore(path, num_examples=4, steps=(0, 10), member_shape=(2,))
    assert again.done[:, 0].all() and list(again.missing_rows(10)) == [0, 2]
    assert again.losses[1, 3, 1] == 3.0 and np.isnan(again.losses[0, 0, 1])
    assert not again.complete
    assert [p.name for p in tmp_path.iterdir()] == ["traj.npz"]  # no temporary files left
    from lsb_jax.errors import ResumeMismatch
    for other in (dict(num_examples=5, steps=(0, 10), member_shape=(2,)),   # a store of another configuration
                  dict(num_examples=4, steps=(0, 20), member_shape=(2,)),
                  dict(num_examples=4, steps=(0, 10), member_shape=(3,))):
        with pytest.raises(ResumeMismatch, match="traj.npz.*another configuration"):
            TrajectoryStore(path, **other)
    assert TrajectoryStore(path, num_examples=4, steps=(0, 10), member_shape=(2,)).done.sum() == 6  # left as it was


def test_tracker_records_every_example_at_chosen_steps(tmp_path):
    def sample(key, step):
        idx = jax.random.randint(jax.random.fold_in(key, step), (B,), 0, N)
        return {"x": POOL["x"][idx], "y": POOL["y"][idx]}

    steps = (0, 4, 9, 20)
    store = TrajectoryStore(tmp_path / "t.npz", N, steps)
    state = train.init_state(lambda k: jnp.zeros(D), SGD().tx, jax.random.PRNGKey(0))
    train.fit(train.make_sampled_step(loss_fn, SGD(), sample), state, 20,
              hooks=[LossTracker(pool_scorer(loss_fn, 16), store, args=(POOL,))], chunk_size=8)
    # numpy replay of the same SGD on the same batches; losses of every example at each step
    key = jax.random.PRNGKey(0)
    w = np.zeros(D)
    expected = {}
    for t in range(21):
        if t in steps:
            expected[t] = (X.astype(np.float64) @ w - Y) ** 2
        b = sample(jax.random.fold_in(key, 0), t)
        x, y = np.asarray(b["x"], np.float64), np.asarray(b["y"], np.float64)
        w = w - LR * 2 * x.T @ (x @ w - y) / B
    saved = TrajectoryStore(tmp_path / "t.npz", N, steps)
    assert saved.complete
    np.testing.assert_allclose(saved.losses, np.stack([expected[s] for s in steps], axis=1), rtol=1e-4, atol=1e-5)
