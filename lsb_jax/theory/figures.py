"""The theory experiments' figures (built on `lsb_jax.plots`); each returns a matplotlib figure
for `RunContext.save_figure` and computes nothing beyond closed-form reference curves."""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np

from lsb_jax import plots
from lsb_jax.theory import odes


def stagewise_loss(arms: Mapping, target_D, null: float, eigenvalues: Sequence[float]):
    """Left: population loss / loss of 0 per arm (single-spectrum, single-rho `sweeps.Grid`s),
    median and quartiles over seeds (log axis); right: seed 0's m_i / m*_i per arm (GD solid, others dashed)."""
    fig, (ax0, ax1) = plots.figure(2)
    for name, g in arms.items():
        plots.band(ax0, g.steps, (g.loss[0, 0] / null).T, label=name, log=True)
        for i in range(len(eigenvalues)):
            ax1.plot(g.steps, g.features[0, 0, 0, :, i] / target_D[i], ls="-" if name == "GD" else "--",
                     color=f"C{i}", label=f"{name}: e{i + 1} (lam={eigenvalues[i]:g})")
    ax0.set(xlabel="step", ylabel="population loss / loss of 0", title="stage-wise drops (median, quartiles)")
    ax0.legend(fontsize=7)
    ax1.set(xlabel="step", ylabel="m_i / m*_i", title="which eigen-direction each stage learns (seed 0)")
    plots.legend(ax1)
    return fig


def ode_check(checks: Mapping[str, odes.SimulationCheck], target_D):
    """One panel per `odes.check_simulation` result: simulated m_i / m*_i (colors) and the ODE's (dotted)."""
    fig, axes = plots.figure(len(checks))
    for ax, (kind, c) in zip(axes, checks.items()):
        for i in range(len(target_D)):
            ax.plot(c.t, c.m_sim[:, i] / target_D[i], color=f"C{i}", label=f"e{i + 1} sim" if i == 0 else None)
            ax.plot(c.t, c.m_ode[:, i] / target_D[i], color="k", ls=":", lw=1, label="ODE" if i == 0 else None)
        ax.set(xlabel="time (lr x steps)", ylabel="m_i / m*_i",
               title=f"{kind}: time err {c.row['time_rel_err_max']:.1%}")
        ax.legend(fontsize=7)
    return fig


def learning_time_vs_eigenvalue(eigenvalues: Sequence[float], a0: float, fraction: float, rho: float, lr: float,
                                arms: Mapping, extra_times=None, extra_label: str = "", context: int | None = None,
                                noise: float = 0.0):
    """Closed-form GD and per-head SAM learning times over `odes.dense_eigenvalues` (at the model's
    context and noise, with the spectrum's own trace), the early-phase asymptote 1/(2 lam^2 a0), each
    arm's simulated times (median and quartiles over seeds: a log axis) at the spectrum, and
    optionally one more set of times (`extra_times` [D], in steps at lr) as open squares."""
    lam_dense = odes.dense_eigenvalues(eigenvalues)
    fig, (ax,) = plots.figure(1, width=5.5)
    model = dict(context=context, noise=noise, trace=float(np.sum(eigenvalues)))   # the spectrum's own targets
    ax.plot(lam_dense, odes.learning_time(lam_dense, a0, fraction, lr=lr, **model), "k-", lw=1,
            label="GD closed form")
    ax.plot(lam_dense, odes.learning_time(lam_dense, a0, fraction, rho=rho, lr=lr, **model), "k--", lw=1,
            label=f"SAM per-head closed form (rho={rho})")
    ax.plot(lam_dense, 1.0 / (2 * lam_dense ** 2 * a0 * lr), ":", color="gray", lw=1,
            label="early phase 1/(2 lam^2 a0)")
    for j, (name, g) in enumerate(arms.items()):
        q25, med, q75 = np.nanquantile(g.times[0, 0], [0.25, 0.5, 0.75], axis=0)
        ax.errorbar(eigenvalues, med, yerr=[med - q25, q75 - med], fmt="o", color=f"C{j}",
                    label=f"{name}, random init (sim)")
    if extra_times is not None:
        ax.plot(eigenvalues, extra_times, "s", mfc="none", color="C3", label=extra_label)
    ax.set(xlabel="eigenvalue lam_i", ylabel=f"learning time (steps at lr {lr})", title="learning time vs eigenvalue")
    plots.log_axis(ax, "x")
    plots.log_axis(ax)
    plots.legend(ax)
    return fig


def entropy_vs_rho(grids: Mapping, decays: Sequence[float], rhos: Sequence[float], rho_max: float):
    """Per init (grids keyed by (init, norm), spectra x rhos x seeds): entropy vs rho per spectrum
    and norm (runs learning every feature; mean +- std); last panel: the normalized times of the
    first grid's middle spectrum, seed 0, per rho."""
    inits = list(dict.fromkeys(i for i, _ in grids))
    norms = list(dict.fromkeys(n for _, n in grids))
    fig, axes = plots.figure(len(inits) + 1)
    for ax, init in zip(axes, inits):
        for norm, ls in zip(norms, ("-", "--")):
            g = grids[init, norm]
            for s, decay in enumerate(decays):
                h = np.where(np.isfinite(g.times).all(-1), g.entropy, np.nan)[s]   # [P, n]
                with warnings.catch_warnings():                                   # all-NaN columns (rho too big)
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean_P, std_P = np.nanmean(h, -1), np.nanstd(h, -1)
                ax.errorbar(np.asarray(rhos), mean_P, yerr=std_P, ls=ls, color=f"C{s}", marker="o", ms=3,
                            label=f"decay {decay}, {norm}")
        ax.axvline(rho_max, color="gray", ls=":", lw=1, label="sqrt3 x init scale")
        ax.set(xlabel="SAM radius rho", ylabel="entropy of learning times", title=f"{init} init")
        plots.legend(ax)
    ax = axes[-1]
    g = grids[inits[0], norms[0]]
    for p, rho in enumerate(rhos):
        t = g.times[len(decays) // 2, p, 0]
        ax.plot(np.arange(1, t.shape[-1] + 1), t / np.nansum(t), marker="o", label=f"rho={rho:g}")
    ax.set(xlabel="feature i (decreasing eigenvalue)", ylabel="t_i / sum_j t_j",
           title=f"normalized times ({inits[0]}, {norms[0]}, decay {decays[len(decays) // 2]})")
    plots.legend(ax)
    return fig


def data_lever(lever, pool, gammas: Sequence[float], rhos: Sequence[float], eigenvalues: Sequence[float]):
    """(a) GD's entropy vs gamma against SAM's per rho (with gamma*), learning time vs eigenvalue
    per gamma and for SAM at the largest rho; (b) the pool arms' entropies (`data_lever` results)."""
    fig, (ax0, ax1, ax2) = plots.figure(3)
    ax0.errorbar(gammas, lever.entropy_gd, yerr=np.nanstd(lever.seed_entropy_gd, -1), marker="o",
                 label="GD, Omega_gamma")
    for p, rho in enumerate(rhos[1:], start=1):
        ax0.axhline(lever.entropy_sam[p], color=f"C{p}", ls="--", lw=1,
                    label=f"SAM rho={rho:g} (gamma*={lever.gamma_star[p]:.2f})")
    ax0.set(xlabel="gamma (omega_i ~ lam_i^-gamma)", ylabel="entropy of learning times",
            title="(a) distribution lever vs SAM")
    plots.legend(ax0)
    lam = np.asarray(eigenvalues)
    for j, g in enumerate(gammas):
        ax1.plot(lam, np.nanmean(lever.gd.times[j, 0], 0), marker="o", color=f"C{j}", label=f"GD gamma={g:g}")
    ax1.plot(lam, np.nanmean(lever.sam.times[0, -1], 0), marker="s", color="k", ls="--", label=f"SAM rho={rhos[-1]:g}")
    ax1.set(xlabel="eigenvalue lam_i", ylabel="learning time (steps)", title="(a) learning time vs eigenvalue")
    plots.log_axis(ax1, "x")
    plots.log_axis(ax1)
    plots.legend(ax1)
    names, ent = pool.names, pool.entropy
    ax2.bar(range(len(names)), np.nanmean(ent, -1), yerr=np.nanstd(ent, -1), color=[f"C{i}" for i in range(len(names))])
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels(names, rotation=30, ha="right", fontsize=6)
    ax2.set(ylabel="entropy of learning times", title="(b) pool: proxy -> k-means -> upsample")
    return fig


def proxy_trajectories(pool):
    """The first base seed's proxy per-example losses (`plots.trajectory_heatmap`), titled with its hard
    cluster's size."""
    fig, (ax,) = plots.figure(1)
    plots.trajectory_heatmap(ax, pool.store.losses, pool.store.steps,
                             title=f"proxy per-example losses ({int(pool.hard.sum())} hard)")
    return fig
