"""Feature learning times and their entropy (the simplicity-bias measure).

Definition (used by every experiment and the report): feature i is *learned* at the first time
its amount m_i = M_ii reaches `fraction` (default 1/2) of its target m*_i; between recorded
steps the crossing is interpolated linearly. For the learned features' times t_1..t_m,

    p_i = t_i / sum_j t_j,   H = -sum_i p_i ln p_i   (at most ln m, reached when all t_i are equal).

Higher H means learning is spread evenly in time: lower simplicity bias. Features not learned
within the horizon are excluded (their count is reported beside H); `normalized_entropy`
divides by ln m so runs with different m compare.
"""

from __future__ import annotations

import numpy as np


def crossing_times(steps_R, values_RxD, targets_D, fraction: float = 0.5) -> np.ndarray:
    """First time each column of values reaches fraction * target (linear interpolation) -> [..., D].

    values may carry leading member axes: [..., R, D] with steps [R]; targets broadcast to
    [..., D]. NaN where never reached.
    """
    steps_R = np.asarray(steps_R, np.float64)
    v = np.asarray(values_RxD, np.float64)
    level = fraction * np.asarray(targets_D, np.float64)[..., None, :]
    hit = v >= level
    first = np.argmax(hit, axis=-2)                                       # [..., D]
    reached = hit.any(axis=-2)
    prev = np.maximum(first - 1, 0)
    v1 = np.take_along_axis(v, first[..., None, :], axis=-2)[..., 0, :]
    v0 = np.take_along_axis(v, prev[..., None, :], axis=-2)[..., 0, :]
    lv = np.broadcast_to(level[..., 0, :], v1.shape)
    t1, t0 = steps_R[first], steps_R[prev]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(v1 > v0, (lv - v0) / (v1 - v0), 1.0)
    t = np.where(first > 0, t0 + np.clip(frac, 0.0, 1.0) * (t1 - t0), t1)
    return np.where(reached, t, np.nan)


def entropy(times) -> np.ndarray:
    """H of the normalized learning times over the last axis, ignoring NaN (unlearned) entries."""
    t = np.asarray(times, np.float64)
    ok = np.isfinite(t) & (t > 0)
    tt = np.where(ok, t, 0.0)
    total = tt.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = tt / total
        terms = np.where(ok, -p * np.log(np.where(ok, p, 1.0)), 0.0)
    h = terms.sum(-1)
    return np.where(ok.sum(-1) > 0, h, np.nan)


def complete_entropy(times) -> np.ndarray:
    """`entropy` where every feature is learned, NaN where one is not: entropies over different sets
    of features are not comparable (one over m - 1 features is at most ln(m - 1))."""
    t = np.asarray(times, np.float64)
    return np.where(np.isfinite(t).all(-1), entropy(t), np.nan)


def normalized_entropy(times) -> np.ndarray:
    """H / ln m (1 = perfectly even learning times); NaN when fewer than 2 features are learned."""
    m = np.sum(np.isfinite(times) & (np.asarray(times) > 0), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m >= 2, entropy(times) / np.log(np.maximum(m, 2)), np.nan)


def in_order(times) -> np.ndarray:
    """Per member (leading axes): every feature learned, and in index order (times strictly
    increasing along the last axis; with features sorted by decreasing eigenvalue, the
    saddle-to-saddle order) -> bool [...]."""
    t = np.asarray(times)
    return np.isfinite(t).all(-1) & (np.diff(t, axis=-1) > 0).all(-1)


def first_crossing(x_grid, h_grid, level: float) -> float:
    """Smallest x where the piecewise-linear curve through (x_grid, h_grid) reaches `level`.

    Scans the segments in order and interpolates linearly inside the first one whose end
    values bracket the level (flat segments are skipped); NaN if none does. Used to match a
    lever's setting to the entropy SAM reaches (e.g. gamma*(rho)).
    """
    for i in range(len(x_grid) - 1):
        lo, hi = h_grid[i], h_grid[i + 1]
        if min(lo, hi) <= level <= max(lo, hi) and hi != lo:
            return float(x_grid[i] + (level - lo) / (hi - lo) * (x_grid[i + 1] - x_grid[i]))
    return float("nan")
