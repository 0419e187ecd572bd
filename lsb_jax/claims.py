"""Paper claims as code: declared with the experiment, measured per seed, decided with a 95% interval.

An experiment declares the claims of the figure it reproduces (`Experiment.claims`: a tuple of
`Claim`, or `claims(cfg) -> [Claim]` when the arms depend on the config)::

    Claim("subsample_faster", paper="004", figure="Fig. 4",
          says="training on a fraction rho of the data for 1/rho epochs learns sparse parity faster",
          quantity="steps_to_solve", arm="rho=0.1", versus="rho=1", expect="lower")

and its run returns, next to its other results, the per-seed values the claims compare
(`results["per_seed"]`, built with `per_seed`)::

    {"steps_to_solve": {"arms": {"rho=1": [[...S values...], [...]], ...},   # [base seed][seed]
                        "base_seeds": [0, 1], "horizon": 2500.0, "unit": "steps"}}

The runner evaluates every claim on that table (`evaluate_all`) and stores the verdicts in
results.json; the report opens with them.

The statistics. For a comparison of arm A with arm B the effect is the mean over seeds of
A - B; arms of a sweep share seeds (common random numbers: the same initialization and data
stream), so the difference is *paired*: d_i = A_i - B_i, and its 95% interval is Student's t
interval of the mean of d (`scipy.stats.ttest_1samp(...).confidence_interval`), exact when d is
normal and close to it for bounded quantities at the seed counts used here. A one-arm claim
(`versus=None`) compares A with `null` the same way; a claim on a 0/1 quantity (`test="proportion"`,
e.g. "solved") uses the exact Clopper-Pearson interval of `scipy.stats.binomtest`. Steps to a
threshold are right-censored at the horizon tau (`horizon` in the table; NaN = not reached): the
compared value is min(T, tau), the restricted time of `analysis.censored_summary`, so a seed that
never reaches counts tau and the effect is the difference of restricted means. When every
difference is identical (e.g. all seeds of both arms censored) the t interval is undefined; the
interval is then the point itself, and it counts as excluding zero only when the exact sign test
of that many unanimous seeds rejects at 5% (n >= 6), else the verdict is inconclusive. "Identical"
is judged at the precision the runs compute in: differences that spread by less than `TIE_RTOL`
(8 float32 ulps) of the compared values' size are rounding of one number (an accuracy of 25/37
minus 24/37 on three seeds is not a 3-seed t interval of width 1e-14).

The verdict: *reproduced* when the interval excludes no effect (0, or `null`) on the side the paper
predicts (`expect`), *opposite* when it excludes it on the other side, *inconclusive* when it
contains it. Each claim is decided at every base seed of the table separately; when the base seeds
give different verdicts the claim's verdict is inconclusive ("base seeds disagree": not decided at
this scale). A claim whose arm or quantity is missing from the run, or whose table cannot be decided
(arms of different seed counts, 0/1 values that are not 0 or 1), is *not measured*, with the reason.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

REPRODUCED, OPPOSITE, INCONCLUSIVE, NOT_MEASURED = "reproduced", "opposite", "inconclusive", "not measured"
VERDICTS = (REPRODUCED, OPPOSITE, INCONCLUSIVE, NOT_MEASURED)
LEVEL = 0.95
TIE_RTOL = 8 * float(np.finfo(np.float32).eps)   # differences closer than this (x the values' size) are equal


@dataclasses.dataclass(frozen=True)
class Claim:
    """One comparison a paper makes: `arm` vs `versus` (or vs `null`) on a per-seed `quantity`.

    expect: "lower" or "higher" -- the sign of (arm - versus) the paper predicts. test: "mean"
    (paired t on the differences; one-sample t against `null` when versus is None) or
    "proportion" (a 0/1 quantity of `arm` against the rate `null`, exact binomial)."""

    key: str
    paper: str                # the seed file's number, e.g. "004"
    figure: str               # e.g. "Fig. 4"
    says: str                 # the paper's sentence, short
    quantity: str
    arm: str
    versus: str | None = None
    expect: str = "lower"
    null: float = 0.0
    test: str = "mean"

    def __post_init__(self):
        if self.expect not in ("lower", "higher"):
            raise ValueError(f"claim {self.key!r}: expect must be 'lower' or 'higher', got {self.expect!r}")
        if self.test not in ("mean", "proportion"):
            raise ValueError(f"claim {self.key!r}: test must be 'mean' or 'proportion', got {self.test!r}")
        if self.test == "proportion" and (self.versus is not None or not 0 < self.null < 1):
            raise ValueError(f"claim {self.key!r}: a proportion claim compares one arm with a rate null in (0, 1)")

    @property
    def comparison(self) -> str:
        other = self.versus if self.versus is not None else f"{self.null:g}"
        return f"{self.quantity}: {self.arm} {'<' if self.expect == 'lower' else '>'} {other}"


def per_seed(values_AxS, names: Sequence[str], base_seeds: Sequence[int], *, horizon: float | None = None,
             unit: str = "") -> dict:
    """The results table of one quantity: values [arm, seed] with the seeds of base seed r at
    columns r*S:(r+1)*S (S = columns / len(base_seeds)); NaN = censored when `horizon` is given."""
    v = np.asarray(values_AxS, np.float64)
    r = len(base_seeds)
    if v.ndim != 2 or v.shape[0] != len(names) or r == 0 or v.shape[1] % r:
        raise ValueError(f"per_seed: need [arms={len(names)}, seeds divisible by {r} base seeds], got {v.shape}")
    s = v.shape[1] // r
    arms = {n: [[None if math.isnan(x) else float(x) for x in v[a, i * s:(i + 1) * s]] for i in range(r)]
            for a, n in enumerate(names)}
    out = {"arms": arms, "base_seeds": [int(b) for b in base_seeds], "unit": unit}
    if horizon is not None:
        out["horizon"] = float(horizon)
    return out


def verdict(lo: float, hi: float, expect: str) -> str:
    """The verdict of a 95% interval [lo, hi] of an effect (no effect = 0) for the predicted side."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 <= hi:
        return INCONCLUSIVE
    return REPRODUCED if (lo > 0) == (expect == "higher") else OPPOSITE


def mean_interval(x, level: float = LEVEL, *, scale: float = 0.0) -> tuple[float, float, float, float]:
    """(mean, lo, hi, two-sided p against 0) of the values x: Student's t; for identical values
    the exact sign test of n unanimous seeds (p = 2 / 2^n), the interval the point itself when it
    rejects at 1 - level (n >= 6 at 95%), else (-inf, inf). Values within `TIE_RTOL` x
    max(scale, max |x|) of each other are identical, and a mean within it of 0 is no effect:
    `scale` is the size of the numbers x are differences of (max |a|, |b|), whose float32
    rounding (1.1 - 2.1 vs 0.9 - 1.9, or 25/37 - 24/37 vs 20/37 - 19/37) is not seed variation.
    A non-finite value (no horizon to censor at) leaves the interval (-inf, inf)."""
    x = np.asarray(x, np.float64)
    n, m = x.size, float(np.mean(x)) if x.size else math.nan
    if n < 2 or not np.all(np.isfinite(x)):
        return m, -math.inf, math.inf, math.nan
    tol = TIE_RTOL * max(float(scale), float(np.max(np.abs(x))))
    if np.ptp(x) <= tol:
        if abs(m) <= tol:
            return m, -math.inf, math.inf, 1.0
        p = float(stats.binomtest(n, n).pvalue)
        return (m, m, m, p) if p < 1 - level else (m, -math.inf, math.inf, p)
    res = stats.ttest_1samp(x, 0.0)
    ci = res.confidence_interval(level)
    return m, float(ci.low), float(ci.high), float(res.pvalue)


def proportion_interval(x, null: float, level: float = LEVEL) -> tuple[float, float, float, float]:
    """(rate - null, lo - null, hi - null, two-sided exact p) of 0/1 values x against rate `null`.

    The interval is Clopper-Pearson's; p is the central one that inverts it (twice the smaller
    binomial tail, at most 1), so p < 1 - level exactly when the interval excludes `null`
    (binomtest's default p, which sums the outcomes no likelier than k, can disagree with it)."""
    x = np.asarray(x, np.float64)
    if x.size == 0 or np.any((x != 0) & (x != 1)):
        raise ValueError(f"proportion_interval: need 0/1 values, got {x}")
    k, n = int(x.sum()), x.size
    ci = stats.binomtest(k, n, null).proportion_ci(level, method="exact")
    p = min(1.0, 2 * min(float(stats.binom.cdf(k, n, null)), float(stats.binom.sf(k - 1, n, null))))
    return k / n - null, ci.low - null, ci.high - null, p


def _values(table: Mapping, arm: str, r: int) -> np.ndarray:
    v = np.asarray([math.nan if x is None else x for x in table["arms"][arm][r]], np.float64)
    if "horizon" in table:
        tau = float(table["horizon"])
        v = np.minimum(np.where(np.isnan(v), tau, v), tau)      # censored: min(T, tau)
    return v


def _size(*values) -> float:
    """The largest |value| of the arrays compared (the scale of their differences' rounding)."""
    return max((float(np.max(np.abs(v))) for v in values if np.size(v)), default=0.0)


def decide(claim: Claim, table: Mapping, r: int) -> dict:
    """The claim at base seed number r of its quantity's table: effect, 95% interval, p, verdict."""
    a = _values(table, claim.arm, r)
    out: dict[str, Any] = {"base_seed": table["base_seeds"][r], "n": int(a.size), "arm_mean": float(np.mean(a))}
    if claim.test == "proportion":
        eff, lo, hi, p = proportion_interval(a, claim.null)
    elif claim.versus is None:
        eff, lo, hi, p = mean_interval(a - claim.null, scale=_size(a, claim.null))
    else:
        b = _values(table, claim.versus, r)
        if b.size != a.size:
            raise ValueError(f"claim {claim.key!r}: {claim.arm} has {a.size} seeds, {claim.versus} {b.size}")
        out["versus_mean"] = float(np.mean(b))
        eff, lo, hi, p = mean_interval(a - b, scale=_size(a, b))
    out.update(effect=eff, ci=[lo, hi], p_value=p, verdict=verdict(lo, hi, claim.expect))
    return out


def evaluate(claim: Claim, per_seed_tables: Mapping[str, Mapping] | None) -> dict:
    """The claim decided at every base seed of its table, with the combined verdict."""
    out = {"key": claim.key, "paper": claim.paper, "figure": claim.figure, "says": claim.says,
           "comparison": claim.comparison, "quantity": claim.quantity, "arm": claim.arm, "versus": claim.versus,
           "expect": claim.expect, "test": claim.test}
    table = (per_seed_tables or {}).get(claim.quantity)
    missing = [n for n in (claim.arm, claim.versus) if n is not None and (table is None or n not in table["arms"])]
    if table is None or missing:
        what = f"quantity {claim.quantity!r}" if table is None else f"arm(s) {missing}"
        return {**out, "verdict": NOT_MEASURED, "reason": f"the run did not measure {what}", "by_base_seed": []}
    if table.get("unit"):
        out["unit"] = table["unit"]
    try:
        if not table["base_seeds"]:
            raise ValueError("it has no base seeds")
        rows = [decide(claim, table, r) for r in range(len(table["base_seeds"]))]
    except (ValueError, TypeError, IndexError, KeyError) as e:   # a malformed table: say so, keep the run
        return {**out, "verdict": NOT_MEASURED, "by_base_seed": [],
                "reason": f"its {claim.quantity!r} table could not be decided: {type(e).__name__}: {e}"}
    verdicts = {row["verdict"] for row in rows}
    agree = len(verdicts) == 1
    out.update(by_base_seed=rows, base_seeds_agree=agree, verdict=rows[0]["verdict"] if agree else INCONCLUSIVE)
    if not agree:
        each = ", ".join(f"{row['base_seed']}: {row['verdict']}" for row in rows)
        out["reason"] = f"base seeds disagree ({each}): not decided at this scale"
    return out


ClaimSpec = Sequence[Claim] | Callable[[Any], Sequence[Claim]]


def claims_of(spec: ClaimSpec | None, cfg) -> list[Claim]:
    """The claims an experiment declares for one config (a static tuple or claims(cfg))."""
    if spec is None:
        return []
    found = list(spec(cfg) if callable(spec) else spec)
    keys = [c.key for c in found]
    if len(set(keys)) != len(keys):
        raise ValueError(f"claim keys must be unique, got {keys}")
    return found


def evaluate_all(claims: Sequence[Claim], per_seed_tables: Mapping | None) -> list[dict]:
    return [evaluate(c, per_seed_tables) for c in claims]


def counts(evaluated: Sequence[Mapping]) -> dict[str, int]:
    """{verdict: how many} over evaluated claims, every verdict present."""
    out = {v: 0 for v in VERDICTS}
    for c in evaluated:
        out[c["verdict"]] += 1
    return out


__all__ = ["INCONCLUSIVE", "NOT_MEASURED", "OPPOSITE", "REPRODUCED", "TIE_RTOL", "VERDICTS", "Claim", "claims_of",
           "counts", "decide", "evaluate", "evaluate_all", "mean_interval", "per_seed", "proportion_interval",
           "verdict"]
