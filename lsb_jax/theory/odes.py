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
da/dt = 2 kappa (a - c)^2 = 2 kappa (a^2 - 2ca + c^2). In the paper's normalization
(tau dv/dt = lam^2 v^2 for GD) its linear term is -(2 rho / sqrt3) lam^2 v, a third of the seed
summary's -2 rho sqrt3 lam^2 v: that form has each factor moved by sqrt3 rho, i.e. a perturbation of
norm 3 rho per head where SAM's has norm rho (`max_radius` vs `paper_radius_bound`; the tests check
ours against the simulated model). Which radii are "inside Theorem 4.4's conditions" (every feature
leaves the saddle) follows: exactly a_0 > c, rho < sqrt3 a_0 here; v_0 > 2 sqrt3 rho, rho < a_0 / (2 sqrt3),
in the summary's early-phase form (6x smaller: the factor 3, and the linearization's zero at 2c
instead of c). The shift is the same for
every feature, so per-head SAM changes the learning times' *ratios* only through saturation;
the global norm couples the heads (a head's perturbation is its share of the total gradient),
which is where SAM's spreading of the learning times comes from (`theory/mlsa_entropy.py`).

Closed form (GD, and per-head SAM before its first overshoot): with u = a / m*^(1/3),
du/dt = 2 kappa m*^(1/3) u^2 (1 - u^3), so the time to reach m_i = f m*_i is
t_f = [F(f^(1/3)) - F(u_0)] / (2 kappa m*^(1/3)), F(u) = integral du / (u^2 (1 - u^3))
= -1/u + (1/3) [-ln(1 - u) + (1/2) ln(u^2 + u + 1) - sqrt3 arctan((2u + 1)/sqrt3)].
Per-head SAM: the same with a_0 and a_f shifted down by c. A feature starting at a_0 < c rises
only towards c, so it is never learned when its mark a_f lies above c (F is also valid for u < 0,
so a mark below c is reached in finite time).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.theory import dynamics, learning_times, mlsa

SQRT3 = math.sqrt(3.0)
KINDS = ("gd", "sam_per_head", "sam_global")
_SIMULATED = {"gd": ("gd", "global"), "sam_per_head": ("sam", "per_head"), "sam_global": ("sam", "global")}


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
    rate lr is close to dt = lr). t is in units of lr * steps. Jittable and vmappable in `a0`;
    with `dt`, `ts` must be concrete (it sets the number of fixed steps).
    """
    if dt is not None:
        try:
            ts_T = np.asarray(ts, np.float32)
            span = float(ts_T[-1] - ts_T[0])
        except jax.errors.TracerArrayConversionError:
            raise ValueError("integrate: with a fixed step dt, ts must be concrete (a numpy array or a static "
                             "argument), not traced: it sets the number of steps") from None
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
        n = int(math.ceil(span / dt)) + 1
        sol = diffrax.diffeqsolve(term, diffrax.Heun(), dt0=dt, max_steps=n, **common)
    return sol.ys ** 3


def _F(u):
    u = np.asarray(u, np.float64)
    return -1.0 / u + (-np.log1p(-u) + 0.5 * np.log(u * u + u + 1.0)
                       - SQRT3 * np.arctan((2.0 * u + 1.0) / SQRT3)) / 3.0


def learning_time(lam, a0, fraction: float = 0.5, omega=None, context: int | None = None, noise: float = 0.0,
                  rho: float = 0.0, lr: float = 1.0, trace: float | None = None) -> np.ndarray:
    """Closed-form time (in steps of size lr) for m_i to reach `fraction` * m*_i on the ansatz.

    GD when rho = 0; per-head SAM (exact until its first overshoot of the target) when rho > 0.
    0 where it starts at or past the mark; inf where it never gets there (a zero start, or per-head
    SAM from a0 <= c = rho/sqrt3 towards a mark above c: the feature only rises towards c).
    float64 numpy (this is a reference, not a training path). `trace` = sum_j lam_j omega_j of the
    spectrum (default: of `lam`; give the model's own when `lam` is a grid of probe eigenvalues, as
    at finite context every feature's target depends on it).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    lam = np.asarray(lam, np.float64)
    omega = np.ones_like(lam) if omega is None else np.asarray(omega, np.float64)
    inv_n = 0.0 if context is None else 1.0 / context
    trace = np.sum(lam * omega) if trace is None else float(trace)
    s = (1.0 + inv_n) * lam ** 2 * omega + (trace + noise) * lam * inv_n
    mstar = omega * lam / s
    kappa = lam ** 2 * omega
    scale = np.cbrt(mstar)
    c = rho / SQRT3
    a_start, a_mark = np.broadcast_to(np.asarray(a0, np.float64), lam.shape), np.cbrt(fraction) * scale
    u0, uf = (a_start - c) / scale, (a_mark - c) / scale
    # F is smooth on each side of u = 0 (a = c); a feature below c rises only towards c (u -> 0-),
    # so it reaches the mark only when the mark lies below c too (per-head SAM with c > a_f).
    past = a_start >= a_mark
    finite = ~past & (((u0 > 0) & (uf > 0)) | ((u0 < 0) & (uf < 0)))
    out = np.full(lam.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (_F(np.where(finite, uf, 0.5)) - _F(np.where(finite, u0, 0.25))) / (2.0 * kappa * scale)
    out[finite] = t[finite]
    out[past] = 0.0
    return out / lr


def max_radius(a0) -> float:
    """The SAM radius at which per-head SAM stops leaving the saddle: rho = sqrt3 * a0 (each
    factor is moved by rho/sqrt3, so beyond it the perturbation exceeds the factors)."""
    return SQRT3 * a0


def paper_radius_bound(a0) -> float:
    """The radius below which the seed's early-phase SAM ODE tau dv/dt = lam^2 v (v - 2 sqrt3 rho)
    leaves the saddle from v_0 = a0: rho < a0 / (2 sqrt3) (see the module doc)."""
    return a0 / (2.0 * SQRT3)


def dense_eigenvalues(eigenvalues, num: int = 60) -> np.ndarray:
    """A geometric grid from half the smallest to twice the largest eigenvalue (closed-form curves)."""
    return np.geomspace(min(eigenvalues) / 2, max(eigenvalues) * 2, num)


def gd_time_exponent(eigenvalues, a0, fraction: float = 0.5, num: int = 60, context: int | None = None,
                     noise: float = 0.0) -> float:
    """Slope of log t_f against log lam of the GD closed form (`learning_time`, omega = 1, the
    model's context and noise with its own trace) over `dense_eigenvalues`: a least-squares line
    (np.polyfit) through the eigenvalues whose feature starts below its mark (0 < t_f < inf); NaN
    with fewer than two."""
    lam = dense_eigenvalues(eigenvalues, num)
    t = learning_time(lam, a0, fraction, context=context, noise=noise, trace=float(np.sum(eigenvalues)))
    keep = (t > 0) & np.isfinite(t)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(lam[keep]), np.log(t[keep]), 1)[0])


class SimulationCheck(NamedTuple):
    t: np.ndarray        # [T] time (lr x steps) of the records
    m_sim: np.ndarray    # [T, D] simulated m_i(t)
    m_ode: np.ndarray    # [T, D] the reduced ODE's m_i(t)
    row: dict            # errors and learning times (in steps of size lr)


def check_simulation(kind: str, spec: mlsa.Spectrum, params0, a0, *, lr: float, rho: float, num_steps: int,
                     record_every: int, fraction: float = 0.5, closed_form=None) -> SimulationCheck:
    """The simulated model from `params0` (GD, or SAM with the normalization of `kind`) against
    the reduced ODE of `kind` from a(0) = a0, on the same time grid t = lr x recorded steps.

    GD's ODE is integrated adaptively, SAM's with fixed Heun steps dt = lr (`integrate`). The
    row holds the largest relative error of the learning times (`learning_times.crossing_times`
    at `fraction`), the largest trajectory error relative to m*, both sets of times in steps,
    their entropies, and, given `closed_form` times (in time units, e.g. `learning_time` with
    lr = 1), those times in steps and their largest relative error against the simulation.
    """
    method, norm = _SIMULATED[kind]
    target_D = np.asarray(mlsa.optimal_features(spec), np.float64)
    sim = dynamics.simulator(mlsa.population_loss, num_steps=num_steps, record_every=record_every,
                             method=method, norm=norm)(params0, spec, lr, rho)
    t_R = np.asarray(sim.steps) * lr
    m_sim = np.asarray(sim.features, np.float64)
    m_ode = np.asarray(integrate(kind, spec, a0, t_R, rho, dt=None if kind == "gd" else lr), np.float64)
    t_sim = learning_times.crossing_times(t_R, m_sim, target_D, fraction)
    t_ode = learning_times.crossing_times(t_R, m_ode, target_D, fraction)
    row = {"time_rel_err_max": float(np.nanmax(np.abs(t_sim / t_ode - 1))),
           "traj_err_max": float(np.max(np.abs(m_sim - m_ode) / target_D)),
           "times_sim": t_sim / lr, "times_ode": t_ode / lr,
           "entropy_sim": float(learning_times.entropy(t_sim)), "entropy_ode": float(learning_times.entropy(t_ode))}
    if closed_form is not None:
        row["times_closed_form"] = closed_form / lr
        row["closed_rel_err_max"] = float(np.nanmax(np.abs(t_sim / closed_form - 1)))
    return SimulationCheck(t_R, m_sim, m_ode, row)
