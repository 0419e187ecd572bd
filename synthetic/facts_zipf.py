"""Fact memorization: Zipf-distributed subjects (alpha ~ 1) memorize faster than uniform ones (seed 004 Fig. 5).

Reproduces: seed 004 Sec. 4.2 / Fig. 5 (fact-memorization panel). Subjects are drawn with
p(rank r) ∝ (r+1)^-alpha over a fixed random rank assignment (`data.Zipf(S, alpha)`); alpha = 0
is uniform (the baseline). Relations and noise stay uniform; test accuracy is greedy exact match
over ALL S x R facts. All seeds x alphas are one vmapped program.

Expected (paper): larger alpha speeds up the early stage; too large alpha saturates (the tail
subjects are rarely seen); alpha = 1 memorizes significantly faster than alpha = 0.
Quick differs from the paper: the quick scale of `facts_subjects` (50 subjects, 2x2x64 GPT-2,
Adam lr 1e-3, 500 steps, 4 seeds at each of 2 base seeds).
Cost: the experiment's `cost` field (`lsb list`); full (S = 100, 6x6x192, lr 5e-5, 20k steps, 5
seeds at each of 2 base seeds, 5 alphas): GPU (not run here).

    lsb run facts_zipf --config quick
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
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)   # alphas[0] = 0: uniform, the baseline

    def __post_init__(self):
        if not self.alphas or self.alphas[0] != 0 or any(a < 0 for a in self.alphas):
            raise ValueError(f"alphas must start with 0 (uniform, the baseline) and be >= 0, got {self.alphas}")


def run(cfg: Config, ctx) -> dict:
    names = [f"alpha={a:g}" for a in cfg.alphas]
    res = facts.run_sweep(cfg.sweep, ctx, "zipf", [{"alpha": a} for a in cfg.alphas], names,
                          title="Zipf over subjects (Fig. 5)")
    head = facts.headline(res, cfg.sweep)
    per, t0 = res["per_arm"], cfg.sweep.thresholds[0]
    summary = ("Fact memorization, Zipf over subjects: " + "; ".join(facts.format_arm(n, per[n], t0) for n in names)
               + ".")
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every medium alpha (strictly between 0 and the largest) reaches the first accuracy threshold
    sooner than either extreme."""
    t0 = f"steps_to_{cfg.sweep.thresholds[0]:g}"
    lo, hi = f"alpha={cfg.alphas[0]:g}", f"alpha={cfg.alphas[-1]:g}"
    return [Claim(f"alpha={a:g}_faster_than_{extreme}", "004", "Fig. 5", "for a medium Zipf exponent alpha over "
                  "subjects there is a speedup over either extreme", t0, f"alpha={a:g}", other, expect="lower")
            for a in cfg.alphas[1:-1] for extreme, other in (("uniform", lo), ("largest", hi))]


QUICK = Config(sweep=facts.QUICK, alphas=(0.0, 1.0, 1.5))

EXPERIMENT = Experiment(
    name="facts_zipf",
    reproduces="seed 004 Fig. 5 (fact memorization: Zipf exponent alpha over subjects)",
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, facts.MEDIUM_SEEDS), "full": Config()},
    cost={"quick": "~2 min CPU",
          "medium": "~4x quick's training (16 seeds per base seed instead of 4)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=62,
)
