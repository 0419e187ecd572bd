"""Figures shared by the experiments (matplotlib, headless Agg backend)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def figure(ncols: int = 1, width: float = 4.5, height: float = 3.4):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def band(ax, steps_T: np.ndarray, values_TxM: np.ndarray, label: str | None = None, color=None, log: bool = False):
    """Mean over members with a +-1 std band (members on the last axis; NaNs ignored)."""
    values_TxM = np.asarray(values_TxM, np.float64).reshape(len(steps_T), -1)
    mean_T = np.nanmean(values_TxM, axis=1)
    std_T = np.nanstd(values_TxM, axis=1)
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
