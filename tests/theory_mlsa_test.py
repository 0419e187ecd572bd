"""MLSA model: closed-form population loss vs Monte Carlo, gradients vs finite differences,
the invariant subspace, and GD/SAM steps vs numpy and vs the foundation's optax SAM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.theory import dynamics, mlsa


def np_loss(v, k, q, lam, om, n, noise):
    """Independent float64 transcription: E[(x_q^T M c - y_q)^2] via S = E[c c^T]."""
    sig, ome = np.diag(lam), np.diag(om)
    m = np.einsum("h,hi,hj->ij", v, q, k)
    inv_n = 0.0 if n is None else 1.0 / n
    s = (1 + inv_n) * sig @ ome @ sig + (np.trace(ome @ sig) + noise) * sig * inv_n
    return np.trace(sig @ m @ s @ m.T) - 2 * np.trace(sig @ m @ sig @ ome) + np.trace(sig @ ome) + noise


def random_params(seed, h=3, d=4, scale=0.6):
    rng = np.random.default_rng(seed)
    return {"v": rng.normal(0, scale, h), "k": rng.normal(0, scale, (h, d)), "q": rng.normal(0, scale, (h, d))}


def test_closed_form_loss_matches_monte_carlo_of_token_model():
    lam, om, n, noise = np.array([2.0, 1.0, 0.5, 0.25]), np.array([1.5, 1.0, 0.5, 1.0]), 6, 0.3
    p = random_params(0)
    spec = mlsa.spectrum(lam, om, n, noise)
    closed = float(mlsa.population_loss(jax.tree.map(jnp.asarray, p), spec))
    np.testing.assert_allclose(closed, np_loss(p["v"], p["k"], p["q"], lam, om, n, noise), rtol=1e-5)
    # Monte Carlo in numpy through the full token-level attention formula
    rng = np.random.default_rng(1)
    b, d = 400_000, 4
    x = rng.normal(size=(b, n, d)) * np.sqrt(lam)
    xq = rng.normal(size=(b, d)) * np.sqrt(lam)
    w = rng.normal(size=(b, d)) * np.sqrt(om)
    y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(noise) * rng.normal(size=(b, n))
    yq = np.einsum("bd,bd->b", xq, w) + np.sqrt(noise) * rng.normal(size=b)
    z = np.concatenate([x, y[..., None]], -1)
    zq = np.concatenate([xq, np.zeros((b, 1))], -1)
    tp = {key: np.asarray(val, np.float64) for key, val in mlsa.embed_tokens(jax.tree.map(jnp.asarray, p)).items()}
    pred = np.einsum("bnh,bnh,bh->b", z @ tp["v"].T, z @ tp["k"].T, zq @ tp["q"].T) / n
    err = (pred - yq) ** 2
    assert abs(err.mean() - closed) < 4 * err.std() / np.sqrt(b), (err.mean(), closed)


def test_token_model_on_subspace_equals_reduced_prediction():
    spec = mlsa.spectrum([1.0, 0.5, 0.3], context=5, noise=0.1)
    seqs = mlsa.sample_sequences(jax.random.PRNGKey(0), spec, 64, 5)
    p = jax.tree.map(jnp.asarray, random_params(2, h=2, d=3))
    z, zq = mlsa.tokens(seqs)
    np.testing.assert_allclose(mlsa.token_predict(mlsa.embed_tokens(p), z, zq), mlsa.predict(p, seqs),
                               rtol=1e-5, atol=1e-6)
    f64 = {key: np.asarray(val, np.float64) for key, val in p.items()}
    x, y, xq = (np.asarray(seqs[key], np.float64) for key in ("x", "y", "xq"))
    m = np.einsum("h,hi,hj->ij", f64["v"], f64["q"], f64["k"])
    c = np.einsum("bnd,bn->bd", x, y) / 5
    # float32 error budget: a few ulps of the sum of absolute terms (values can cross zero, so no rtol alone)
    c_abs = np.einsum("bnd,bn->bd", np.abs(x), np.abs(y)) / 5
    scale = np.einsum("bi,ij,bj->b", np.abs(xq), np.abs(m), c_abs)
    err = np.abs(np.asarray(mlsa.predict(p, seqs), np.float64) - np.einsum("bi,ij,bj->b", xq, m, c))
    assert np.all(err <= 16 * np.finfo(np.float32).eps * scale), (err / scale).max()


def test_subspace_is_invariant_under_antithetic_tasks():
    """With every task w paired with -w (same inputs, labels negated), the gradient of the
    token model's loss has no component off the reduced subspace: the symmetry argument."""
    spec = mlsa.spectrum([1.0, 0.6, 0.3], context=4, noise=0.0)
    seqs = mlsa.sample_sequences(jax.random.PRNGKey(3), spec, 256, 4)
    z, zq = mlsa.tokens(seqs)
    z2 = z.at[..., -1].multiply(-1.0)
    yq = jnp.concatenate([seqs["yq"], -seqs["yq"]])
    zz, zzq = jnp.concatenate([z, z2]), jnp.concatenate([zq, zq])
    tp = mlsa.embed_tokens(jax.tree.map(jnp.asarray, random_params(4, h=2, d=3)))
    g = jax.grad(lambda t: jnp.mean((mlsa.token_predict(t, zz, zzq) - yq) ** 2))(tp)
    assert float(jnp.abs(g["v"][:, :-1]).max()) < 1e-5 and float(jnp.abs(g["k"][:, -1]).max()) < 1e-5  # float32 sums
    assert float(jnp.abs(g["q"][:, -1]).max()) == 0.0
    assert float(jnp.abs(g["v"][:, -1]).max()) > 1e-3  # the on-subspace gradient is not trivially zero


def test_gradient_matches_finite_differences():
    lam, om, n, noise = np.array([2.0, 1.0, 0.5]), np.array([1.0, 2.0, 0.5]), 10, 0.2
    p = random_params(5, h=2, d=3, scale=0.5)
    g = jax.grad(mlsa.population_loss)(jax.tree.map(jnp.asarray, p), mlsa.spectrum(lam, om, n, noise))
    h = 1e-6
    for name in ("v", "k", "q"):
        fd = np.zeros_like(p[name])
        for idx in np.ndindex(p[name].shape):
            plus = {key: val.copy() for key, val in p.items()}
            minus = {key: val.copy() for key, val in p.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            fd[idx] = (np_loss(plus["v"], plus["k"], plus["q"], lam, om, n, noise)
                       - np_loss(minus["v"], minus["k"], minus["q"], lam, om, n, noise)) / (2 * h)
        np.testing.assert_allclose(np.asarray(g[name]), fd, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("n", [None, 8])
def test_optimal_features_minimize_the_loss(n):
    lam, om, noise = np.array([3.0, 1.0, 0.2]), np.array([1.0, 0.5, 2.0]), 0.4
    spec = mlsa.spectrum(lam, om, n, noise)
    mstar = np.asarray(mlsa.optimal_features(spec), np.float64)
    if n is None:
        np.testing.assert_allclose(mstar, 1.0 / lam, rtol=1e-6)
    # the diagonal M* as a one-head-per-direction parameter set; numpy gradient of the quadratic is zero there
    sig, ome = np.diag(lam), np.diag(om)
    inv_n = 0.0 if n is None else 1.0 / n
    s = (1 + inv_n) * sig @ ome @ sig + (np.trace(ome @ sig) + noise) * sig * inv_n
    grad_m = 2 * sig @ np.diag(mstar) @ s - 2 * sig @ ome @ sig
    np.testing.assert_allclose(grad_m, 0.0, atol=1e-5)
    p = {"v": np.cbrt(mstar), "k": np.diag(np.cbrt(mstar)), "q": np.diag(np.cbrt(mstar))}
    np.testing.assert_allclose(float(mlsa.min_loss(spec)), np_loss(p["v"], p["k"], p["q"], lam, om, n, noise),
                               rtol=1e-4)


def np_sam_step(p, lam, lr, rho, per_head):
    """One SAM step in float64 numpy with finite-difference-free analytic gradients (N = inf)."""
    def grad(p):
        m = np.einsum("h,hi,hj->ij", p["v"], p["q"], p["k"])
        gm = 2 * np.diag(lam) @ m @ np.diag(lam ** 2) - 2 * np.diag(lam ** 2)   # dL/dM for Omega = I
        return {"v": np.einsum("ij,hi,hj->h", gm, p["q"], p["k"]), "q": p["v"][:, None] * (p["k"] @ gm.T),
                "k": p["v"][:, None] * (p["q"] @ gm)}
    g = grad(p)
    if per_head:
        nrm = np.sqrt(g["v"] ** 2 + (g["k"] ** 2).sum(1) + (g["q"] ** 2).sum(1))
        e = {"v": rho * g["v"] / nrm, "k": rho * g["k"] / nrm[:, None], "q": rho * g["q"] / nrm[:, None]}
    else:
        nrm = np.sqrt(sum((x ** 2).sum() for x in g.values()))
        e = {key: rho * val / nrm for key, val in g.items()}
    g2 = grad({key: p[key] + e[key] for key in p})
    return {key: p[key] - lr * g2[key] for key in p}


@pytest.mark.parametrize("norm", ["global", "per_head"])
def test_sam_step_matches_numpy(norm):
    lam = np.array([2.0, 1.0, 0.5])
    p = random_params(6, h=3, d=3, scale=0.3)
    step = dynamics.make_step(mlsa.population_loss, "sam", norm)
    got = step(jax.tree.map(jnp.asarray, p), mlsa.spectrum(lam), 0.05, 0.1)
    want = np_sam_step(p, lam, 0.05, 0.1, norm == "per_head")
    for key in p:
        np.testing.assert_allclose(np.asarray(got[key]), want[key], rtol=2e-5, atol=1e-6)


def test_global_sam_equals_the_foundation_optax_sam():
    spec = mlsa.spectrum([2.0, 1.0, 0.5])
    p = jax.tree.map(jnp.asarray, random_params(7, h=3, d=3, scale=0.3))
    opt = make_optimizer(OptimConfig(name="sgd", lr=0.05, sam_rho=0.1), 10)
    loss = lambda params: mlsa.population_loss(params, spec)
    state = opt.tx.init(p)
    ours = p
    step = dynamics.make_step(mlsa.population_loss, "sam", "global")
    for _ in range(5):
        g = jax.grad(loss)(p)
        upd, state = opt.tx.update(g, state, p, grad_fn=lambda params, _: jax.grad(loss)(params))
        p = jax.tree.map(jnp.add, p, upd)
        ours = step(ours, spec, 0.05, 0.1)
    for key in p:
        np.testing.assert_allclose(np.asarray(ours[key]), np.asarray(p[key]), rtol=1e-4, atol=1e-6)


def test_simulator_records_and_vmaps():
    spec = mlsa.spectrum([2.0, 1.0])
    run = dynamics.simulator(mlsa.population_loss, num_steps=100, record_every=10, method="gd")
    p0 = mlsa.init_params(jax.random.PRNGKey(0), 2, 2, mlsa.Init("random", 0.1))
    out = run(p0, spec, 0.05, 0.0)
    assert out.steps.tolist() == list(range(0, 101, 10)) and out.features.shape == (11, 2)
    # record 0 is the initial point; the last equals 100 plain GD steps done by hand
    p = p0
    for _ in range(100):
        p = jax.tree.map(lambda a, b: a - 0.05 * b, p, jax.grad(mlsa.population_loss)(p, spec))
    np.testing.assert_allclose(out.features[-1], mlsa.features(p), rtol=1e-5)
    np.testing.assert_allclose(out.features[0], mlsa.features(p0), rtol=1e-6)
    with pytest.raises(ValueError, match="multiple"):
        dynamics.simulator(mlsa.population_loss, num_steps=101, record_every=10)


def test_grid_compiler_options_keep_ynn_off_the_tiny_reductions_and_the_numbers():
    """A 64-member SAM grid: XLA:CPU by default hands its per-member D = 4 sums to YNNPACK; the
    grid's options keep YNN for dots only. Same trajectories (up to summation order)."""
    from lsb_jax import train
    opts = dynamics.grid_compiler_options()
    if jax.default_backend() != "cpu" or "xla_cpu_experimental_ynn_fusion_type" not in opts:
        pytest.skip("an XLA:CPU without the YNN fusion option")
    assert train.cpu_compiler_options("loop", "tiny_reductions") == opts
    with pytest.raises(KeyError):
        train.cpu_compiler_options("no such kind")
    m, spec = 64, mlsa.spectrum(np.array([4.0, 2.0, 1.0, 0.5]))
    params = jax.vmap(lambda k: mlsa.init_params(k, 4, 4, mlsa.Init("random", 0.05)))(
        jax.random.split(jax.random.PRNGKey(1), m))
    rhos = jnp.linspace(0.0, 0.06, m)
    run = dynamics.simulator(mlsa.population_loss, num_steps=20, record_every=1, method="sam")
    grid = jax.vmap(run, in_axes=(0, None, None, 0))
    default, tuned = jax.jit(grid), jax.jit(grid, compiler_options=opts)

    def ynn_fusions(f):
        hlo = f.lower(params, spec, 0.02, rhos).compile().as_text()
        return [line for line in hlo.splitlines() if "__ynn_fusion" in line and "reduce" in line]

    assert ynn_fusions(default)          # what the options are for (were XLA's default to change, see loop.py)
    assert not ynn_fusions(tuned)
    a, b = default(params, spec, 0.02, rhos), tuned(params, spec, 0.02, rhos)
    np.testing.assert_allclose(np.asarray(b.loss), np.asarray(a.loss), rtol=1e-5, atol=1e-6)   # 20 steps: no chaos yet
    for x, y in zip(jax.tree.leaves(b.params), jax.tree.leaves(a.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
