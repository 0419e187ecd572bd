"""Sparse parity: training on the staircase chi_k + eps sum_{j<k} chi_j learns chi_k faster (seed 004 Fig. 10).

Reproduces: seed 004 App. C.3 / Fig. 10. Arm eps trains on S_eps(x) = chi_k(x) + eps sum_{j=1}^{k-1}
chi_j(x) (chi_j = product of the first j of the k relevant bits, `tasks.parity.staircase`) with fresh
points every step; the test is accuracy of sign f on chi_k alone (for eps < 1/(k-1) the sign of S_eps is
chi_k). eps = 0 is plain parity (the baseline). The seed gives no eps values: we sweep them.

Expected: a range of eps > 0 reaches the solve threshold on chi_k in fewer steps than eps = 0 (the
lower-order monomials are learned first and "climb the staircase").
Quick differs from the paper: k = 4 instead of 6, 2500 steps, 16 seeds at each of 2 base seeds (d = 20,
width 40, SGD lr 0.1, batch 20 as in the paper). Cost: the experiment's `cost` field.

    lsb run parity_staircase --config quick
"""

from __future__ import annotations

import dataclasses

from lsb_jax.claims import Claim
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import parity
from lsb_jax.sweeps.parity import QUICK, ParityConfig



@dataclasses.dataclass(frozen=True)
class Config:
    parity: ParityConfig = ParityConfig()
    epsilons: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)   # epsilons[0] = 0: plain chi_k, the baseline

    def __post_init__(self):
        if not self.epsilons or self.epsilons[0] != 0 or any(e < 0 for e in self.epsilons):
            raise ValueError(f"epsilons must start with 0 (plain parity) and be >= 0, got {self.epsilons}")


def run(cfg: Config, ctx) -> dict:
    arms = [parity.arm(f"eps={e:g}", "online", eps=e) for e in cfg.epsilons]
    res = parity.run_sweep(cfg.parity, ctx, arms, f"staircase targets, k={cfg.parity.k} (Fig. 10)")
    head = parity.headline(res)
    per = res["per_arm"]
    summary = "Steps to solve chi_k: " + "; ".join(parity.format_arm(a.name, per[a.name]) for a in arms) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    return [Claim(f"eps={e:g}_faster", "004", "Fig. 10", "training on the staircase chi_k + eps sum_j chi_j "
                  "learns chi_k faster than training on chi_k", "steps_to_solve", f"eps={e:g}", "eps=0",
                  expect="lower") for e in cfg.epsilons[1:]]


EXPERIMENT = Experiment(
    name="parity_staircase",
    reproduces="seed 004 Fig. 10 (sparse parity: staircase targets)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(parity=QUICK, epsilons=(0.0, 0.05, 0.15)), "full": Config()},
    cost={"quick": "~1 min CPU", "full": "~15 min CPU / GPU"},
    run=run,
    claims=claims,
    order=52,
)
