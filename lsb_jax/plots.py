"""Figures shared by the experiments (matplotlib).

Scripts and the CLI draw with the headless Agg backend; inside Jupyter (an IPython kernel) or with
MPLBACKEND set, the backend is left alone, so a notebook's plot cells show their figures inline.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Sequence

import matplotlib

if "ipykernel" not in sys.modules and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def figure(ncols: int = 1, width: float = 4.5, height: float = 3.4):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def band(ax, steps_T: np.ndarray, values_TxM: np.ndarray, label: str | None = None, color=None, log: bool = False):
    """Mean over members with a +-1 sample-std (ddof 1) band (members on the last axis; NaNs ignored)."""
    values_TxM = np.asarray(values_TxM, np.float64).reshape(len(steps_T), -1)
    mean_T = np.nanmean(values_TxM, axis=1)
    count_T = np.sum(~np.isnan(values_TxM), axis=1)
    std_T = np.where(count_T > 1, np.nanstd(values_TxM, axis=1) * np.sqrt(count_T / np.maximum(count_T - 1, 1)), 0.0)
    line, = ax.plot(steps_T, mean_T, label=label, color=color)
    lo = np.maximum(mean_T - std_T, np.nanmin(values_TxM) if log else -np.inf)
    ax.fill_between(steps_T, lo, mean_T + std_T, color=line.get_color(), alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")
    return line


def trajectory_heatmap(ax, losses_NxK: np.ndarray, steps_K: Sequence[int], title: str = "per-example loss"):
    """Examples sorted by their final loss (hardest on top), log10 loss as color."""
    order = np.argsort(losses_NxK[:, -1])[::-1]
    img = ax.imshow(np.log10(np.maximum(losses_NxK[order], 1e-12)), aspect="auto", interpolation="nearest",
                    cmap="viridis", extent=(-0.5, len(steps_K) - 0.5, len(order), 0))
    ax.set_xticks(range(len(steps_K)))
    ax.set_xticklabels([str(s) for s in steps_K], rotation=45, fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("example (sorted by final loss)")
    ax.set_title(title)
    plt.colorbar(img, ax=ax, label="log10 loss")


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel of `compare_arms`: values [A, S, E] (arm, seed, x), axis labels, reference lines
    {label: y}, log scale, and x values ([E], or [A, E] per arm; None: the figure's steps)."""

    values: np.ndarray
    ylabel: str
    xlabel: str = "step"
    log: bool = False
    lines: dict = dataclasses.field(default_factory=dict)
    x: np.ndarray | None = None
    xlog: bool = False


def compare_arms(steps_E, names: Sequence[str], panels: Sequence[Panel], title: str = ""):
    """The arm-comparison figure of every sweep: per panel, each arm's mean over seeds with a
    +-1 std band (`band`), reference lines dashed. Returns the figure."""
    fig, axes = figure(len(panels))
    styles = ("--", ":", "-.")
    for ax, panel in zip(axes, panels):
        v = np.asarray(panel.values, np.float64)
        for a, name in enumerate(names):
            x = steps_E if panel.x is None else (panel.x[a] if np.ndim(panel.x) == 2 else panel.x)
            band(ax, np.asarray(x), v[a].T, label=name, log=panel.log)
        for i, (label, y) in enumerate(panel.lines.items()):
            ax.axhline(y, color="k" if i == 0 else "gray", ls=styles[i % 3], lw=1, label=label)
        ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel)
        if panel.xlog:
            ax.set_xscale("log")
        ax.legend(fontsize=6)
    if title:
        axes[0].set_title(title)
    return fig


def steps_to_threshold(ax, names: Sequence[str], times_AxS: np.ndarray, horizon: float, ylabel: str):
    """Each seed's steps to threshold per arm (censored seeds drawn at the horizon as open
    triangles) and the arm's restricted mean (bar)."""
    t = np.asarray(times_AxS, np.float64)
    for a in range(len(names)):
        hit = ~np.isnan(t[a])
        jitter = np.linspace(-0.15, 0.15, t.shape[1]) if t.shape[1] > 1 else np.zeros(1)
        ax.plot(a + jitter[hit], t[a][hit], "o", color="C0", ms=4)
        ax.plot(a + jitter[~hit], np.full((~hit).sum(), horizon), "^", mfc="none", color="C3", ms=5)
        ax.hlines(np.where(hit, t[a], horizon).mean(), a - 0.3, a + 0.3, color="k", lw=2)
    ax.axhline(horizon, color="gray", ls=":", lw=1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title("per seed (triangles: not reached = censored); bar: restricted mean", fontsize=7)
