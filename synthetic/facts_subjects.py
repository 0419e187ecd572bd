"""Fact memorization: training on k of the subjects escapes the accuracy plateau sooner, then stalls (seed 004 Fig. 4).

Reproduces: seed 004 Sec. 4.1 / Fig. 4 (fact-memorization panel). Documents [s, r, n_1..n_k, phi(s, r)]
(`lsb_jax.tasks.facts`); arm k trains on the first k subjects of a fixed random order
(`data.Subset(S, k)`), k = 0 meaning all S (the baseline); test accuracy is greedy exact match
over ALL S x R facts. All seeds x arms are one vmapped program.

Expected (paper): small k makes faster early progress in test accuracy (it memorizes its k subjects
first) but saturates near k/S (+ the subject-blind guess on the rest); all subjects eventually
memorizes everything. Quick differs from the paper: 50 subjects, 4 relations x 16 answers, 32 noise
tokens, k_noise 3; GPT-2 2 layers x 2 heads x width 64, Adam lr 1e-3 (paper 5e-5), 500 steps, 4
seeds at each of 2 base seeds. At this lr there is no flat plateau, only a slow start (the accuracy
curve in the run's figure). Cost: the experiment's `cost` field (`lsb list`); full (S = 100, 6x6x192,
lr 5e-5, 20k steps, 5 seeds at each of 2 base seeds, 4 arms): GPU (not run here).

    lsb run facts_subjects --config quick
"""

from __future__ import annotations

import dataclasses

from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
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
    summary = "Fact memorization over subjects: " + "; ".join(facts.format_arm(n, per[n], t0) for n in names) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every truncated k is ahead of all subjects early (a quarter into training) and behind at the end."""
    out = []
    for k in cfg.ks[1:]:
        out += [Claim(f"k={k}_ahead_early", "004", "Fig. 4", "training on fewer subjects mitigates the initial "
                      "plateau: higher test accuracy (on all subjects) early in training ...", "early_test_acc",
                      f"k={k}", "k=all", expect="higher"),
                Claim(f"k={k}_behind_at_end", "004", "Fig. 4", "... but it stops improving, its training omits facts "
                      "the test asks", "final_test_acc", f"k={k}", "k=all", expect="lower")]
    return out



QUICK = Config(sweep=facts.QUICK, ks=(0, 10, 25))

EXPERIMENT = Experiment(
    name="facts_subjects",
    reproduces="seed 004 Fig. 4 (fact memorization: train on k of 100 subjects, test on all)",
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, facts.MEDIUM_SEEDS), "full": Config()},
    cost={"quick": "~2 min CPU",
          "medium": "~4x quick's training (16 seeds per base seed instead of 4)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=61,
)
