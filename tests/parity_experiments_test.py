"""synthetic/parity_* experiments: registered with quick/full configs, quick differs from full only in
scale, bad configs name the field, and each run() writes its headline numbers and figure (tiny configs)."""

import dataclasses
import json

import numpy as np
import pytest

from lsb_jax import claims, experiments
from lsb_jax.sweeps.parity import ParityConfig

NAMES = ("parity_subsample", "parity_zipf", "parity_staircase", "parity_grad_bias", "parity_interventions",
         "parity_curriculum")
TINY = ParityConfig(dim=8, k=2, hidden=(16, 16), steps=60, seeds=2, test_size=64, eval_every=30, chunk_size=60,
                    log_every=30)


@pytest.fixture(scope="module")
def registry():
    return dict(experiments.discover())


def test_registered_with_quick_and_full(registry):
    for name in NAMES:
        exp = registry[name]
        full, quick = exp.configs["full"], exp.configs["quick"]
        # full is the paper's setup (App. B.2)
        assert (full.parity.dim, full.parity.k, full.parity.hidden, full.parity.batch_size, full.parity.steps) == \
            (20, 6, (40, 40), 20, 50_000)
        assert full.parity.optim.name == "sgd" and full.parity.optim.lr == 0.1
        assert quick.parity.steps * quick.parity.seeds <= 40_000   # CPU-sized


def test_bad_sweeps_name_the_field(registry):
    with pytest.raises(ValueError, match="rhos"):
        type(registry["parity_subsample"].configs["full"])(rhos=(0.5, 0.1))
    with pytest.raises(ValueError, match="alphas"):
        type(registry["parity_zipf"].configs["full"])(alphas=(1.0,))
    with pytest.raises(ValueError, match="interventions"):
        type(registry["parity_interventions"].configs["full"])(interventions=("bogus",))
    with pytest.raises(ValueError, match="switch"):
        type(registry["parity_curriculum"].configs["full"])(switch=0)


def test_curriculum_arms_pair_each_fixed_subsample_with_its_curriculum(registry):
    exp = registry["parity_curriculum"]
    arms = exp.run.__globals__["arms"](exp.configs["full"])      # the paper's: 0.02 until step 100, then 1
    assert [(a.static.sampler, a.static.rho) for a in arms] == [("subsample", 1.0), ("subsample", 0.02),
                                                                 ("curriculum", 0.02)]
    assert arms[2].static.switch == 100


def test_intervention_arms_configure_the_foundation_optimizers(registry):
    exp = registry["parity_interventions"]
    make_arms = exp.run.__globals__["arms"]   # the experiment module's own arm builder
    arms = {a.name: a for a in make_arms(exp.configs["full"])}
    assert arms["pcgrad"].training.optim.pcgrad and arms["pcgrad"].training.batch_size == 5
    assert arms["frozen_readout"].training.optim.freeze == (r"^layers_2\.",)
    assert arms["sam"].training.optim.sam_rho > 0 and arms["sgd"].training is None


@pytest.mark.parametrize("name", ["parity_grad_bias"])  # one end-to-end run: each arm compiles (~10 s)
def test_run_writes_headline_and_figure(registry, tmp_path, name):
    from lsb_jax.runner import RunContext

    exp = registry[name]
    cfg = dataclasses.replace(exp.configs["quick"], parity=TINY)
    ctx = RunContext(tmp_path / "run", progress=False)
    res = exp.run(cfg, ctx)
    json.dumps(res, allow_nan=True)
    head = res["headline"]
    assert head["fastest_arm"] in res["per_arm"]
    for arm in res["per_arm"].values():   # 2 seeds at each of the 2 base seeds
        assert 0.0 <= arm["final_test_acc_mean"] <= 1.0 and len(arm["steps_to_solve"]) == 4
        # the restricted mean counts unsolved seeds at the horizon: never above it, never below the solved mean
        assert arm["steps_to_solve_rmean"] <= TINY.steps
        solved = [t for t in arm["steps_to_solve"] if np.isfinite(t)]
        if solved:
            assert arm["steps_to_solve_rmean"] >= np.mean(solved) - 1e-9
    # every declared claim finds its arms and quantity in the run's per-seed tables
    decided = claims.evaluate_all(claims.claims_of(exp.claims, cfg), res["per_seed"])
    assert decided and all(c["verdict"] != claims.NOT_MEASURED for c in decided)
    assert all([r["base_seed"] for r in c["by_base_seed"]] == [0, 1] for c in decided)
    assert list((tmp_path / "run").rglob("parity_curves*"))
    assert np.isfinite(head["speedup_fastest_vs_baseline"]) and isinstance(res["summary"], str)


@pytest.mark.slow
def test_quick_staircase_claim_is_reproduced_at_both_base_seeds(registry):
    """End to end at the quick scale as configured (no tiny override): the large-eps staircase claim
    is decided 'reproduced' at each of the two base seeds (its interval lies far from 0 there)."""
    exp = registry["parity_staircase"]
    cfg = exp.configs["quick"]
    res = exp.run(cfg, None)
    decided = {c["key"]: c for c in claims.evaluate_all(claims.claims_of(exp.claims, cfg), res["per_seed"])}
    big = decided[f"eps={cfg.epsilons[-1]:g}_faster"]
    assert [r["verdict"] for r in big["by_base_seed"]] == [claims.REPRODUCED] * 2 and big["base_seeds_agree"]
