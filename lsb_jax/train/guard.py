"""Divergence: a NaN/inf loss, or a finite loss that explodes.

    guard = DivergenceGuard(factor=1e3)          # the default of every `fit`
    state = guard.init(num_members)              # per-member reference losses, [M]
    first_bad_M, reason_M, state = guard.scan(loss_LxM, state)

A member diverges at the first step t where its loss is not finite or

    loss_t > factor * max(|reference_t|, floor)

with reference_t its start level (`reference="start"`, the default: the largest of its losses
at steps 1 .. min(t - 1, warmup), so a lucky first minibatch of a noisy weighted loss is no
reference; at step 1 the loss itself) or the running minimum of its losses up to t
(`reference="min"`). The start reference catches what the NaN guard misses (an lr too large
drives a loss to 1e13 long before it overflows) without false alarms when a curriculum or a data
switch raises the loss of a converged model by orders of magnitude above its minimum;
`reference="min"` is stricter (for fine-tuning, where the loss should never climb back
far above its best value). The state is a small dict of per-member floats saved in every
checkpoint, so a resumed run judges against the same references as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from lsb_jax.errors import RunFailure


class TrainingDiverged(RunFailure, FloatingPointError):
    """Training diverged; the message names the step and the last good checkpoint."""


class NonFiniteLossError(TrainingDiverged):
    """A NaN/inf loss or non-finite parameters."""


class LossExplodedError(TrainingDiverged):
    """A finite loss above `factor` times its reference (`DivergenceGuard`)."""


@dataclasses.dataclass(frozen=True)
class DivergenceGuard:
    """When is a finite loss divergent (see the module docstring); `factor=inf` keeps only the
    NaN/inf check."""

    factor: float = 1e3
    reference: Literal["start", "min"] = "start"
    floor: float = 1e-8
    warmup: int = 10       # steps whose losses set the start level

    def __post_init__(self):
        if not self.factor > 1:
            raise ValueError(f"DivergenceGuard.factor must be > 1, got {self.factor}")
        if self.reference not in ("start", "min"):
            raise ValueError(f"DivergenceGuard.reference must be 'start' or 'min', got {self.reference!r}")
        if not self.floor >= 0:
            raise ValueError(f"DivergenceGuard.floor must be >= 0, got {self.floor}")
        if not (isinstance(self.warmup, int) and self.warmup >= 1):
            raise ValueError(f"DivergenceGuard.warmup must be an int >= 1, got {self.warmup!r}")

    @staticmethod
    def init(num_members: int) -> dict[str, np.ndarray]:
        """References not yet seen (NaN) and no divergence yet (-1) for each member."""
        return {"start": np.full(num_members, np.nan), "min": np.full(num_members, np.nan),
                "diverged_at": np.full(num_members, -1, np.int64)}

    def scan(self, loss_LxM: np.ndarray, state: dict, first_step: int = 1
             ) -> tuple[np.ndarray, list[str | None], dict]:
        """(first bad row per member [M] (-1: none), its reason per member, updated state).

        `loss_LxM` holds the losses of steps first_step .. first_step + L - 1; the state records
        each member's first divergent step (`diverged_at`, the step number) and its references
        updated by the rows up to its first bad one.
        """
        loss = np.asarray(loss_LxM, np.float64)
        L, M = loss.shape
        finite = np.isfinite(loss)
        in_warmup = (first_step + np.arange(L))[:, None] <= self.warmup
        # start level: running max of the warmup losses strictly before the row (the row itself
        # when none came before: a loss never exceeds factor x itself)
        prior_start = np.where(np.isnan(state["start"]), -np.inf, state["start"])
        warm = np.where(finite & in_warmup, loss, -np.inf)
        before = np.maximum.accumulate(np.vstack([prior_start[None], warm]), axis=0)[:-1]
        start_ref = np.where(np.isneginf(before), loss, before)
        prior_min = state["min"]
        # running minimum including the current row (a loss at its minimum never exceeds factor x itself)
        masked = np.where(finite, loss, np.inf)
        run_min = np.minimum.accumulate(np.vstack([np.where(np.isnan(prior_min), np.inf, prior_min)[None], masked]),
                                        axis=0)[1:]
        ref = start_ref if self.reference == "start" else run_min
        with np.errstate(invalid="ignore", over="ignore"):
            exploded = finite & (loss > self.factor * np.maximum(np.abs(ref), self.floor))
        bad = ~finite | exploded
        first = np.where(bad.any(0), np.argmax(bad, axis=0), -1)
        reasons: list[str | None] = []
        for m in range(M):
            i = first[m]
            if i < 0:
                reasons.append(None)
            elif not finite[i, m]:
                reasons.append("loss became " + ("NaN" if np.isnan(loss[i, m]) else "inf"))
            else:
                what = (f"its start level (largest of its first {self.warmup} losses)" if self.reference == "start"
                        else "its running minimum")
                reasons.append(f"loss exploded to {loss[i, m]:.4g} (> {self.factor:g} x {what} "
                               f"{float(ref[i, m]):.4g})")
        counted = (np.arange(L)[:, None] < np.where(first >= 0, first, L)[None, :]) & finite   # rows before the bad one
        new_min = np.minimum(np.where(np.isnan(prior_min), np.inf, prior_min),
                             np.where(counted, loss, np.inf).min(axis=0, initial=np.inf))
        new_start = np.maximum(prior_start, np.where(counted & in_warmup, loss, -np.inf).max(axis=0, initial=-np.inf))
        diverged_at = state["diverged_at"].copy()
        newly = (first >= 0) & (diverged_at < 0)
        diverged_at[newly] = first_step + first[newly]
        out = {"start": np.where(np.isneginf(new_start), np.nan, new_start),
               "min": np.where(np.isinf(new_min), np.nan, new_min), "diverged_at": diverged_at}
        return first, reasons, out

    @staticmethod
    def state_to_json(state: dict) -> dict:
        return {k: [float(x) if k != "diverged_at" else int(x) for x in v] for k, v in state.items()}

    @staticmethod
    def state_from_json(d: dict, num_members: int) -> dict:
        """The saved state (floats may come back as "NaN" strings); a fresh one if absent or of
        another member count."""
        if not d or any(len(d.get(k, ())) != num_members for k in ("start", "min", "diverged_at")):
            return DivergenceGuard.init(num_members)
        return {"start": np.array([float(x) for x in d["start"]]), "min": np.array([float(x) for x in d["min"]]),
                "diverged_at": np.array([int(x) for x in d["diverged_at"]], np.int64)}


def trajectory_divergence(loss_MxT: np.ndarray, guard: DivergenceGuard = DivergenceGuard()) -> np.ndarray:
    """[M] bool: which members of recorded loss trajectories [M, T] (e.g. the theory simulator's
    loss every `record_every` steps) diverged by the guard's rule."""
    loss = np.asarray(loss_MxT, np.float64)
    flat = loss.reshape(-1, loss.shape[-1])
    first, _, _ = guard.scan(flat.T, DivergenceGuard.init(len(flat)))
    return (first >= 0).reshape(loss.shape[:-1])
