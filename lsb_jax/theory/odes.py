"""Reduced ODEs of the MLSA model on the paper's ansatz, and closed-form learning times.

On the ansatz one head learns each eigen-direction e_i with balanced factors
v_h = a_i, k_h = a_i e_i, q_h = a_i e_i, so m_i = a_i^3 and the population loss separates:
L = sum_i lam_i s_i (a_i^3 - m*_i)^2 + const (see `mlsa`). The gradient with respect to each of
the head's three factors is

    G_i(a) = 2 kappa_i a^2 (a^3 / m*_i - 1),     kappa_i = lam_i s_i m*_i = lam_i^2 omega_i,

and time is t = lr * steps (gradient flow is the small-step limit of GD). Derived here, not
transcribed; the tests check every formula against scipy's `solve_ivp` and the simulated model.

    GD:             da_i/dt = -G_i(a_i)
    SAM, per head:  da_i/dt = -G_i(a_i + (rho/sqrt3) sign G_i(a_i))
    SAM, global:    da_i/dt = -G_i(a_i + rho G_i(a) / ||g(a)||),  ||g||^2 = 3 sum_j G_j(a_j)^2

(A head's gradient is (G, G, G) over its three factors, so the per-head normalized perturbation
moves each by rho/sqrt3.) Early on (a^3 << m*) GD reads da/dt = 2 kappa a^2, the paper's
tau dv/dt = lam^2 v^2 with omega = 1; per-head SAM is GD shifted by c = rho/sqrt3,
da/dt = 2 kappa (a - c)^2 = 2 kappa (a^2 - 2ca + c^2), whose linear term is the paper's
-2 rho sqrt3 lam^2 v up to the constant put into the normalization. The shift is the same for
every feature, so per-head SAM changes the learning times' *ratios* only through saturation;
the global norm couples the heads (a head's perturbation is its share of the total gradient),
which is where SAM's spreading of the learning times comes from (`theory/entropy_rho.py`).

Closed form (GD, and per-head SAM before its first overshoot): with u = a / m*^(1/3),
du/dt = 2 kappa m*^(1/3) u^2 (1 - u^3), so the time to reach m_i = f m*_i is
t_f = [F(f^(1/3)) - F(u_0)] / (2 kappa m*^(1/3)), F(u) = integral du / (u^2 (1 - u^3))
= -1/u + (1/3) [-ln(1 - u) + (1/2) ln(u^2 + u + 1) - sqrt3 arctan((2u + 1)/sqrt3)].
Per-head SAM: the same with a_0 and a_f shifted down by c (never learned if a_0 <= c).
"""

from __future__ import annotations

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.theory import mlsa

SQRT3 = math.sqrt(3.0)
KINDS = ("gd", "sam_per_head", "sam_global")


def factor_gradient(a_D, kappa_D, mstar_D):
    """G_i(a) = 2 kappa_i a_i^2 (a_i^3 / m*_i - 1) -> [D]."""
    return 2.0 * kappa_D * a_D ** 2 * (a_D ** 3 / mstar_D - 1.0)


def coefficients(spec: mlsa.Spectrum):
    """(kappa [D], m* [D]) of a spectrum."""
    return spec.lam ** 2 * spec.omega, mlsa.optimal_features(spec)


def vector_field(kind: str, rho: float = 0.0, eps: float = 1e-30):
    """f(t, a, (kappa, m*)) -> da/dt for `kind` in KINDS."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def field(t, a_D, args):
        kappa_D, mstar_D = args
        g_D = factor_gradient(a_D, kappa_D, mstar_D)
        if kind == "gd":
            return -g_D
        if kind == "sam_per_head":
            shift_D = (rho / SQRT3) * jnp.sign(g_D)
        else:
            shift_D = rho * g_D / jnp.sqrt(3.0 * jnp.sum(g_D ** 2) + eps)
        return -factor_gradient(a_D + shift_D, kappa_D, mstar_D)

    return field


def integrate(kind: str, spec: mlsa.Spectrum, a0, ts, rho: float = 0.0, *, dt: float | None = None,
              rtol: float = 1e-6, atol: float = 1e-9, max_steps: int = 100_000) -> jax.Array:
    """Solves the reduced ODE from a(0) = a0 ([D] or scalar); returns m_i(t) = a_i(t)^3 at `ts` -> [T, D].

    GD: adaptive Tsit5 (diffrax, PID controller). SAM's field is discontinuous where a feature
    sits at its target (the normalized gradient flips sign: a Filippov sliding mode, where
    discrete SAM chatters), which stalls adaptive solvers; give `dt` to integrate it with
    fixed-step Heun instead (the solution converges as dt -> 0; discrete SAM with learning
    rate lr is close to dt = lr). t is in units of lr * steps. Jittable, vmappable.
    """
    kappa_D, mstar_D = coefficients(spec)
    a0_D = jnp.broadcast_to(jnp.asarray(a0, jnp.float32), kappa_D.shape)
    ts = jnp.asarray(ts, jnp.float32)
    common = dict(t0=ts[0], t1=ts[-1], y0=a0_D, args=(kappa_D, mstar_D), saveat=diffrax.SaveAt(ts=ts))
    term = diffrax.ODETerm(vector_field(kind, rho))
    if dt is None:
        if kind != "gd":
            raise ValueError(f"{kind}: SAM's reduced ODE needs a fixed step `dt` "
                             "(its field is discontinuous at the targets)")
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), dt0=None, max_steps=max_steps,
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), **common)
    else:
        n = int(math.ceil(float(ts[-1] - ts[0]) / dt)) + 1
        sol = diffrax.diffeqsolve(term, diffrax.Heun(), dt0=dt, max_steps=n, **common)
    return sol.ys ** 3


def _F(u):
    u = np.asarray(u, np.float64)
    return -1.0 / u + (-np.log1p(-u) + 0.5 * np.log(u * u + u + 1.0)
                       - SQRT3 * np.arctan((2.0 * u + 1.0) / SQRT3)) / 3.0


def learning_time(lam, a0, fraction: float = 0.5, omega=None, context: int | None = None, noise: float = 0.0,
                  rho: float = 0.0, lr: float = 1.0) -> np.ndarray:
    """Closed-form time (in steps of size lr) for m_i to reach `fraction` * m*_i on the ansatz.

    GD when rho = 0; per-head SAM (exact until its first overshoot of the target) when rho > 0.
    inf where the feature is never learned (a0 <= rho/sqrt3); 0 where it starts past the mark.
    float64 numpy (this is a reference, not a training path).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    lam = np.asarray(lam, np.float64)
    omega = np.ones_like(lam) if omega is None else np.asarray(omega, np.float64)
    inv_n = 0.0 if context is None else 1.0 / context
    s = (1.0 + inv_n) * lam ** 2 * omega + (np.sum(lam * omega) + noise) * lam * inv_n
    mstar = omega * lam / s
    kappa = lam ** 2 * omega
    scale = np.cbrt(mstar)
    c = rho / SQRT3
    u0 = (np.broadcast_to(np.asarray(a0, np.float64), lam.shape) - c) / scale
    uf = (np.cbrt(fraction) * scale - c) / scale
    out = np.full(lam.shape, np.inf)
    ok = u0 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (_F(uf) - _F(np.where(ok, u0, 0.5))) / (2.0 * kappa * scale)
    out[ok] = np.maximum(t[ok], 0.0)
    return out / lr
