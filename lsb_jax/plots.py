"""Figures shared by the experiments (matplotlib).

Scripts and the CLI draw with the headless Agg backend; inside Jupyter (an IPython kernel) or with
MPLBACKEND set, the backend is left alone, so a notebook's plot cells show their figures inline.
"""

from __future__ import annotations

import warnings

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
    """A row of `ncols` panels with constrained layout (titles, labels and legends of neighbouring
    panels never overlap; no `tight_layout` needed)."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def log_axis(ax, axis: str = "y") -> None:
    """A log scale without the cluttered minor tick labels (major decades only)."""
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"{axis}axis").set_minor_formatter(plt.NullFormatter())


def legend(ax, **kwargs) -> None:
    """A readable legend (only when something is labelled)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=kwargs.pop("fontsize", 7), framealpha=0.85, **kwargs)


def band(ax, steps_T: np.ndarray, values_TxM: np.ndarray, label: str | None = None, color=None, log: bool = False,
         bounds: tuple[float, float] | None = None):
    """The members' spread over steps (members on the last axis; NaNs ignored). Linear axis: mean with
    a +-1 sample-std (ddof 1) band; log axis: median with the 25-75% quantile band (a std band is
    not symmetric on a log scale and runs below zero). `bounds` clips the band to the quantity's valid
    range (e.g. (0, 1) for an accuracy)."""
    values_TxM = np.asarray(values_TxM, np.float64)
    values_TxM = values_TxM.reshape(len(steps_T), int(np.prod(values_TxM.shape[1:])) if len(steps_T) == 0 else -1)
    count_T = np.sum(~np.isnan(values_TxM), axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN steps (every member diverged): gaps
        if log:
            center_T = np.nanmedian(values_TxM, axis=1)
            lo_T, hi_T = np.nanquantile(values_TxM, [0.25, 0.75], axis=1)
        else:
            center_T = np.nanmean(values_TxM, axis=1)
            std_T = np.where(count_T > 1,
                             np.nanstd(values_TxM, axis=1) * np.sqrt(count_T / np.maximum(count_T - 1, 1)), 0.0)
            lo_T, hi_T = center_T - std_T, center_T + std_T
    if bounds is not None:
        lo_T, hi_T = np.clip(lo_T, *bounds), np.clip(hi_T, *bounds)
    line, = ax.plot(steps_T, center_T, label=label, color=color)
    ax.fill_between(steps_T, lo_T, hi_T, color=line.get_color(), alpha=0.2, linewidth=0)
    if log:
        log_axis(ax)
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
    {label: y}, log scale, x values ([E], or [A, E] per arm; None: the figure's steps) and the
    quantity's valid range (`band` clips to it; e.g. (0, 1) for accuracies)."""

    values: np.ndarray
    ylabel: str
    xlabel: str = "step"
    log: bool = False
    lines: dict = dataclasses.field(default_factory=dict)
    x: np.ndarray | None = None
    xlog: bool = False
    bounds: tuple[float, float] | None = None


def compare_arms(steps_E, names: Sequence[str], panels: Sequence[Panel], title: str = ""):
    """The arm-comparison figure of every sweep: per panel, each arm's seeds as a `band` (mean +- std,
    or median and quartiles on a log axis), reference lines dashed and named. Returns the figure."""
    fig, axes = figure(len(panels))
    styles = ("--", ":", "-.")
    for ax, panel in zip(axes, panels):
        v = np.asarray(panel.values, np.float64)
        for a, name in enumerate(names):
            x = steps_E if panel.x is None else (panel.x[a] if np.ndim(panel.x) == 2 else panel.x)
            band(ax, np.asarray(x), v[a].T, label=name, log=panel.log, bounds=panel.bounds)
        for i, (label, y) in enumerate(panel.lines.items()):
            ax.axhline(y, color="k" if i == 0 else "gray", ls=styles[i % 3], lw=1, label=label)
        ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel)
        if panel.xlog:
            log_axis(ax, "x")
        legend(ax)
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
