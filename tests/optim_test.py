"""Tests of lsb_jax.optim against hand-written float64 numpy references.

The problem: a 3-layer tanh net (3 -> 5 -> 4 -> 2) on a fixed batch with loss
L = 0.5 mean_n |f(x_n) - y_n|^2, gradients derived by hand in `np_grads`. Every JAX run is
in float64 (`jax.enable_x64`) unless a test says otherwise, so references agree to ~1e-10.
"""

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lsb_jax.optim import (OptimConfig, freeze, gradient_bias, label_params, make_optimizer, muon, muon_labels,
                           normalize, param_path, pcgrad, pcgrad_project, scale_by_group)

LAYERS = (("layer1", 3, 5), ("layer2", 5, 4), ("head", 4, 2))  # (name, fan_in, fan_out)
NUM_EXAMPLES = 6
TOL = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ----------------------------------------------------------------------------- numpy problem

_rng = np.random.default_rng(0)
X_NxI = _rng.normal(size=(NUM_EXAMPLES, 3))
Y_NxO = _rng.normal(size=(NUM_EXAMPLES, 2))


def init_params(seed=1):
    rng = np.random.default_rng(seed)
    return {name: {"kernel": rng.normal(size=(i, o)) * 0.7, "bias": rng.normal(size=(o,)) * 0.1}
            for name, i, o in LAYERS}


def np_grads(params, x=X_NxI, y=Y_NxO):
    """Backprop by hand: dL/df = (f - y)/N; dz = dh * (1 - h^2) on tanh layers."""
    hs = [x]
    for k, (name, _, _) in enumerate(LAYERS):
        z = hs[-1] @ params[name]["kernel"] + params[name]["bias"]
        hs.append(z if k == len(LAYERS) - 1 else np.tanh(z))
    delta = (hs[-1] - y) / len(x)
    grads = {}
    for k in reversed(range(len(LAYERS))):
        name = LAYERS[k][0]
        grads[name] = {"kernel": hs[k].T @ delta, "bias": delta.sum(0)}
        if k > 0:
            delta = (delta @ params[name]["kernel"].T) * (1 - hs[k] ** 2)
    return grads


def jax_loss(params, x=X_NxI, y=Y_NxO):
    h = x
    for k, (name, _, _) in enumerate(LAYERS):
        h = h @ params[name]["kernel"] + params[name]["bias"]
        if k < len(LAYERS) - 1:
            h = jnp.tanh(h)
    return 0.5 * jnp.mean(jnp.sum((h - y) ** 2, -1))


def tmap(f, *trees):
    return {name: {leaf: f(*(t[name][leaf] for t in trees)) for leaf in trees[0][name]} for name in trees[0]}


def global_norm(tree):
    return np.sqrt(sum(np.sum(tree[n][l] ** 2) for n in tree for l in tree[n]))


def run(opt, params, steps):
    """Trajectory of `steps` train steps with full-batch gradients (the train-step contract)."""
    tx = opt.tx if hasattr(opt, "tx") else opt
    grad_fn = lambda p, i: jax.grad(jax_loss)(p)

    @jax.jit
    def step(p, s):
        u, s = tx.update(grad_fn(p, 0), s, p, grad_fn=grad_fn)
        return optax.apply_updates(p, u), s

    p = jax.tree.map(jnp.asarray, params)
    s = tx.init(p)
    traj = []
    for _ in range(steps):
        p, s = step(p, s)
        traj.append(jax.tree.map(np.asarray, p))
    return traj, s


def assert_tree_close(a, b, **tol):
    for n in b:
        for l in b[n]:
            np.testing.assert_allclose(a[n][l], b[n][l], err_msg=f"{n}.{l}", **(tol or TOL))


class NpAdamW:
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; u = -lr (m^/(sqrt(v^)+eps) + wd w)."""

    def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd, self.m, self.v = lr, b1, b2, eps, wd, {}, {}

    def __call__(self, key, g, w, t):
        m = self.m[key] = self.b1 * self.m.get(key, 0.0) + (1 - self.b1) * g
        v = self.v[key] = self.b2 * self.v.get(key, 0.0) + (1 - self.b2) * g ** 2
        m_hat, v_hat = m / (1 - self.b1 ** t), v / (1 - self.b2 ** t)
        return -self.lr * (m_hat / (np.sqrt(v_hat) + self.eps) + self.wd * w)


def np_run(params, steps, rule):
    """Reference trajectory: w <- w + rule((layer, leaf), g, w, t), t = 1, 2, ..."""
    traj, p = [], params
    for t in range(1, steps + 1):
        g = np_grads(p)
        p = {n: {l: p[n][l] + rule((n, l), g[n][l], p[n][l], t) for l in p[n]} for n in p}
        traj.append(p)
    return traj


def test_reference_gradients_match_autodiff():
    params = init_params()
    assert_tree_close(jax.grad(jax_loss)(jax.tree.map(jnp.asarray, params)), np_grads(params))


# ----------------------------------------------------------------------------- base optimizers


def _np_momentum(lr, mu, wd=0.0):
    trace = {}

    def rule(key, g, w, t):
        g = g + wd * w  # L2 term
        trace[key] = g + mu * trace.get(key, 0.0)
        return -lr * trace[key]

    return rule


@pytest.mark.parametrize("cfg,rule", [
    (OptimConfig(name="sgd", lr=0.3), lambda k, g, w, t: -0.3 * g),
    (OptimConfig(name="sgd", lr=0.3, weight_decay=0.1), lambda k, g, w, t: -0.3 * (g + 0.1 * w)),
    (OptimConfig(name="momentum", lr=0.2, momentum=0.8), _np_momentum(0.2, 0.8)),
    (OptimConfig(name="momentum", lr=0.2, momentum=0.8, weight_decay=0.05), _np_momentum(0.2, 0.8, 0.05)),
    (OptimConfig(name="adam", lr=0.01, b1=0.8, b2=0.99, eps=1e-6), NpAdamW(0.01, 0.8, 0.99, 1e-6)),
    (OptimConfig(name="adamw", lr=0.01, weight_decay=0.1), NpAdamW(0.01, wd=0.1)),
], ids=["sgd", "sgd_l2", "momentum", "momentum_l2", "adam", "adamw"])
def test_base_optimizers_match_numpy(cfg, rule):
    params = init_params()
    traj, _ = run(make_optimizer(cfg, 10), params, 4)
    for got, want in zip(traj, np_run(params, 4, rule)):
        assert_tree_close(got, want)


def test_float32_adam_matches_float64_reference():
    params = init_params()
    with jax.enable_x64(False):
        traj, _ = run(make_optimizer(OptimConfig(name="adam", lr=0.01), 10), params, 3)
        assert traj[-1]["layer1"]["kernel"].dtype == np.float32
    assert_tree_close(traj[-1], np_run(params, 3, NpAdamW(0.01))[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule,warmup",
                         [("cosine", 0), ("warmup_cosine", 0), ("warmup_cosine", 3), ("linear_warmup", 4)])
def test_schedules_match_formula(schedule, warmup):
    total, lr = 10, 0.5
    tx = make_optimizer(OptimConfig(name="sgd", lr=lr, schedule=schedule, warmup_steps=warmup), total).tx
    w = {"w": jnp.zeros(1)}
    state, got = tx.init(w), []
    for _ in range(total + 2):
        u, state = tx.update({"w": jnp.ones(1)}, state, w)
        got.append(-float(u["w"][0]))
    t = np.arange(total + 2)
    if schedule == "cosine":
        want = lr * 0.5 * (1 + np.cos(np.pi * np.minimum(t, total) / total))
    elif schedule == "warmup_cosine":
        decay = 0.5 * (1 + np.cos(np.pi * np.clip(t - warmup, 0, total - warmup) / (total - warmup)))
        want = lr * (np.where(t < warmup, t / max(warmup, 1), decay))
    else:
        want = lr * np.minimum(1.0, t / warmup)
    # the factor is computed in float32 (as optax's schedules are), also under x64
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # total and warmup as traced step arguments (one compiled step for any run length): the same lrs
    cfg = OptimConfig(name="sgd", lr=lr, schedule=schedule, warmup_steps=warmup)

    @jax.jit
    def lrs(total_steps, warmup_steps):
        tx = make_optimizer(cfg, total_steps, warmup_steps=warmup_steps).tx
        state, out = tx.init(w), []
        for _ in range(total + 2):
            u, state = tx.update({"w": jnp.ones(1)}, state, w)
            out.append(-u["w"][0])
        return jnp.stack(out)

    np.testing.assert_allclose(np.asarray(lrs(jnp.int32(total), jnp.int32(warmup))), got, rtol=1e-6, atol=1e-7)


def test_clip_by_global_norm_matches_numpy():
    params, c, lr = init_params(), 0.05, 0.5
    assert global_norm(np_grads(params)) > c  # clipping is active
    traj, _ = run(make_optimizer(OptimConfig(name="sgd", lr=lr, clip_norm=c), 10), params, 3)
    p = params
    for t in range(3):
        g = np_grads(p)
        scale = min(1.0, c / global_norm(g))
        p = tmap(lambda w, gi: w - lr * scale * gi, p, g)
        assert_tree_close(traj[t], p)


# ----------------------------------------------------------------------------- SAM


def np_sam(params, steps, lr, rho, frozen=()):
    """w <- w - lr grad L(w + rho g/|g|), g = grad L(w) restricted to the non-frozen layers."""
    traj, p = [], params
    for _ in range(steps):
        g = tmap(lambda x: x, np_grads(p))
        for n in frozen:
            g[n] = {l: np.zeros_like(v) for l, v in g[n].items()}
        norm = global_norm(g)
        g_adv = np_grads(tmap(lambda w, gi: w + rho * gi / norm, p, g))
        p = {n: {l: p[n][l] - (0.0 if n in frozen else lr * g_adv[n][l]) for l in p[n]} for n in p}
        traj.append(p)
    return traj


def test_sam_matches_numpy_ascent_step():
    params = init_params()
    opt = make_optimizer(OptimConfig(name="sgd", lr=0.4, sam_rho=0.3), 10)
    assert opt.grad_evals_per_step == 2
    traj, _ = run(opt, params, 3)
    for got, want in zip(traj, np_sam(params, 3, 0.4, 0.3)):
        assert_tree_close(got, want)
    # A descent-step perturbation (the wrong sign) gives a different trajectory.
    wrong = np_sam(params, 1, 0.4, -0.3)[0]
    assert not np.allclose(traj[0]["layer1"]["kernel"], wrong["layer1"]["kernel"])


def test_sam_with_frozen_layer_perturbs_only_trainable():
    params = init_params()
    opt = make_optimizer(OptimConfig(name="sgd", lr=0.4, sam_rho=0.3, freeze=("layer2",)), 10)
    traj, _ = run(opt, params, 3)
    for got, want in zip(traj, np_sam(params, 3, 0.4, 0.3, frozen=("layer2",))):
        assert_tree_close(got, want)
        assert all(np.array_equal(got["layer2"][l], params["layer2"][l]) for l in params["layer2"])


def test_sam_and_lr_traced_under_vmap():
    params = jax.tree.map(jnp.asarray, init_params())
    cfg = OptimConfig(name="sgd", lr=0.1, sam_rho=0.05)
    lrs, rhos = np.array([0.1, 0.4, 0.2]), np.array([0.05, 0.3, 0.0])
    grad_fn = lambda p, i: jax.grad(jax_loss)(p)

    def final(lr, rho):
        tx = make_optimizer(cfg, 10, lr=lr, sam_rho=rho).tx
        p, s = params, tx.init(params)
        for _ in range(3):
            u, s = tx.update(grad_fn(p, 0), s, p, grad_fn=grad_fn)
            p = optax.apply_updates(p, u)
        return p

    out = jax.jit(jax.vmap(final))(lrs, rhos)
    for k in range(3):
        assert_tree_close(tmap(lambda x: np.asarray(x[k]), out), np_sam(init_params(), 3, lrs[k], rhos[k])[-1])


def test_normalize_is_safe_at_zero():
    u, _ = normalize().update({"a": jnp.zeros(3)}, optax.EmptyState())
    np.testing.assert_array_equal(u["a"], np.zeros(3))
    u, _ = normalize().update({"a": jnp.array([3.0, 4.0])}, optax.EmptyState())
    np.testing.assert_allclose(u["a"], [0.6, 0.8], rtol=1e-12)


def test_per_head_normalize_against_numpy():
    r = np.random.default_rng(3)
    g = {"v": r.normal(size=3), "k": r.normal(size=(3, 4)), "q": r.normal(size=(3, 2, 2))}
    g["k"][1] = g["q"][1] = g["v"][1] = 0.0                          # a head with zero gradient stays 0
    u, _ = normalize(norm="per_head").update(jax.tree.map(jnp.asarray, g), optax.EmptyState())
    norm_H = np.sqrt(g["v"] ** 2 + (g["k"] ** 2).sum(1) + (g["q"] ** 2).sum((1, 2)))
    for h in range(3):
        for name in g:
            want = g[name][h] / norm_H[h] if norm_H[h] > 0 else np.zeros_like(g[name][h])
            np.testing.assert_allclose(np.asarray(u[name][h]), want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="leading"):
        normalize(norm="per_head").update({"a": jnp.ones(3), "b": jnp.ones((2, 3))}, optax.EmptyState())
    with pytest.raises(ValueError, match="sam_norm"):
        OptimConfig(name="sgd", sam_rho=0.1, sam_norm="per_layer")


# ----------------------------------------------------------------------------- Muon

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def np_newton_schulz(m):
    """Quintic Newton-Schulz, 5 steps, on the wide orientation, after Frobenius normalization."""
    tall = m.shape[0] > m.shape[1]
    x = m.T if tall else m
    x = x / (np.linalg.norm(x) + 1e-8)
    a, b, c = NS_COEFFS
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class NpMuon:
    """Muon on matrices not named in `adam_layers`, AdamW (`adam`) on the rest."""

    def __init__(self, lr, adam, beta=0.95, nesterov=True, wd=0.0, adam_layers=("head",), rms=None):
        self.lr, self.adam, self.beta, self.nesterov, self.wd, self.rms = lr, adam, beta, nesterov, wd, rms
        self.adam_layers = adam_layers
        self.mu = {}

    def __call__(self, key, g, w, t):
        if g.ndim != 2 or key[0] in self.adam_layers:
            return self.adam(key, g, w, t)
        beta = self.beta
        mu = self.mu[key] = beta * self.mu.get(key, 0.0) + (1 - beta) * g
        if self.nesterov:
            mu_hat = beta * mu / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta ** t)
        else:
            mu_hat = mu / (1 - beta ** t)
        fan_in, fan_out = g.shape
        scale = np.sqrt(max(1.0, fan_out / fan_in)) if self.rms is None else self.rms * np.sqrt(max(fan_in, fan_out))
        return -self.lr * (np_newton_schulz(mu_hat) * scale + self.wd * w)


def test_numpy_newton_schulz_is_roughly_orthogonal():
    m = np.random.default_rng(3).normal(size=(5, 4))
    s = np.linalg.svd(np_newton_schulz(m), compute_uv=False)
    assert np.all((s > 0.5) & (s < 1.5)), s


def test_muon_labels():
    labels = muon_labels(init_params() | {"embed": {"embedding": np.zeros((7, 3))}}, exclude=("embed", "head"))
    assert labels["layer1"] == {"kernel": "muon", "bias": "adam"}
    assert labels["layer2"]["kernel"] == "muon"
    assert labels["head"]["kernel"] == labels["embed"]["embedding"] == "adam"


def test_muon_factory_matches_numpy():
    params = init_params()
    cfg = OptimConfig(name="muon", lr=0.05, b1=0.85, b2=0.99, eps=1e-7, weight_decay=0.1)
    traj, _ = run(make_optimizer(cfg, 10), params, 4)
    rule = NpMuon(0.05, NpAdamW(0.05, 0.85, 0.99, 1e-7, wd=0.1), wd=0.1)
    for got, want in zip(traj, np_run(params, 4, rule)):
        assert_tree_close(got, want, rtol=1e-8, atol=1e-10)


def test_muon_consistent_rms_matches_numpy_and_sets_the_update_rms():
    """Moonlight's scaling r sqrt(max(fan_in, fan_out)): the numpy rule, and an exactly orthogonal
    direction (one step from zero momentum of an orthogonal gradient) gets update RMS lr * r."""
    params = init_params()
    cfg = OptimConfig(name="muon", lr=0.05, weight_decay=0.1, muon_consistent_rms=0.2)
    traj, _ = run(make_optimizer(cfg, 10), params, 4)
    rule = NpMuon(0.05, NpAdamW(0.05, wd=0.1), wd=0.1, rms=0.2)
    for got, want in zip(traj, np_run(params, 4, rule)):
        assert_tree_close(got, want, rtol=1e-8, atol=1e-10)
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(16, 8)))     # 16 x 8, orthonormal columns
    tx = muon(0.05, consistent_rms=0.2, exclude=())
    u, _ = tx.update({"w": jnp.asarray(q, jnp.float32)}, tx.init({"w": jnp.zeros((16, 8))}), {"w": jnp.zeros((16, 8))})
    # NS5 maps singular values 1 near (not exactly to) 1: RMS within its few-percent band
    np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(u["w"]) ** 2)), 0.05 * 0.2, rtol=0.1)
    with pytest.raises(ValueError, match="muon_consistent_rms"):
        OptimConfig(name="muon", muon_consistent_rms=-1.0)


def test_muon_plain_momentum_and_custom_exclude():
    params = init_params()
    tx = muon(0.03, beta=0.9, nesterov=False, exclude=("layer2",))
    traj, _ = run(tx, params, 3)
    rule = NpMuon(0.03, NpAdamW(0.03), beta=0.9, nesterov=False, adam_layers=("layer2",))
    for got, want in zip(traj, np_run(params, 3, rule)):
        assert_tree_close(got, want, rtol=1e-8, atol=1e-10)


def test_muon_orthogonalizes_multi_axis_kernels_as_reshaped_matrices():
    """A 3-D kernel named in `in_axes` is the prod(input) x prod(output) matrix (attention q [D, N, H]
    -> D x NH, o [N, H, D] -> NH x D); an unnamed 3-D leaf stays on AdamW. Reference: numpy on the
    reshaped matrices, loss 0.5 |W - T|^2 (gradient W - T)."""
    rng = np.random.default_rng(4)
    shapes = {"attn.q.kernel": (6, 2, 4), "attn.o.kernel": (2, 4, 6), "conv": (3, 2, 2)}
    target = {n: rng.normal(size=s) for n, s in shapes.items()}
    params = {n: rng.normal(size=s) for n, s in shapes.items()}
    in_axes = {r"q\.kernel$": 1, r"o\.kernel$": 2}
    tx = muon(0.02, in_axes=in_axes, adam_weight_decay=0.0)
    loss = lambda p: sum(0.5 * jnp.sum((p[n] - target[n]) ** 2) for n in p)  # noqa: E731

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    p = jax.tree.map(jnp.asarray, params)
    s = tx.init(p)
    ref, adam = {n: params[n].copy() for n in shapes}, NpAdamW(0.02)
    mu = {n: 0.0 for n in shapes}
    for t in range(1, 4):
        p, s = step(p, s)
        for n, n_in in (("attn.q.kernel", 1), ("attn.o.kernel", 2), ("conv", None)):
            g = ref[n] - target[n]
            if n_in is None:
                ref[n] = ref[n] + adam(n, g, ref[n], t)
                continue
            fan_in = int(np.prod(g.shape[:n_in]))
            mu[n] = 0.95 * mu[n] + 0.05 * g
            mu_hat = 0.95 * mu[n] / (1 - 0.95 ** (t + 1)) + 0.05 * g / (1 - 0.95 ** t)
            m = mu_hat.reshape(fan_in, -1)
            o = np_newton_schulz(m) * np.sqrt(max(1.0, m.shape[1] / m.shape[0]))
            ref[n] = ref[n] - 0.02 * o.reshape(g.shape)
        for n in shapes:
            np.testing.assert_allclose(np.asarray(p[n]), ref[n], rtol=1e-5, atol=1e-6, err_msg=f"{n} step {t}")
    assert muon_labels(params, (), in_axes) == {"attn.q.kernel": "muon", "attn.o.kernel": "muon", "conv": "adam"}
    with pytest.raises(ValueError, match=r"muon_in_axes\['x'\]"):
        OptimConfig(name="muon", muon_in_axes={"x": 0})


# ----------------------------------------------------------------------------- PCGrad


def np_pcgrad(g_GxP, order_GxG, conditional):
    out = []
    for i in range(len(g_GxP)):
        gi = g_GxP[i].copy()
        for j in order_GxG[i]:
            if j == i:
                continue
            dot, sq = gi @ g_GxP[j], g_GxP[j] @ g_GxP[j]
            if sq > 0 and (not conditional or dot < 0):
                gi = gi - dot / sq * g_GxP[j]
        out.append(gi)
    return np.stack(out)


@pytest.mark.parametrize("conditional", [True, False])
def test_pcgrad_project_matches_numpy(conditional):
    rng = np.random.default_rng(4)
    g_GxP = rng.normal(size=(6, 9))
    g_GxP[2] = 0.0  # a zero gradient is skipped, not divided by
    order_GxG = np.stack([rng.permutation(6) for _ in range(6)])
    got = pcgrad_project(jnp.asarray(g_GxP), jnp.asarray(order_GxG), conditional)
    want = np_pcgrad(g_GxP, order_GxG, conditional)
    np.testing.assert_allclose(got, want, **TOL)
    assert np.isfinite(np.asarray(got)).all()


def test_pcgrad_two_task_toy():
    """g1 = (1, 0), g2 = (-1, 1) conflict (g1.g2 = -1):
    g1' = g1 + (1/2) g2 = (0.5, 0.5) and g2' = g2 + g1 = (0, 1); each is orthogonal to the other original."""
    g_GxP = jnp.array([[1.0, 0.0], [-1.0, 1.0]])
    order = jnp.array([[0, 1], [0, 1]])
    got = np.asarray(pcgrad_project(g_GxP, order, True))
    np.testing.assert_allclose(got, [[0.5, 0.5], [0.0, 1.0]], **TOL)
    np.testing.assert_allclose([got[0] @ [-1.0, 1.0], got[1] @ [1.0, 0.0]], [0.0, 0.0], atol=1e-12)
    u, _ = pcgrad(shuffle=False).update({"w": g_GxP}, pcgrad().init(None))
    np.testing.assert_allclose(u["w"], [0.25, 0.75], **TOL)
    # Non-conflicting pair: untouched when conditional, projected when not.
    g_GxP = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(pcgrad_project(g_GxP, order, True), g_GxP, **TOL)
    np.testing.assert_allclose(pcgrad_project(g_GxP, order, False), [[0.5, -0.5], [0.0, 1.0]], **TOL)
    g_GxP = jnp.array([[1.0, 0.0], [0.01, 1.0]])  # barely positive dot: still no conflict
    np.testing.assert_allclose(pcgrad_project(g_GxP, order, True), g_GxP, **TOL)


def _stacked_tree(rng, groups):
    return {"a": rng.normal(size=(groups, 2, 3)), "b": {"c": rng.normal(size=(groups, 4))}}


def _flat(tree, groups):
    return np.concatenate([tree["a"].reshape(groups, -1), tree["b"]["c"].reshape(groups, -1)], axis=1)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_pcgrad_transform_index_order(reduce):
    tree = _stacked_tree(np.random.default_rng(5), 5)
    tx = pcgrad(conditional=True, shuffle=False, reduce=reduce)
    u, state = tx.update(jax.tree.map(jnp.asarray, tree), tx.init(None))
    proj = np_pcgrad(_flat(tree, 5), np.tile(np.arange(5), (5, 1)), True)
    want = proj.mean(0) if reduce == "mean" else proj.sum(0)
    assert u["a"].shape == (2, 3) and u["b"]["c"].shape == (4,)
    np.testing.assert_allclose(np.concatenate([u["a"].ravel(), u["b"]["c"]]), want, **TOL)
    assert int(state.count) == 1


def test_pcgrad_shuffle_uses_a_random_order_per_group_and_step():
    groups = 3
    tree = _stacked_tree(np.random.default_rng(6), groups)
    g_GxP = _flat(tree, groups)
    # All 2^3 choices of order of the other two groups, for each i.
    candidates = []
    for choice in itertools.product([0, 1], repeat=groups):
        order = [[i] + (others if c == 0 else others[::-1]) for i, c in enumerate(choice)
                 for others in [[j for j in range(groups) if j != i]]]
        candidates.append(np_pcgrad(g_GxP, np.array(order), conditional=False).mean(0))
    assert min(np.abs(a - b).max() for a, b in itertools.combinations(candidates, 2)) > 1e-6
    tx = pcgrad(conditional=False, shuffle=True, seed=3)
    state, seen = tx.init(None), set()
    update = jax.jit(tx.update)
    for _ in range(12):
        u, state = update(jax.tree.map(jnp.asarray, tree), state)
        got = np.concatenate([np.asarray(u["a"]).ravel(), np.asarray(u["b"]["c"])])
        dists = [np.abs(got - c).max() for c in candidates]
        assert min(dists) < 1e-10
        seen.add(int(np.argmin(dists)))
    assert len(seen) > 1  # orders change from step to step
    assert state.key.dtype == jnp.uint32 and int(state.count) == 12


def test_factory_pcgrad_per_example_with_freeze():
    rng = np.random.default_rng(7)
    params = init_params()
    per_example = {n: {l: rng.normal(size=(2,) + v.shape) for l, v in p.items()} for n, p in params.items()}
    cfg = OptimConfig(name="sgd", lr=0.5, pcgrad=True, pcgrad_conditional=False, freeze=("head",))
    opt = make_optimizer(cfg, 10)
    assert opt.grad_mode == "per_example"
    jparams = jax.tree.map(jnp.asarray, params)
    u, _ = jax.jit(opt.tx.update)(jax.tree.map(jnp.asarray, per_example), opt.tx.init(jparams), jparams)
    names = [(n, l) for n in ("layer1", "layer2") for l in ("kernel", "bias")]
    g_GxP = np.stack([np.concatenate([per_example[n][l][k].ravel() for n, l in names]) for k in range(2)])
    want_P = -0.5 * np_pcgrad(g_GxP, np.array([[0, 1], [0, 1]]), False).mean(0)
    got_P = np.concatenate([np.asarray(u[n][l]).ravel() for n, l in names])
    np.testing.assert_allclose(got_P, want_P, **TOL)
    for l in ("kernel", "bias"):  # frozen: zero update with the parameter's shape
        np.testing.assert_array_equal(u["head"][l], np.zeros_like(params["head"][l]))


def test_pcgrad_with_sam_and_freeze_runs_per_example():
    params = jax.tree.map(jnp.asarray, init_params())
    per_example_grad = lambda p, i: jax.vmap(lambda x, y: jax.grad(jax_loss)(p, x[None], y[None]))(X_NxI, Y_NxO)
    opt = make_optimizer(OptimConfig(name="adam", lr=0.01, pcgrad=True, sam_rho=0.1, freeze=("layer1",)), 10)

    @jax.jit
    def step(p):
        u, _ = opt.tx.update(per_example_grad(p, 0), opt.tx.init(p), p, grad_fn=per_example_grad)
        return optax.apply_updates(p, u)

    new = step(params)
    assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, params)
    assert np.array_equal(new["layer1"]["kernel"], params["layer1"]["kernel"])
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new))


# ----------------------------------------------------------------------------- gradient bias


def np_gradient_bias(grads, gamma, every):
    out, bias = [], None
    for t, g in enumerate(grads):
        if t % every == 0:
            bias = g
        out.append(g + gamma * bias)
    return np.stack(out)


def _run_bias(gamma, grads_TxP, every):
    tx = gradient_bias(gamma, every)

    def body(state, g_P):
        u, state = tx.update({"w": g_P}, state)
        return state, u["w"]

    return jax.lax.scan(body, tx.init({"w": grads_TxP[0]}), grads_TxP)[1]


def test_gradient_bias_matches_numpy():
    grads_TxP = np.random.default_rng(8).normal(size=(8, 4))
    got = _run_bias(0.5, jnp.asarray(grads_TxP), 3)
    np.testing.assert_allclose(got, np_gradient_bias(grads_TxP, 0.5, 3), **TOL)
    np.testing.assert_allclose(got[3], 1.5 * grads_TxP[3], **TOL)  # refresh step: (1 + gamma) g_t


def test_gradient_bias_gamma_traced_under_vmap():
    grads_TxP = np.random.default_rng(9).normal(size=(7, 4))
    gammas = np.array([0.0, 0.3, 2.0])
    got = jax.jit(jax.vmap(_run_bias, in_axes=(0, None, None)), static_argnums=2)(gammas, jnp.asarray(grads_TxP), 2)
    for k, gamma in enumerate(gammas):
        np.testing.assert_allclose(got[k], np_gradient_bias(grads_TxP, gamma, 2), **TOL)


def test_factory_gradient_bias_and_override():
    params = init_params()
    traj, _ = run(make_optimizer(OptimConfig(name="sgd", lr=0.1, grad_bias_gamma=0.2, grad_bias_every=2), 10,
                                 grad_bias_gamma=jnp.asarray(0.7)), params, 4)
    bias, p = {}, params
    for t in range(4):
        g = np_grads(p)
        bias = g if t % 2 == 0 else bias
        p = tmap(lambda w, gi, b: w - 0.1 * (gi + 0.7 * b), p, g, bias)
        assert_tree_close(traj[t], p)


# ----------------------------------------------------------------------------- partition


class Pair(NamedTuple):
    kernel: np.ndarray
    bias: np.ndarray


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Block:
    w: np.ndarray


def test_param_path_dicts_lists_namedtuples_dataclasses():
    tree = {"layers": [Pair(np.ones(1), np.ones(1)), Block(np.ones(1))], "embed": {"table": np.ones(1)}}
    paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths == ["embed.table", "layers.0.kernel", "layers.0.bias", "layers.1.w"]


def test_param_path_nnx_state():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(2, 3, rngs=rngs), nnx.Linear(3, 1, rngs=rngs)])

    state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    paths = sorted(param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0])
    assert paths == ["layers.0.bias", "layers.0.kernel", "layers.1.bias", "layers.1.kernel"]
    labels = label_params(state, [(r"\.0\.", "first")], "rest")
    assert sorted(jax.tree.leaves(labels)) == ["first", "first", "rest", "rest"]


def test_label_params_and_scale_by_group_first_match_wins():
    params = init_params()
    labels = label_params(params, [("layer1", "a"), ("layer", "b")], "c")
    assert labels["layer1"] == {"kernel": "a", "bias": "a"} and labels["layer2"]["bias"] == "b"
    assert labels["head"]["kernel"] == "c"
    ones = tmap(np.ones_like, params)
    u, _ = scale_by_group({"layer1": 0.1, "layer": 0.5, r"head\.bias": 3.0}).update(ones, optax.EmptyState())
    assert float(u["layer1"]["kernel"][0, 0]) == 0.1 and float(u["layer2"]["bias"][0]) == 0.5
    assert float(u["head"]["kernel"][0, 0]) == 1.0 and float(u["head"]["bias"][0]) == 3.0


def test_layer_lr_scales_the_base_update():
    params = init_params()
    factors = {"layer1": 0.1, "layer2": 0.5, "head": 1.0}
    adam = NpAdamW(0.02)
    rule = lambda key, g, w, t: factors[key[0]] * adam(key, g, w, t)
    cfg = OptimConfig(name="adam", lr=0.02, layer_lr={"layer1": 0.1, "layer": 0.5})
    traj, _ = run(make_optimizer(cfg, 10), params, 3)
    for got, want in zip(traj, np_run(params, 3, rule)):
        assert_tree_close(got, want)


def test_freeze_adamw_bit_identical_and_stateless():
    params = init_params()
    cfg = OptimConfig(name="adamw", lr=0.05, weight_decay=0.3, freeze=("layer1",))
    traj, state = run(make_optimizer(cfg, 10), params, 3)
    adamw = NpAdamW(0.05, wd=0.3)
    want = np_run(params, 3, lambda key, g, w, t: 0.0 * w if key[0] == "layer1" else adamw(key, g, w, t))
    for got, w in zip(traj, want):
        assert_tree_close(got, w)
        for l in ("kernel", "bias"):
            assert got["layer1"][l].tobytes() == params["layer1"][l].tobytes()
    state_paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert not any("layer1" in p for p in state_paths), state_paths
    trainable = sum(v.size for n in ("layer2", "head") for v in params[n].values())
    assert sum(np.size(x) for x in jax.tree.leaves(state)) == 2 * trainable + 1  # mu, nu and one count


def test_freeze_transform_on_its_own():
    params = jax.tree.map(jnp.asarray, init_params())
    tx = freeze(optax.sgd(1.0), [r"^head\."])
    u, _ = tx.update(tmap(jnp.ones_like, params), tx.init(params), params)
    assert float(u["head"]["kernel"].sum()) == 0.0 and float(u["layer1"]["kernel"][0, 0]) == -1.0


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs,total,overrides,match", [
    (dict(name="lion"), 10, {}, "name"),
    (dict(schedule="step"), 10, {}, "schedule"),
    (dict(lr=-1.0), 10, {}, "lr"),
    (dict(), 10, dict(lr=-0.1), "lr"),
    (dict(b2=1.0), 10, {}, "b2"),
    (dict(weight_decay=-0.1), 10, {}, "weight_decay"),
    (dict(schedule="cosine"), 0, {}, "total_steps"),
    (dict(schedule="warmup_cosine", warmup_steps=10), 10, {}, "warmup_steps"),
    (dict(schedule="linear_warmup"), 10, {}, "warmup_steps"),
    (dict(warmup_steps=5), 10, {}, "no effect with schedule='constant'"),
    (dict(schedule="cosine", warmup_steps=5), 10, {}, "no effect with schedule='cosine'"),
    (dict(grad_bias_every=0), 10, {}, "grad_bias_every"),
    (dict(freeze=("[",)), 10, {}, "freeze"),
    (dict(layer_lr={"x": -1.0}), 10, {}, "layer_lr"),
    (dict(), 10, dict(foo=1.0), "foo"),
    (dict(), 10, dict(sam_rho=0.1), "sam_rho"),
    (dict(), 10, dict(grad_bias_gamma=0.1), "grad_bias_gamma"),
    (dict(name="adam"), 10, dict(weight_decay=0.1), "weight_decay"),
])
def test_make_optimizer_validation(kwargs, total, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(OptimConfig(**kwargs), total, **overrides)


@pytest.mark.parametrize("kwargs, field", [(dict(freeze=("haed",)), "freeze"),
                                           (dict(layer_lr={"layers.0": 0.5, "read_out": 0.1}), "layer_lr"),
                                           (dict(freeze=("haed",), sam_rho=0.05), "freeze")])
def test_a_pattern_that_matches_no_parameter_is_refused_at_init(kwargs, field):
    """A typo'd freeze / layer_lr regex would silently change nothing: init names it and the paths."""
    from lsb_jax.errors import UsageError

    params = {"layers": [{"kernel": jnp.ones((2, 2))}], "head": jnp.ones(2)}
    tx = make_optimizer(OptimConfig(name="adam", lr=0.1, **kwargs), 10).tx
    with pytest.raises(UsageError, match=rf"OptimConfig.{field}: '\w+' matches no parameter .*head, layers.0.kernel"):
        tx.init(params)
    fine = dict(freeze=("head",), layer_lr={"layers": 0.5})
    make_optimizer(OptimConfig(name="adam", lr=0.1, **fine), 10).tx.init(params)    # patterns that match: fine


def test_pcgrad_seed_may_be_traced():
    keys = jax.vmap(lambda seed: pcgrad(seed=seed).init(None).key)(jnp.arange(3))
    for seed in range(3):
        np.testing.assert_array_equal(keys[seed], jax.random.PRNGKey(seed))


def test_freeze_on_nnx_state():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(2, 3, rngs=rngs), nnx.Linear(3, 1, rngs=rngs)])

    graphdef, params = nnx.split(Net(nnx.Rngs(0)), nnx.Param)
    grads = jax.tree.map(jnp.ones_like, params)
    tx = make_optimizer(OptimConfig(name="adamw", lr=0.1, weight_decay=0.5, freeze=(r"layers\.1\.",)), 10).tx
    new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    before, after = nnx.to_pure_dict(params), nnx.to_pure_dict(new)
    assert np.asarray(after["layers"][1]["kernel"]).tobytes() == np.asarray(before["layers"][1]["kernel"]).tobytes()
    assert not np.allclose(after["layers"][0]["kernel"], before["layers"][0]["kernel"])
