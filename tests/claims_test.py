"""Claims: interval coverage on simulated experiments with a known effect, verdict logic on hand-made
cases, censoring as defined, base-seed agreement, and the runner storing / re-deciding verdicts."""

import dataclasses
import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from lsb_jax import claims, io, runner
from lsb_jax.claims import INCONCLUSIVE, NOT_MEASURED, OPPOSITE, REPRODUCED, Claim
from lsb_jax.experiments import Experiment

TRIALS = 500


def _coverage_consistent(hits: int, level: float = 0.95) -> bool:
    """500 intervals at nominal 95% cover a number of times consistent with Binomial(500, 0.95)."""
    return stats.binomtest(hits, TRIALS, level).pvalue > 1e-3


def test_paired_t_interval_covers_the_true_effect_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(TRIALS):
        shared = rng.normal(0, 3, 10)                        # the seed's effect, common to both arms
        a, b = shared + rng.normal(0.7, 1, 10), shared + rng.normal(0, 1, 10)
        _, lo, hi, _ = claims.mean_interval(a - b)
        hits += lo <= 0.7 <= hi
    assert _coverage_consistent(hits)


def test_interval_of_censored_times_covers_the_restricted_mean_difference():
    """Exponential times capped at the horizon tau: E[min(T, tau)] = (1 - exp(-lam tau)) / lam."""
    rng = np.random.default_rng(1)
    tau, lam_a, lam_b, n = 1000.0, 1 / 400, 1 / 900, 16
    true = (1 - math.exp(-lam_a * tau)) / lam_a - (1 - math.exp(-lam_b * tau)) / lam_b
    table = {"arms": {}, "base_seeds": [0], "horizon": tau}
    claim = Claim("c", "004", "Fig. 0", "A is faster", "steps", "A", "B", expect="lower")
    hits = reproduced = 0
    for _ in range(TRIALS):
        t = {k: rng.exponential(1 / lam, n) for k, lam in (("A", lam_a), ("B", lam_b))}
        table["arms"] = {k: [[None if x > tau else float(x) for x in v]] for k, v in t.items()}
        row = claims.decide(claim, table, 0)
        hits += row["ci"][0] <= true <= row["ci"][1]
        reproduced += row["verdict"] == REPRODUCED
    assert _coverage_consistent(hits)
    assert reproduced > TRIALS / 2                        # a real effect of this size is usually detected


def test_exact_proportion_interval_covers_at_least_nominally():
    rng = np.random.default_rng(2)
    p, null, n = 0.3, 0.5, 20
    hits = sum(lo <= p - null <= hi for lo, hi in (claims.proportion_interval(rng.random(n) < p, null)[1:3]
                                                  for _ in range(TRIALS)))
    assert stats.binomtest(hits, TRIALS, 0.95, alternative="less").pvalue > 1e-3   # Clopper-Pearson: >= 95%


def test_mean_interval_is_the_t_formula():
    x = np.array([1.0, 2.5, -0.5, 3.0, 0.25])
    m, lo, hi, p = claims.mean_interval(x)
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    np.testing.assert_allclose([m, lo, hi], [x.mean(), x.mean() - half, x.mean() + half], rtol=1e-12)
    tstat = x.mean() / (x.std(ddof=1) / math.sqrt(x.size))
    np.testing.assert_allclose(p, 2 * stats.t.sf(abs(tstat), x.size - 1), rtol=1e-10)


@pytest.mark.parametrize("lo, hi, expect, want", [
    (-3.0, -1.0, "lower", REPRODUCED), (-3.0, -1.0, "higher", OPPOSITE),
    (1.0, 2.0, "higher", REPRODUCED), (1.0, 2.0, "lower", OPPOSITE),
    (-1.0, 2.0, "lower", INCONCLUSIVE), (0.0, 2.0, "higher", INCONCLUSIVE),
    (-math.inf, math.inf, "lower", INCONCLUSIVE), (math.nan, math.nan, "lower", INCONCLUSIVE)])
def test_verdict_of_an_interval(lo, hi, expect, want):
    assert claims.verdict(lo, hi, expect) == want


def test_identical_differences_decide_only_with_enough_unanimous_seeds():
    assert claims.mean_interval([-5.0] * 6)[1:3] == (-5.0, -5.0)         # sign test p = 2/64 < 0.05
    assert claims.mean_interval([-5.0] * 5)[1:3] == (-math.inf, math.inf)   # p = 2/32 > 0.05
    assert claims.mean_interval([0.0] * 10)[1:3] == (-math.inf, math.inf)
    assert claims.mean_interval([1.0])[1:3] == (-math.inf, math.inf)       # one seed says nothing
    # identical up to rounding (1.1 - 2.1 != 0.9 - 1.9 in float64): the same rule, not a t interval of width ~1e-16
    a, b = np.array([1.0, 1.1, 0.9, 1.2, 1.3, 0.7]), np.array([2.0, 2.1, 1.9, 2.2, 2.3, 1.7])
    assert len(set(a - b)) > 1
    assert claims.mean_interval((a - b)[:5])[1:3] == (-math.inf, math.inf)
    m, lo, hi, p = claims.mean_interval(a - b)
    assert lo == hi == m and m == pytest.approx(-1.0) and p == pytest.approx(2 / 2**6)


def test_differences_equal_up_to_float32_rounding_are_decided_as_the_exact_ones():
    """Accuracies k/N computed in float32 (as the runs compute them), one arm k + g right on every
    seed: the verdict and p must be those of the exact differences g/N (Fractions: all identical),
    not a t interval of rounding noise."""
    from fractions import Fraction

    rng = np.random.default_rng(3)
    claim = Claim("c", "004", "F", "s", "acc", "A", "B", expect="higher")
    for _ in range(200):
        n_items, seeds, gain = int(rng.integers(10, 2000)), int(rng.integers(2, 9)), int(rng.integers(1, 4))
        k = rng.integers(0, n_items - gain, seeds)
        acc = lambda kk: [float(np.float32(100) * (np.float32(x) / np.float32(n_items))) for x in kk]  # noqa: E731
        row = claims.decide(claim, _table({"A": [acc(k + gain)], "B": [acc(k)]}), 0)
        exact = [Fraction(100 * gain, n_items)] * seeds                       # every difference is the same
        assert len(set(exact)) == 1
        want_p = 2 / 2 ** seeds                                                # sign test of n unanimous seeds
        assert row["p_value"] == pytest.approx(want_p)
        assert row["verdict"] == (REPRODUCED if want_p < 0.05 else INCONCLUSIVE)
        assert row["effect"] == pytest.approx(float(exact[0]), abs=1e-4)     # float32 ulps of 100


def test_rounding_around_zero_is_no_effect_and_integer_steps_are_not_ties():
    a = np.array([0.3, 0.7, 0.1, 0.9, 0.5, 0.2, 0.6, 0.4])
    b = a * (1 + 1e-8 * np.array([1, -1] * 4))                  # the same numbers, rounded differently
    m, lo, hi, p = claims.mean_interval(a - b, scale=1.0)      # equal arms up to rounding: no effect, whatever the sign
    assert (lo, hi, p) == (-math.inf, math.inf, 1.0)
    # steps to threshold at a large horizon: integers that differ are seed variation, not rounding
    d = np.array([-100.0, -101.0, -100.0, -102.0, -99.0])
    m, lo, hi, p = claims.mean_interval(d, scale=1e6)
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high)) and hi < 0


def test_proportion_p_value_agrees_with_the_clopper_pearson_interval():
    """The central exact p (twice the smaller binomial tail, summed here with math.comb) is below 5%
    exactly when the 95% interval excludes the null rate."""
    for n in range(1, 31):
        for null in (1 / 24, 0.1, 0.5, 0.9):
            pmf = [math.comb(n, i) * null ** i * (1 - null) ** (n - i) for i in range(n + 1)]
            for k in range(n + 1):
                eff, lo, hi, p = claims.proportion_interval([1.0] * k + [0.0] * (n - k), null)
                assert p == pytest.approx(min(1.0, 2 * min(sum(pmf[:k + 1]), sum(pmf[k:]))), rel=1e-9, abs=1e-15)
                if abs(p - 0.05) > 1e-9:
                    assert (p < 0.05) == (lo > 0 or hi < 0), (n, null, k, p, lo, hi)


def test_censored_times_are_capped_at_the_horizon():
    table = _table({"A": [[50.0, 150.0, None]], "B": [[100.0, 100.0, 100.0]]}, horizon=100.0)
    row = claims.decide(Claim("c", "004", "F", "s", "steps", "A", "B"), table, 0)
    assert row["arm_mean"] == pytest.approx((50 + 100 + 100) / 3)


def test_a_table_that_cannot_be_decided_is_not_measured_with_its_reason():
    claim = Claim("c", "004", "F", "s", "loss", "A", "B")
    uneven = claims.evaluate(claim, {"loss": _table({"A": [[1.0, 2.0, 3.0]], "B": [[1.0, 2.0]]})})
    assert uneven["verdict"] == NOT_MEASURED and "3 seeds" in uneven["reason"]
    rate = Claim("r", "004", "F", "s", "solved", "A", expect="higher", null=0.5, test="proportion")
    bad = claims.evaluate(rate, {"solved": _table({"A": [[0.0, None, 1.0]]})})
    assert bad["verdict"] == NOT_MEASURED and "0/1" in bad["reason"]
    assert claims.evaluate(claim, {"loss": _table({"A": [], "B": []}, ())})["verdict"] == NOT_MEASURED


def _table(arms, base_seeds=(0,), horizon=None):
    out = {"arms": arms, "base_seeds": list(base_seeds)}
    if horizon is not None:
        out["horizon"] = horizon
    return out


def test_censored_seeds_count_the_horizon_and_the_effect_is_paired():
    # A reaches at 100, 200, 300, 400, 500, 600 (hand-made); B never (censored at 1000) on 4 seeds
    table = _table({"A": [[100.0, 200.0, 300.0, 400.0, 500.0, 600.0]],
                    "B": [[None, 900.0, None, None, 700.0, None]]}, horizon=1000.0)
    row = claims.decide(Claim("c", "004", "F", "s", "steps", "A", "B"), table, 0)
    d = np.array([100, 200, 300, 400, 500, 600]) - np.array([1000, 900, 1000, 1000, 700, 1000])
    assert row["effect"] == pytest.approx(d.mean()) and row["versus_mean"] == pytest.approx(5600 / 6)
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert row["ci"] == pytest.approx([ci.low, ci.high]) and row["verdict"] == REPRODUCED


def test_base_seeds_that_disagree_leave_the_claim_inconclusive():
    fast, slow = [1.0, 1.1, 0.9, 1.2, 1.0, 0.95], [2.0, 2.1, 1.9, 2.2, 2.0, 2.05]
    claim = Claim("c", "004", "F", "A lower than B", "loss", "A", "B", expect="lower")
    agree = claims.evaluate(claim, {"loss": _table({"A": [fast, fast], "B": [slow, slow]}, (0, 1))})
    assert agree["verdict"] == REPRODUCED and agree["base_seeds_agree"]
    assert [r["base_seed"] for r in agree["by_base_seed"]] == [0, 1]
    split = claims.evaluate(claim, {"loss": _table({"A": [fast, slow], "B": [slow, fast]}, (0, 7))})
    assert split["verdict"] == INCONCLUSIVE and not split["base_seeds_agree"]
    assert "0: reproduced, 7: opposite" in split["reason"]


def test_missing_arm_or_quantity_is_not_measured():
    claim = Claim("c", "004", "F", "s", "loss", "A", "B")
    assert claims.evaluate(claim, {})["verdict"] == NOT_MEASURED
    out = claims.evaluate(claim, {"loss": _table({"A": [[1.0, 2.0]]})})
    assert out["verdict"] == NOT_MEASURED and "['B']" in out["reason"]


def test_one_arm_and_proportion_claims():
    table = {"acc": _table({"A": [[0.9, 0.95, 0.92, 0.97]]}), "solved": _table({"A": [[0.0] * 12 + [1.0]]})}
    above = claims.evaluate(Claim("c", "004", "F", "s", "acc", "A", expect="higher", null=0.5), table)
    assert above["verdict"] == REPRODUCED and above["by_base_seed"][0]["effect"] == pytest.approx(0.935 - 0.5)
    fails = claims.evaluate(Claim("f", "004", "F", "s", "solved", "A", expect="lower", null=0.5,
                                  test="proportion"), table)
    ci = stats.binomtest(1, 13, 0.5).proportion_ci(0.95, method="exact")
    assert fails["by_base_seed"][0]["ci"] == pytest.approx([ci.low - 0.5, ci.high - 0.5])
    assert fails["verdict"] == REPRODUCED


def test_per_seed_splits_columns_by_base_seed():
    out = claims.per_seed(np.array([[1, 2, 3, 4], [5, np.nan, 7, 8]]), ["a", "b"], [0, 1], horizon=9)
    assert out["arms"] == {"a": [[1, 2], [3, 4]], "b": [[5, None], [7, 8]]} and out["horizon"] == 9.0
    with pytest.raises(ValueError, match="divisible"):
        claims.per_seed(np.zeros((2, 3)), ["a", "b"], [0, 1])


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="expect"):
        Claim("c", "004", "F", "s", "q", "A", expect="faster")
    with pytest.raises(ValueError, match="unique"):
        claims.claims_of((Claim("c", "004", "F", "s", "q", "A"),) * 2, None)


@dataclasses.dataclass(frozen=True)
class Cfg:
    effect: float = 1.0


def _run(cfg, ctx):
    base = np.arange(16, dtype=float)   # 8 seeds per base seed
    return {"per_seed": {"loss": claims.per_seed(np.stack([base + cfg.effect, base]), ["A", "B"], [0, 1])}}


CLAIM = Claim("a_higher", "004", "Fig. 0", "A has the higher loss", "loss", "A", "B", expect="higher")


def test_runner_stores_verdicts_and_redecides_a_finished_run(tmp_path):
    exp = Experiment(name="fake_claims", reproduces="nothing", configs={"quick": Cfg(), "full": Cfg()}, run=_run,
                     claims=(CLAIM,))
    d, res = runner.run_experiment(exp, Cfg(), "quick", runs_root=tmp_path, progress=False)
    assert [c["verdict"] for c in res["claims"]] == [REPRODUCED]       # d = +1 on all 8 seeds of each base
    stored = json.loads((d / "results.json").read_text())
    assert stored["claims"][0]["by_base_seed"][1]["base_seed"] == 1
    flipped = dataclasses.replace(exp, claims=(dataclasses.replace(CLAIM, expect="lower"),))
    _, again = runner.run_experiment(flipped, Cfg(), "quick", runs_root=tmp_path, progress=False)
    assert again["claims"][0]["verdict"] == OPPOSITE
    assert json.loads((d / "results.json").read_text())["claims"][0]["verdict"] == OPPOSITE


def test_a_run_whose_table_cannot_be_decided_keeps_its_results(tmp_path):
    def run(cfg, ctx):
        return {"answer": 42, "per_seed": {"loss": {"arms": {"A": [[1.0, 2.0]], "B": [[1.0]]}, "base_seeds": [0]}}}

    exp = Experiment(name="fake_claims", reproduces="nothing", configs={"quick": Cfg(), "full": Cfg()}, run=run,
                     claims=(CLAIM,))
    d, res = runner.run_experiment(exp, Cfg(), "quick", runs_root=tmp_path, progress=False)
    stored = json.loads((d / "results.json").read_text())
    assert stored["answer"] == 42 and stored["claims"][0]["verdict"] == NOT_MEASURED
    assert json.loads((d / "status.json").read_text())["status"] == "complete"


def test_a_bad_claim_declaration_fails_before_anything_is_written(tmp_path):
    exp = Experiment(name="fake_claims", reproduces="nothing", configs={"quick": Cfg(), "full": Cfg()}, run=_run,
                     claims=lambda cfg: [CLAIM, CLAIM])
    with pytest.raises(ValueError, match="unique"):
        runner.run_experiment(exp, Cfg(), "quick", runs_root=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_report_opens_with_the_claims_and_counts_per_paper(tmp_path):
    from lsb_jax.report import write_report

    table = {"loss": _table({"A": [[1.0, 1.1, 0.9, 1.2]], "B": [[2.0, 2.3, 1.8, 2.1]]})}
    lower = Claim("a_lower", "004", "Fig. 4", "A learns faster", "loss", "A", "B", expect="lower")
    higher = Claim("a_higher", "002", "Fig. 1", "A is worse", "loss", "A", "B", expect="higher")
    missing = Claim("gone", "002", "Fig. 2", "C exists", "loss", "C", "B")
    entries = [{"experiment": "e1", "reproduces": "x", "run_dir": str(tmp_path), "status": "complete",
                "results": {"claims": claims.evaluate_all([lower], table)}},
               {"experiment": "e2", "reproduces": "y", "run_dir": str(tmp_path), "status": "complete", "earlier": True,
                "results": {"claims": json.loads(json.dumps(claims.evaluate_all([higher, missing], table)))}}]
    md = write_report(tmp_path / "report.md", entries, "quick").read_text()
    assert md.index("## Paper claims") < md.index("## Experiments") < md.index("### e1")
    row = next(line for line in md.splitlines() if line.startswith("| A learns faster"))
    assert "**reproduced**" in row and "(base 0, n=4)" in row and "[e1](#e1)" in row
    assert "**opposite**" in next(line for line in md.splitlines() if line.startswith("| A is worse"))
    assert "| seed 002 | 0 | 1 | 0 | 1 |" in md and "| seed 004 | 1 | 0 | 0 | 0 |" in md
    assert "(earlier run)" in md and "| e1 | x | complete |" in md


def test_report_cells_escape_pipes_and_newlines_and_lists_show_non_finite_values(tmp_path):
    """Every table row keeps its column count whatever the text (a `|` in a claim sentence, a newline
    in a reason or a headline key), and a headline list with a NaN from JSON prints as numbers."""
    from lsb_jax.report import write_report

    table = {"loss": _table({"A": [[1.0, 1.1, 0.9, 1.2]], "B": [[2.0, 2.3, 1.8, 2.1]]})}
    odd = Claim("odd", "004", "Fig. 4|5", "|A| learns\nfaster", "loss", "A", "B", expect="lower")
    entries = [{"experiment": "e1", "reproduces": "x | y", "run_dir": str(tmp_path), "status": "complete",
                "results": json.loads(json.dumps(io.to_jsonable({
                    "claims": claims.evaluate_all([odd], table),
                    "headline": {"a|b": [0.1, float("nan"), 0.25], "multi\nline": "p | q"}})))}]
    md = write_report(tmp_path / "report.md", entries, "quick").read_text()
    rows = [line for line in md.splitlines() if line.startswith("|")]
    for line in rows:   # unescaped pipes separate the cells
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        assert len(cells) in (2, 5, 6), line   # headline, experiments / verdict counts, claims
    assert "| a\\|b | [0.1, nan, 0.25] |" in md
    assert "| multi line | p \\| q |" in md
