"""lsb_jax.models.mlp: the forward pass and its derivatives (reverse mode, vmapped over an ensemble,
forward mode and a Hessian) against numpy backpropagation in float64 and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsb_jax.models.mlp import dense, init_mlp, mlp_apply

SIZES = (6, 5, 4, 1)


def _np_params(params):
    return [tuple(np.asarray(params[f"layers_{l}"][name], np.float64) for name in ("kernel", "bias"))
            for l in range(len(params))]


def _np_loss_and_grads(params, x, y):
    """sum_b (f(x_b) - y_b)^2 of the tanh MLP and its gradients, by explicit backpropagation."""
    layers = _np_params(params)
    hs, pre = [x.astype(np.float64)], []
    for l, (w, b) in enumerate(layers):
        z = hs[-1] @ w + b
        pre.append(z)
        hs.append(np.tanh(z) if l < len(layers) - 1 else z)
    err = hs[-1][:, 0] - y
    g = 2 * err[:, None]
    grads = [None] * len(layers)
    for l in reversed(range(len(layers))):
        w, _ = layers[l]
        grads[l] = {"kernel": hs[l].T @ g, "bias": g.sum(0)}
        g = (g @ w.T) * (1 - np.tanh(pre[l - 1]) ** 2) if l > 0 else None
    return float(np.sum(err ** 2)), grads, hs


def _loss(params, x, y):
    return jnp.sum((mlp_apply(params, x, "tanh")[:, 0] - y) ** 2)


def _data(seed, n=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, SIZES[0])).astype(np.float32), rng.normal(size=n).astype(np.float32)


def test_gradients_of_a_vmapped_ensemble_match_numpy_backprop():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params_M = jax.vmap(lambda k: init_mlp(k, SIZES))(keys)
    xs, ys = zip(*(_data(m) for m in range(3)))
    grads_M = jax.jit(jax.vmap(jax.grad(_loss)))(params_M, jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys)))
    for m in range(3):
        params = jax.tree.map(lambda a: a[m], params_M)
        _, want, _ = _np_loss_and_grads(params, xs[m], ys[m])
        for l, g in enumerate(want):
            for name in ("kernel", "bias"):
                np.testing.assert_allclose(np.asarray(grads_M[f"layers_{l}"][name][m]), g[name], rtol=1e-4, atol=1e-5)


def test_forward_mode_and_hessian():
    params = init_mlp(jax.random.PRNGKey(1), SIZES)
    x, y = _data(5)
    loss, grads, hs = _np_loss_and_grads(params, x, y)
    tangent = jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(9).normal(size=a.shape), a.dtype), params)
    value, directional = jax.jvp(lambda p: _loss(p, x, y), (params,), (tangent,))
    want = sum(float(np.sum(np.asarray(tangent[f"layers_{l}"][n], np.float64) * g[n]))
               for l, g in enumerate(grads) for n in ("kernel", "bias"))
    assert float(value) == pytest.approx(loss, rel=1e-5)
    assert float(directional) == pytest.approx(want, rel=1e-4, abs=1e-5)
    # the loss is quadratic in the linear last layer's kernel: its Hessian is 2 H^T H (H: last hidden layer)
    last = f"layers_{len(SIZES) - 2}"
    hess = jax.hessian(lambda w: _loss({**params, last: {**params[last], "kernel": w}}, x, y))(params[last]["kernel"])
    np.testing.assert_allclose(np.asarray(hess)[:, 0, :, 0], 2 * hs[-2].T @ hs[-2], rtol=1e-4, atol=1e-5)


def test_dense_is_the_matrix_product_with_its_derivatives():
    rng = np.random.default_rng(3)
    x, w, g = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    y, vjp = jax.vjp(dense, jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    dx, dw = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(np.asarray(y), x @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dx), g @ w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dw), x.T @ g, rtol=1e-5, atol=1e-6)
    # only the weights' tangent (the data's is zero): forward mode gives x @ dw
    _, t = jax.jvp(lambda w_: dense(jnp.asarray(x, jnp.float32), w_), (jnp.asarray(w, jnp.float32),),
                   (jnp.asarray(g[:3], jnp.float32),))
    np.testing.assert_allclose(np.asarray(t), x @ g[:3], rtol=1e-5, atol=1e-6)


def test_a_single_example_of_rank_one():
    params = init_mlp(jax.random.PRNGKey(2), SIZES)
    x, y = _data(6, n=1)
    one = jax.grad(lambda p: jnp.sum((mlp_apply(p, jnp.asarray(x[0]), "tanh")[0] - y[0]) ** 2))(params)
    _, want, _ = _np_loss_and_grads(params, x, y)
    for l, g in enumerate(want):
        np.testing.assert_allclose(np.asarray(one[f"layers_{l}"]["kernel"]), g["kernel"], rtol=1e-4, atol=1e-5)
