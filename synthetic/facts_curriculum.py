"""Fact memorization: 20 subjects until step 100, then all 100 -- fast start without the stall (seed 004 Fig. 7).

Reproduces: seed 004 App. A / Fig. 7 (factuality panel). The curriculum arm draws subjects from
the first k0 = `sweep.curriculum_start` subjects of a fixed random order until step
`sweep.curriculum_switch`, then from all S, keeping the old ones (`data.Subset(S, k(step))`,
k(step) = `data.piecewise((switch,), (k0, S))`); it is compared with all subjects (the baseline)
and with the fixed truncation k0, all in one vmapped program. Test accuracy: ALL S x R facts.

Expected (paper): the curriculum is competitive with or better than every fixed arm at every step:
as fast as k0 early, and it goes on to memorize all facts like the full arm.
Quick differs from the paper: the quick scale of `facts_subjects` (50 subjects, 2x2x64 GPT-2,
Adam lr 1e-3, 500 steps, 4 seeds at each of 2 base seeds) with k0 = 10 until step 100.
Cost: the experiment's `cost` field (`lsb list`); full (S = 100, k0 = 20 until step 100, 6x6x192, lr
5e-5, 20k steps, 5 seeds at each of 2 base seeds): GPU (not run here).

    lsb run facts_curriculum --config quick
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import facts
from lsb_jax.sweeps.facts import SweepConfig



@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = SweepConfig()   # curriculum_start = 20, curriculum_switch = 100 (App. A)


def run(cfg: Config, ctx) -> dict:
    s = cfg.sweep
    names = ["k=all", f"k={s.curriculum_start}", f"curriculum {s.curriculum_start}->all@{s.curriculum_switch}"]
    arms = [{"k": 0}, {"k": s.curriculum_start}, {"curriculum": 1}]
    res = facts.run_sweep(s, ctx, "curriculum", arms, names, title="subject curriculum (Fig. 7)")
    head = facts.headline(res, s)
    per, t0 = res["per_arm"], s.thresholds[0]
    curves = {n: np.asarray(c) for n, c in res["curves"].items()}
    best_fixed = np.maximum(curves[names[0]], curves[names[1]])
    # fraction of evaluations where the curriculum is within 0.02 of the better fixed arm (or above it)
    head["curriculum_competitive_frac"] = float(np.mean(curves[names[2]] >= best_fixed - 0.02))
    head["curriculum_final_vs_all"] = per[names[2]]["final_test_acc_mean"] - per[names[0]]["final_test_acc_mean"]
    summary = ("Subject curriculum: " + "; ".join(facts.format_arm(n, per[n], t0) for n in names)
               + f". The curriculum is within 0.02 of the best fixed arm at "
               f"{head['curriculum_competitive_frac']:.0%} of evaluations.")
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """The curriculum reaches the first threshold sooner than all subjects and ends above its fixed k0."""
    s = cfg.sweep
    cur, t0 = f"curriculum {s.curriculum_start}->all@{s.curriculum_switch}", f"steps_to_{s.thresholds[0]:g}"
    return [Claim("curriculum_faster", "004", "Fig. 7", "a curriculum from few subjects to all improves test accuracy "
                  "faster early than all subjects ...", t0, cur, "k=all", expect="lower"),
            Claim("curriculum_generalizes", "004", "Fig. 7", "... and ends more accurate than the fixed small subject "
                  "set", "final_test_acc", cur, f"k={s.curriculum_start}", expect="higher")]


QUICK = Config(sweep=facts.QUICK)

EXPERIMENT = Experiment(
    name="facts_curriculum",
    reproduces="seed 004 Fig. 7 (fact memorization: 20 subjects until step 100, then 100)",
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, facts.MEDIUM_SEEDS), "full": Config()},
    cost={"quick": "~2 min CPU",
          "medium": "~4x quick's training (16 seeds per base seed instead of 4)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=63,
)
