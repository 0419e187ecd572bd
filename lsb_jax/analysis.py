"""Small numeric summaries used across experiments (steps to threshold, mean +- std)."""

from __future__ import annotations

import math

import numpy as np


def steps_to_threshold(steps_T: np.ndarray, values_TxM: np.ndarray, threshold: float) -> np.ndarray:
    """For each member, the first logged step whose value is <= threshold (NaN if never) -> [M]."""
    values_TxM = np.asarray(values_TxM, np.float64).reshape(len(steps_T), -1)
    hit_TxM = values_TxM <= threshold
    first_M = np.argmax(hit_TxM, axis=0)
    out = np.asarray(steps_T, np.float64)[first_M]
    out[~hit_TxM.any(axis=0)] = np.nan
    return out


def mean_std(x) -> tuple[float, float]:
    """(mean, std) ignoring NaNs; (nan, nan) when every value is NaN."""
    x = np.asarray(x, np.float64)
    if not np.isfinite(x).any():
        return math.nan, math.nan
    return float(np.nanmean(x)), float(np.nanstd(x))
