"""Small numeric summaries used across experiments: steps to threshold (censored), mean +- std.

One convention everywhere: a spread is the *sample* standard deviation (ddof = 1) over seeds; it is
NaN for a single value (one seed says nothing about the spread).

Steps to threshold are *right-censored* at the training horizon tau (the last step): a seed that
never reaches the threshold is known only to need more than tau steps. `censored_summary` never
averages only the seeds that made it; it reports the restricted mean E[min(T, tau)] (unreached
seeds count tau: with every seed observed up to the same tau this is the Kaplan-Meier restricted
mean survival time) and the Kaplan-Meier median (the first step by which at least half of the
seeds reached; NaN, with `median_censored`, when fewer than half did), with the reached count.
"""

from __future__ import annotations

import math

import numpy as np


def steps_to_threshold(steps_T: np.ndarray, values_TxM: np.ndarray, threshold: float) -> np.ndarray:
    """For each member, the first logged step whose value is <= threshold (NaN if never) -> [M]."""
    values_TxM = np.asarray(values_TxM, np.float64)
    if len(steps_T) == 0:   # nothing logged: no member reached it
        return np.full(int(np.prod(values_TxM.shape[1:])), np.nan)
    values_TxM = values_TxM.reshape(len(steps_T), -1)
    hit_TxM = values_TxM <= threshold
    first_M = np.argmax(hit_TxM, axis=0)
    out = np.asarray(steps_T, np.float64)[first_M]
    out[~hit_TxM.any(axis=0)] = np.nan
    return out


def row_block(step: int, values: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One logged row {name: value} at `step` as a block of one row (`history_from_blocks`)."""
    return np.asarray([step]), {k: np.asarray(v, np.float64)[None] for k, v in values.items()}


def history_from_blocks(blocks, names=None) -> dict[str, np.ndarray]:
    """Column arrays of logged metrics given as blocks of rows (steps [R], {name: [R, ...]}), in
    step order: {name: [rows_with_name, ...]} in float64 and {name_step: [rows_with_name]};
    `names` keeps only those metrics."""
    values: dict[str, list] = {}
    steps: dict[str, list] = {}
    for block_steps, block in blocks:
        for k, v in block.items():
            if names is not None and k not in names:
                continue
            values.setdefault(k, []).append(np.asarray(v, np.float64))
            steps.setdefault(k, []).append(np.asarray(block_steps))
    hist = {k: np.concatenate(v) for k, v in values.items()}
    hist.update({f"{k}_step": np.concatenate(s) for k, s in steps.items()})
    return hist


def history_from_rows(rows, names=None) -> dict[str, np.ndarray]:
    """Column arrays of logged metric rows {"step": s, name: value, ...}.

    Returns {name: [rows_with_name, ...]} and {name_step: [rows_with_name]}; `names` keeps only
    those metrics.
    """
    return history_from_blocks((row_block(row["step"], {k: v for k, v in row.items() if k != "step"})
                                for row in rows), names)


def mean_std(x) -> tuple[float, float]:
    """(mean, sample std with ddof = 1) ignoring NaNs; std NaN for one value; (nan, nan) for none."""
    x = np.asarray(x, np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    return float(np.mean(x)), float(np.std(x, ddof=1)) if x.size > 1 else math.nan


def standard_error(x_SxC) -> np.ndarray:
    """Standard error of the mean over the leading axis: sample std (ddof 1) / sqrt(n) -> [C].

    NaN for a single value (the module's convention: one seed says nothing about the spread)."""
    x_SxC = np.asarray(x_SxC)
    if x_SxC.shape[0] < 2:
        return np.full(x_SxC.shape[1:], np.nan)
    return x_SxC.std(0, ddof=1) / np.sqrt(x_SxC.shape[0])


def censored_summary(times, horizon: float) -> dict:
    """Right-censored steps to threshold of one arm's seeds (NaN = not reached by `horizon`).

    Returns {"n", "reached", "restricted_mean" (E[min(T, tau)], tau = horizon), "restricted_std"
    (ddof 1 of min(T, tau)), "median" (Kaplan-Meier; NaN when fewer than half reached),
    "median_censored" (True then), "horizon"}. A reached time above the horizon is an error.
    """
    t = np.asarray(times, np.float64).ravel()
    if np.any(t[~np.isnan(t)] > horizon):
        raise ValueError(f"censored_summary: a time exceeds the horizon {horizon}: {np.nanmax(t)}")
    n, hit = t.size, ~np.isnan(t)
    capped = np.where(hit, t, horizon)
    reached_sorted = np.sort(t[hit])
    need = math.ceil(n / 2)                      # first time the reached fraction is >= 1/2
    median = float(reached_sorted[need - 1]) if n and hit.sum() >= need else math.nan
    return {"n": int(n), "reached": int(hit.sum()), "horizon": float(horizon),
            "restricted_mean": float(capped.mean()) if n else math.nan,
            "restricted_std": float(capped.std(ddof=1)) if n > 1 else math.nan,
            "median": median, "median_censored": bool(n and hit.sum() < need)}
