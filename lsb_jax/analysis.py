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


def history_from_rows(rows, names=None) -> dict[str, np.ndarray]:
    """Column arrays of logged metric rows {"step": s, name: value, ...}.

    Returns {name: [rows_with_name, ...]} and {name_step: [rows_with_name]}; `names` keeps only
    those metrics.
    """
    out: dict[str, list] = {}
    steps: dict[str, list] = {}
    for row in rows:
        for k, v in row.items():
            if k == "step" or (names is not None and k not in names):
                continue
            out.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
            steps.setdefault(k, []).append(row["step"])
    hist = {k: np.stack(v) for k, v in out.items()}
    hist.update({f"{k}_step": np.asarray(s) for k, s in steps.items()})
    return hist


def mean_std(x) -> tuple[float, float]:
    """(mean, std) ignoring NaNs; (nan, nan) when every value is NaN."""
    x = np.asarray(x, np.float64)
    if not np.isfinite(x).any():
        return math.nan, math.nan
    return float(np.nanmean(x)), float(np.nanstd(x))
