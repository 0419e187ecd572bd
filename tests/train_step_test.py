"""The train step with each optimizer family wired through `make_optimizer`, against numpy.

These check the plumbing between the step and the optimizers (grad_fn for SAM, per-example
gradients for PCGrad, loss weights, stateful gradient biasing), on least squares where every
gradient has a closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lsb_jax import train
from lsb_jax.optim import OptimConfig, make_optimizer

rng = np.random.default_rng(0)
D = 3
X = rng.normal(size=(40, D)).astype(np.float32)
Y = (X @ np.array([1.0, -1.0, 0.5]) + 0.3 * rng.normal(size=40)).astype(np.float32)
W0 = np.array([0.2, 0.1, -0.3], np.float32)


def loss_fn(w, batch):
    return (batch["x"] @ w - batch["y"]) ** 2


def grad_np(w, x, y, c=None):
    c = np.ones(len(y)) if c is None else c
    return 2 * x.T @ (c * (x @ w - y)) / len(y)


def batches(b, steps, weights=False):
    out = []
    for t in range(steps):
        idx = rng.integers(0, len(X), b)
        batch = {"x": X[idx], "y": Y[idx]}
        if weights:
            batch["loss_weight"] = rng.uniform(0.5, 2.0, b).astype(np.float32)
        out.append(batch)
    return out


def run(cfg, data, steps):
    opt = make_optimizer(cfg, steps)
    state = train.init_state(lambda k: jnp.asarray(W0), opt.tx, jax.random.PRNGKey(0))
    return np.asarray(train.fit(train.make_train_step(loss_fn, opt), state, steps, batches=iter(data),
                                chunk_size=4).state.params)


def as64(b):
    return {k: np.asarray(v, np.float64) for k, v in b.items()}


def test_sam_step_matches_numpy():
    lr, rho, data = 0.05, 0.1, batches(8, 9)
    w = W0.astype(np.float64)
    for b in map(as64, data):
        g = grad_np(w, b["x"], b["y"])
        w_adv = w + rho * g / np.linalg.norm(g)
        w = w - lr * grad_np(w_adv, b["x"], b["y"])
    np.testing.assert_allclose(run(OptimConfig(name="sgd", lr=lr, sam_rho=rho), data, 9), w, rtol=1e-4, atol=1e-6)


def test_pcgrad_step_with_loss_weights_matches_numpy():
    lr, data = 0.05, batches(2, 10, weights=True)  # two examples: projection order does not matter
    w = W0.astype(np.float64)
    for b in map(as64, data):
        g = [b["loss_weight"][i] * 2 * b["x"][i] * (b["x"][i] @ w - b["y"][i]) for i in range(2)]
        proj = []
        for i, j in ((0, 1), (1, 0)):
            gi = g[i].copy()
            if gi @ g[j] < 0:
                gi -= (gi @ g[j]) / (g[j] @ g[j]) * g[j]
            proj.append(gi)
        w = w - lr * (proj[0] + proj[1]) / 2
    got = run(OptimConfig(name="sgd", lr=lr, pcgrad=True), data, 10)
    np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)


def test_gradient_bias_step_matches_numpy():
    lr, gamma, every, data = 0.05, 0.5, 3, batches(8, 10)
    w = W0.astype(np.float64)
    for t, b in enumerate(map(as64, data)):
        g = grad_np(w, b["x"], b["y"])
        if t % every == 0:
            g_bias = g
        w = w - lr * (g + gamma * g_bias)
    got = run(OptimConfig(name="sgd", lr=lr, grad_bias_gamma=gamma, grad_bias_every=every), data, 10)
    np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)


class ListIterator:
    """A host data iterator with resumable state, as a grain iterator has."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def __next__(self):
        b = self.data[self.pos % len(self.data)]
        self.pos += 1
        return b

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, s):
        self.pos = s["pos"]


def test_host_iterator_state_is_checkpointed_and_restored(tmp_path):
    data = batches(8, 30)
    opt = make_optimizer(OptimConfig(name="adam", lr=0.01), 30)
    step = train.make_train_step(loss_fn, opt)
    fresh = lambda: train.init_state(lambda k: jnp.asarray(W0), opt.tx, jax.random.PRNGKey(0))
    full = train.fit(step, fresh(), 30, batches=ListIterator(data), chunk_size=5)
    train.fit(step, fresh(), 15, batches=ListIterator(data), chunk_size=5, checkpoint_every=5,
              checkpoint_dir=tmp_path)
    it = ListIterator(data)
    resumed = train.fit(step, fresh(), 30, batches=it, chunk_size=5, checkpoint_every=5,
                        checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from == 15 and it.pos == 30
    assert np.array_equal(np.asarray(resumed.state.params), np.asarray(full.state.params))


def test_step_rng_reaches_the_loss_and_is_a_function_of_seed_and_step():
    lr, data = 0.1, batches(8, 6)

    def noisy_loss(w, batch, rng):  # the target is shifted by a per-step random offset
        return (batch["x"] @ w - batch["y"] - jax.random.normal(rng, ())) ** 2

    opt = make_optimizer(OptimConfig(name="sgd", lr=lr), 6)
    state = train.init_state(lambda k: jnp.asarray(W0), opt.tx, jax.random.PRNGKey(3))
    got = train.fit(train.make_train_step(noisy_loss, opt, step_rng=True), state, 6, batches=iter(data), chunk_size=4)
    w, rng = W0.astype(np.float64), jax.random.PRNGKey(3)
    for t, b in enumerate(map(as64, data)):
        shift = float(jax.random.normal(train.step_key(rng, train.STREAM_STEP, t), ()))
        w = w - lr * grad_np(w, b["x"], b["y"] + shift)
    np.testing.assert_allclose(got.state.params, w, rtol=1e-4, atol=1e-6)


def test_per_example_gradients_with_step_rng_are_of_the_reported_loss():
    """Per-example mode calls each example alone with fold_in(rng, b): its dropout-like keep draw is
    its own in its loss and its gradient, and the reported loss is the mean of those losses."""
    from lsb_jax.optim import transforms
    from lsb_jax.optim.factory import Optimizer

    def dropped_loss(w, batch, rng):   # keep_b ~ Bernoulli(1/2), drawn at the batch's own shape
        keep = jax.random.bernoulli(rng, 0.5, batch["y"].shape).astype(jnp.float32)
        return keep * (batch["x"] @ w - batch["y"]) ** 2

    lr, (b,) = 0.1, batches(8, 1)
    opt = Optimizer(optax.chain(transforms.reduce_leading_axis(), optax.sgd(lr)), grad_mode="per_example")
    state = train.init_state(lambda k: jnp.asarray(W0), opt.tx, jax.random.PRNGKey(5))
    new, metrics = jax.jit(train.make_train_step(dropped_loss, opt, step_rng=True))(state, b)
    rng = train.step_key(jax.random.PRNGKey(5), train.STREAM_STEP, 0)
    keep = np.array([float(jax.random.bernoulli(jax.random.fold_in(rng, i), 0.5, (1,))[0]) for i in range(8)])
    assert 0 < keep.sum() < 8
    x, y, w = (np.asarray(v, np.float64) for v in (b["x"], b["y"], W0))
    np.testing.assert_allclose(float(metrics["loss"]), np.mean(keep * (x @ w - y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new.params), w - lr * grad_np(w, x, y, keep), rtol=1e-5, atol=1e-7)
