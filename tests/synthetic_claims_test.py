"""Every ICL and facts experiment's declared claims find their arms and per-seed quantities in a run.

Each experiment runs once at a micro scale (a 1-layer, 8-wide GPT-2 for a few steps, 2 base seeds of
2 seeds): what is checked is the wiring (names, quantities, base seeds, the runner storing the
verdicts), not the verdicts, which at this scale are inconclusive. The statistics themselves are
tested in claims_test.py; a real end-to-end verdict in parity_experiments_test.py.
"""

import numpy as np
import pytest

from lsb_jax import claims, experiments
from lsb_jax import config as config_lib
from lsb_jax import runner

ICL_MICRO = ["sweep.dim=2", "sweep.num_points=4", "sweep.model.num_layers=1", "sweep.model.num_heads=1",
             "sweep.model.width=8", "sweep.steps=4", "sweep.seeds=2", "sweep.base_seeds=[0,1]",
             "sweep.pool_size=64", "sweep.test_size=8", "sweep.eval_every=2", "sweep.track_tasks=4",
             "sweep.track_points=2", "sweep.chunk_size=4", "sweep.log_every=2", "sweep.batch_size=8"]
FACTS_MICRO = ["sweep.model.num_layers=1", "sweep.model.num_heads=1", "sweep.model.width=8", "sweep.steps=4",
               "sweep.seeds=2", "sweep.base_seeds=[0,1]", "sweep.eval_every=2", "sweep.chunk_size=4",
               "sweep.log_every=2", "sweep.batch_size=8", "sweep.curriculum_switch=2"]
EXTRA = {"icl_batch_scaling": ["ks=[2,8]", "k_over_b=0.5"], "icl_task_count": ["ks=[0,2,4,8]"],
         "icl_grad_cosine": ["ks=[0,2,8]"], "icl_curriculum": ["ks=[0,4]", "sweep.curriculum_start=2",
                                                              "sweep.curriculum_first=2", "sweep.curriculum_every=1"],
         "icl_interventions": ["interventions=[\"pcgrad\",\"frozen_readout\"]"]}
NAMES = ("icl_task_count", "icl_zipf", "icl_correlated", "icl_curriculum", "icl_grad_bias", "icl_interventions",
         "icl_grad_cosine", "icl_batch_scaling", "facts_subjects", "facts_zipf", "facts_curriculum",
         "facts_interventions")




def _batch_scaling(run_dir, res):
    """Fig. 9: arms with B = k / k_over_b, each its own program, x-axis = datapoints."""
    assert [r["batch_size"] for r in res["per_arm"].values()] == [4, 16]
    assert len({r["program_group"] for r in res["per_arm"].values()}) == 2
    curves = np.load(run_dir / "curves.npz")
    b_M = np.tile([4, 16], 4)                                   # members seed-major: 2 x 2 seeds x 2 arms
    np.testing.assert_array_equal(curves["batch_size"], b_M)
    np.testing.assert_array_equal(curves["datapoints"], curves["steps"][:, None] * b_M[None, :])
    assert res["data_budget"] == 4 * 4 and res["headline"]["data_budget"] == 16
    assert (run_dir / "loss_vs_datapoints.png").exists() and (run_dir / "group1" / "trajectories.npz").exists()
    # the speed-ups are against the largest k, the baseline the headline names
    per, head = res["per_arm"], res["headline"]
    assert head["baseline_arm"] == "k=8,B=16"
    np.testing.assert_allclose(head["speedup[k=2,B=4]"], per["k=8,B=16"]["steps_to_threshold_rmean"]
                               / per["k=2,B=4"]["steps_to_threshold_rmean"], rtol=1e-9)
    np.testing.assert_allclose(head["speedup[k=8,B=16]"], 1.0)


def _grad_cosine(run_dir, res):
    """[E, M] cosines in curves.npz (members seed-major: 2 x 2 seeds x 3 arms), the readout/rest terms
    summing to the cosine, per-arm means over evaluations and seeds."""
    a = np.load(run_dir / "curves.npz")
    assert a["grad_cos"].shape == (len(a["steps"]), 12) and np.all(np.abs(a["grad_cos"]) <= 1 + 1e-6)
    np.testing.assert_allclose(a["grad_cos_part_readout"] + a["grad_cos_part_rest"], a["grad_cos"], atol=1e-5)
    assert np.all(np.abs(a["grad_cos_within_readout"]) <= 1 + 1e-6)
    for j, arm in enumerate(res["per_arm"].values()):
        np.testing.assert_allclose(arm["grad_cos_mean"], a["grad_cos"][:, j::3].mean(), rtol=1e-5)
    assert (run_dir / "grad_cosine.png").exists() and (run_dir / "trajectories.npz").exists()


CHECKS = {"icl_batch_scaling": _batch_scaling, "icl_grad_cosine": _grad_cosine}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_declared_claims_find_their_data_at_both_base_seeds(tmp_path, name):
    exp = experiments.discover()[name]
    sets = (ICL_MICRO if name.startswith("icl") else FACTS_MICRO) + EXTRA.get(name, [])
    cfg = config_lib.override(exp.configs["quick"], sets)
    declared = claims.claims_of(exp.claims, cfg)
    assert declared, f"{name} declares no claim"
    run_dir, res = runner.run_experiment(exp, cfg, "quick", out=tmp_path / "run", progress=False)
    assert (run_dir / "results.json").exists()
    CHECKS.get(name, lambda *_: None)(run_dir, res)
    decided = res["claims"]
    assert [c["key"] for c in decided] == [c.key for c in declared]
    for c in decided:
        assert c["verdict"] != claims.NOT_MEASURED, c
        assert [r["base_seed"] for r in c["by_base_seed"]] == [0, 1] and all(r["n"] == 2 for r in c["by_base_seed"])
    # and the quick config itself declares claims on arms it has (names from the same config)
    assert claims.claims_of(exp.claims, exp.configs["quick"])
