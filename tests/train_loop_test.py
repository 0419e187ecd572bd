"""The training loop against numpy references: SGD on least squares, hooks, NaN guard, resume."""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lsb_jax import runner, train


@dataclasses.dataclass(frozen=True)
class SGD:
    lr: float
    grad_mode: str = "mean"

    @property
    def tx(self):
        return optax.with_extra_args_support(optax.sgd(self.lr))


D, N, B, LR = 4, 64, 8, 0.05
X = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
W = np.arange(1, D + 1, dtype=np.float32)
Y = X @ W


def loss_fn(p, batch):
    return (batch["x"] @ p - batch["y"]) ** 2


def sample(key, step):
    idx = jax.random.randint(jax.random.fold_in(key, step), (B,), 0, N)
    return {"x": jnp.asarray(X)[idx], "y": jnp.asarray(Y)[idx]}


def numpy_sgd(batches, steps, w0=None):
    w = np.zeros(D) if w0 is None else w0.copy()
    for t in range(steps):
        x, y = (np.asarray(batches[t]["x"], np.float64), np.asarray(batches[t]["y"], np.float64))
        grad = 2 * x.T @ (x @ w - y) / len(y)
        w = w - LR * grad
    return w


def fresh_state(seed=0):
    return train.init_state(lambda k: jnp.zeros(D), SGD(LR).tx, jax.random.PRNGKey(seed))


def test_sampled_steps_match_numpy_sgd_on_the_same_batches():
    steps = 37
    state = fresh_state()
    result = train.fit(train.make_sampled_step(loss_fn, SGD(LR), sample), state, steps, chunk_size=10)
    # the batches the step drew: key = fold_in(fold_in(rng, DATA), step), rebuilt independently
    rng = jax.random.PRNGKey(0)
    batches = [sample(jax.random.fold_in(rng, 0), t) for t in range(steps)]
    np.testing.assert_allclose(result.state.params, numpy_sgd(batches, steps), rtol=2e-5, atol=1e-6)
    assert int(result.state.step) == steps
    assert list(result.history["loss_step"]) == list(range(1, steps + 1))


def test_grad_norm_metric_matches_numpy():
    w = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    batch = {"x": X[:B], "y": Y[:B]}
    state = train.init_state(lambda k: jnp.asarray(w), SGD(LR).tx, jax.random.PRNGKey(0))
    _, metrics = train.make_train_step(loss_fn, SGD(LR), grad_norm=True)(state, batch)
    x, y = X[:B].astype(np.float64), Y[:B].astype(np.float64)
    grad = 2 * x.T @ (x @ w - y) / B
    np.testing.assert_allclose(metrics["grad_norm"], np.linalg.norm(grad), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], np.mean((x @ w - y) ** 2), rtol=1e-5)


def test_host_batches_and_loss_weights():
    rng = np.random.default_rng(1)
    batches = [{"x": X[i], "y": Y[i], "loss_weight": rng.uniform(0, 2, B).astype(np.float32)}
               for i in rng.integers(0, N, (20, B))]
    result = train.fit(train.make_train_step(loss_fn, SGD(LR)), fresh_state(), 20, batches=iter(batches), chunk_size=6)
    w = np.zeros(D)
    for b in batches:
        x, y, c = (np.asarray(b[k], np.float64) for k in ("x", "y", "loss_weight"))
        w = w - LR * 2 * x.T @ (c * (x @ w - y)) / B
    np.testing.assert_allclose(result.state.params, w, rtol=2e-5, atol=1e-6)


def test_segment_boundaries_cover_events():
    assert train.segment_boundaries(0, 10, 4, {3, 9, 10, 0}) == [3, 4, 8, 9, 10]
    assert train.segment_boundaries(4, 10, 4, {3, 9}) == [8, 9, 10]


class Recorder(train.Hook):
    name = "recorder"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def __call__(self, state, step):
        assert int(state.step) == step
        self.seen.append(step)
        return {"w0": np.asarray(state.params[0])}


def test_hooks_fire_at_their_steps_and_are_logged():
    hook = Recorder(every=10, at=(3, 25), at_start=True)
    result = train.fit(train.make_sampled_step(loss_fn, SGD(LR), sample), fresh_state(), 30, hooks=[hook], chunk_size=7)
    assert hook.seen == [0, 3, 10, 20, 25, 30]
    assert list(result.history["w0_step"]) == hook.seen


def test_nan_guard_names_the_step_and_keeps_last_good_checkpoint(tmp_path):
    def exploding(p, batch):  # loss overflows to inf after a few steps of a huge learning rate
        return (batch["x"] @ p - batch["y"]) ** 2
    opt = SGD(1e3)
    state = train.init_state(lambda k: jnp.zeros(D), opt.tx, jax.random.PRNGKey(0))
    with pytest.raises(train.NonFiniteLossError) as e:
        train.fit(train.make_sampled_step(exploding, opt, sample), state, 200, chunk_size=2,
                  checkpoint_every=2, checkpoint_dir=tmp_path / "ckpt", divergence=None)   # NaN/inf only
    m = re.search(r"loss became (?:inf|NaN) at step (\d+); stopped; last good checkpoint: step (\d+)", str(e.value))
    assert m, str(e.value)
    bad, good = int(m.group(1)), int(m.group(2))
    # an independent float32 numpy replay finds the first non-finite loss at the same step
    rng = jax.random.PRNGKey(0)
    w = np.zeros(D, np.float32)
    with np.errstate(all="ignore"):
        for t in range(200):
            b = sample(jax.random.fold_in(rng, 0), t)
            x, y = np.asarray(b["x"]), np.asarray(b["y"])
            r = x @ w - y
            if not np.isfinite(np.mean(r ** 2)):
                break
            w = (w - np.float32(1e3) * (2 * x.T @ r / B)).astype(np.float32)
    assert bad == t + 1 and good == 2 * ((bad - 1) // 2)
    ckpt = train.Checkpointer(tmp_path / "ckpt")
    assert ckpt.latest_step() == good
    restored, _ = ckpt.restore(train.init_state(lambda k: jnp.zeros(D), opt.tx, jax.random.PRNGKey(0)))
    assert np.isfinite(np.asarray(restored.params)).all()


def test_resume_in_process_is_bit_exact(tmp_path):
    step = train.make_sampled_step(loss_fn, SGD(LR), sample)
    full = train.fit(step, fresh_state(), 50, chunk_size=8, checkpoint_every=16, checkpoint_dir=tmp_path / "a")
    train.fit(step, fresh_state(), 32, chunk_size=8, checkpoint_every=16, checkpoint_dir=tmp_path / "b")
    resumed = train.fit(step, fresh_state(), 50, chunk_size=8, checkpoint_every=16,
                        checkpoint_dir=tmp_path / "b", resume=True)
    assert resumed.resumed_from == 32
    assert np.array_equal(np.asarray(resumed.state.params), np.asarray(full.state.params))


def test_ensemble_matches_members_run_alone():
    lrs = (0.01, 0.05)
    members = train.member_grid(2, seed=3, lr=lrs)
    assert [m["lr"] for m in members.labels] == pytest.approx([0.01, 0.05, 0.01, 0.05])

    def member_init(key, hp):
        return train.init_state(lambda k: jax.random.normal(k, (D,)), optax.sgd(hp["lr"]), key)

    def member_step(state, hp):
        tx = optax.with_extra_args_support(optax.sgd(hp["lr"]))
        return train.make_sampled_step(loss_fn, type("O", (), {"tx": tx, "grad_mode": "mean"})(), sample)(state)

    state = train.ensemble_init(member_init, members)
    out = train.fit(train.ensemble_step(member_step), state, 25, step_args=(members.hparams,), chunk_size=5)
    for m in range(members.size):
        lr = members.labels[m]["lr"]
        alone = train.fit(train.make_sampled_step(loss_fn, SGD(lr), sample),
                          train.init_state(lambda k: jax.random.normal(k, (D,)), SGD(lr).tx, members.keys[m]), 25,
                          chunk_size=5)
        np.testing.assert_allclose(out.state.params[m], alone.state.params, rtol=1e-5, atol=1e-6)


def test_epochs_sampler_through_the_step_visits_each_item_once_per_epoch():
    from lsb_jax.data import Epochs

    n, b = 48, 8  # one epoch = 6 steps
    sampler = Epochs(np.ones(n, np.int32), perm_seed=1)

    def sample_batch(key, step):
        return {"i": sampler.sample(key, step, b).index}

    def step_fn(state):
        st, _ = train.make_sampled_step(lambda p, batch: jnp.zeros(b) + 0 * p, SGD(LR), sample_batch)(state)
        return st, {"loss": jnp.zeros(()), "i": sample_batch(train.data_key(state.rng), state.step)["i"]}

    state = train.init_state(lambda k: jnp.zeros(()), SGD(LR).tx, jax.random.PRNGKey(0))
    out = train.fit(step_fn, state, 18, chunk_size=5)
    idx = out.history["i"].astype(int).reshape(3, n)
    for epoch in idx:
        assert sorted(epoch) == list(range(n))
    assert not np.array_equal(idx[0], idx[1])


def test_caller_state_survives_and_can_be_reused():
    state = fresh_state()
    step = train.make_sampled_step(loss_fn, SGD(LR), sample)
    a = train.fit(step, state, 10, chunk_size=4)
    b = train.fit(step, state, 10, chunk_size=4)  # same initial state again: not deleted by donation
    assert np.array_equal(np.asarray(a.state.params), np.asarray(b.state.params))


def test_hooks_with_the_same_name_keep_their_own_schedules():
    h1, h2 = Recorder(every=10), Recorder(every=25)
    train.fit(train.make_sampled_step(loss_fn, SGD(LR), sample), fresh_state(), 50, hooks=[h1, h2], chunk_size=7)
    assert h1.seen == [10, 20, 30, 40, 50] and h2.seen == [25, 50]


def test_a_state_that_went_bad_in_the_last_step_is_not_checkpointed(tmp_path):
    @jax.custom_vjp
    def ramp(p0):  # value p0; its gradient is 1, or inf once p0 >= 3.5
        return p0

    ramp.defvjp(lambda p0: (p0, p0), lambda p0, g: (g * jnp.where(p0 >= 3.5, jnp.inf, 1.0),))

    def loss(p, batch):  # finite at every step; each SGD step (lr 1) adds 1 to p[0] until the inf gradient
        return jnp.full(batch["y"].shape, 10.0) - ramp(p[0])

    opt = SGD(1.0)
    state = train.init_state(lambda k: jnp.zeros(D), opt.tx, jax.random.PRNGKey(0))
    # step 5 starts at p[0] = 4: loss 6 (finite), update -inf: the state after step 5 is bad
    ctx = runner.RunContext(tmp_path / "run", progress=False)
    with pytest.raises(train.NonFiniteLossError, match="parameters became non-finite by step 5; stopped$"):
        train.fit(train.make_sampled_step(loss, opt, sample), state, 20, chunk_size=5, ctx=ctx,
                  checkpoint_every=5, checkpoint_dir=tmp_path / "a")
    ctx.close()
    assert train.Checkpointer(tmp_path / "a").latest_step() is None
    # every loss of the segment came from finite parameters (10 - p0 for p0 = 0 .. 4): all five are logged
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in logged] == [(1, 10.0), (2, 9.0), (3, 8.0), (4, 7.0), (5, 6.0)]
    # with checkpoints every step the bad state is caught in its own segment
    with pytest.raises(train.NonFiniteLossError, match="by step 5; stopped; last good checkpoint: step 4"):
        train.fit(train.make_sampled_step(loss, opt, sample), state, 20, chunk_size=1,
                  checkpoint_every=1, checkpoint_dir=tmp_path / "b")
    assert train.Checkpointer(tmp_path / "b").latest_step() == 4


def test_host_iterator_errors_are_clear(tmp_path):
    step = train.make_train_step(loss_fn, SGD(LR))
    data = [{"x": X[:B], "y": Y[:B]}] * 3
    with pytest.raises(RuntimeError, match="data iterator ran out at step 3"):
        train.fit(step, fresh_state(), 10, batches=iter(data), chunk_size=4)
    with pytest.raises(ValueError, match="get_state"):
        train.fit(step, fresh_state(), 10, batches=iter(data * 4), checkpoint_dir=tmp_path, resume=True)


def test_resume_without_a_checkpoint_restarts_the_metrics(tmp_path):
    from lsb_jax.runner import RunContext

    ctx = RunContext(tmp_path, resume=True, progress=False)
    ctx.metrics.write(7, {"loss": 1.0})  # rows of a run killed before its first checkpoint
    with open(ctx.metrics.path, "a") as f:
        f.write('{"step": 8, "lo')
    out = train.fit(train.make_sampled_step(loss_fn, SGD(LR), sample), fresh_state(), 5, ctx=ctx, chunk_size=2,
                    checkpoint_every=10)
    assert list(out.history["loss_step"]) == [1, 2, 3, 4, 5]
