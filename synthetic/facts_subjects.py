"""Fact memorization: training on k of the subjects escapes the accuracy plateau sooner, then stalls (seed 004 Fig. 4).

Reproduces: seed 004 Sec. 4.1 / Fig. 4 (fact-memorization panel). Documents [s, r, n_1..n_k, phi(s, r)]
(`lsb_jax.tasks.facts`); arm k trains on the first k subjects of a fixed random order
(`data.Subset(S, k)`), k = 0 meaning all S (the baseline); test accuracy is greedy exact match
over ALL S x R facts. All seeds x arms are one vmapped program.

Expected (paper): small k makes faster early progress in test accuracy (it memorizes its k
subjects first) but saturates near k/S (+ the subject-blind guess on the rest); all subjects
eventually memorizes everything.
Quick differs from the paper: 50 subjects, 4 relations x 16 answers, 32 noise tokens, k_noise 3;
GPT-2 2 layers x 2 heads x width 64, Adam lr 1e-3 (paper 5e-5), 500 steps, 3 seeds. At this lr
there is no flat plateau, only a slow start (accuracy ~0 for the first ~50 steps).
Cost: quick ~97 s CPU (181 s wall on 2 heavily loaded cores); full (S = 100, 6x6x192, lr 5e-5, 20k steps, 5 seeds,
4 arms): GPU (not run here).

    lsb run facts_subjects --config quick
"""

from __future__ import annotations

import dataclasses

from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import facts
from lsb_jax.sweeps.facts import SweepConfig


@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = SweepConfig()
    ks: tuple[int, ...] = (0, 10, 20, 50)   # subjects trained on; ks[0] = 0: all (the baseline)

    def __post_init__(self):
        s = self.sweep.task.num_subjects
        if not self.ks or self.ks[0] != 0 or any(not 0 <= k <= s for k in self.ks):
            raise ValueError(f"ks must start with 0 (= all subjects, the baseline) and lie in [0, {s}], got {self.ks}")


def run(cfg: Config, ctx) -> dict:
    names = ["k=all" if k == 0 else f"k={k}" for k in cfg.ks]
    arms = [{"k": k} for k in cfg.ks]
    res = facts.run_sweep(cfg.sweep, ctx, "subset", arms, names, title="truncating the subjects (Fig. 4)")
    head = facts.headline(res, cfg.sweep)
    per, t0 = res["per_arm"], cfg.sweep.thresholds[0]
    early = {n: per[n]["early_test_acc_mean"] for n in names}
    head["truncation_faster_early"] = any(early[n] > early[names[0]] for n in names[1:])
    head["all_best_final"] = all(per[names[0]]["final_test_acc_mean"] >= per[n]["final_test_acc_mean"] for n in names)
    summary = ("Fact memorization over subjects: " + "; ".join(facts.format_arm(n, per[n], t0) for n in names) + ". "
               + ("A truncated arm leads early and all subjects ends best, as in the paper."
                  if head["truncation_faster_early"] and head["all_best_final"]
                  else "The paper's direction (truncation ahead early, behind at the end) does not fully show here."))
    return {"headline": head, "summary": summary, **res}



EXPERIMENT = Experiment(
    name="facts_subjects",
    reproduces="seed 004 Fig. 4 (fact memorization: train on k of 100 subjects, test on all)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(sweep=facts.QUICK, ks=(0, 10, 25)), "full": Config()},
    cost={"quick": "~2 min CPU", "full": "GPU (not run)"},
    run=run,
    order=61,
)
