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


def normalized_entropy(times) -> np.ndarray:
    """H / ln m (1 = perfectly even learning times); NaN when fewer than 2 features are learned."""
    m = np.sum(np.isfinite(times) & (np.asarray(times) > 0), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m >= 2, entropy(times) / np.log(np.maximum(m, 2)), np.nan)
