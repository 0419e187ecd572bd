"""Sparse parity: drawing batches with a Zipf law (some batches repeat) learns faster (seed 004 Fig. 5, Fig. 11).

Reproduces: seed 004 Sec. 4.2 / Fig. 5 (sparse parity panel) and App. C.4 / Fig. 11 (at the maximal
stable lr 0.1, alpha = 0.75 still beats alpha = 0). The dataset D (steps x batch uniform points of
{-1, +1}^d) is cut into `steps` fixed batches; each step draws one batch b with
p(rank(b)) ∝ (rank + 1)^-alpha, ranks a fixed random order (`data.Zipf` over batches). alpha = 0 is
uniform over batches (the baseline).

Expected: a medium alpha (0.75-1) reaches the solve threshold in fewer steps than alpha = 0; which
batches repeat does not matter, only that some do.
Quick differs from the paper: k = 4 instead of 6, 2500 steps, 16 seeds at each of 2 base seeds (d = 20,
width 40, SGD lr 0.1, batch 20 as in the paper). Cost: the experiment's `cost` field.

    lsb run parity_zipf --config quick
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
    alphas: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.5)   # alphas[0] = 0: uniform, the baseline

    def __post_init__(self):
        if not self.alphas or self.alphas[0] != 0 or any(a < 0 for a in self.alphas):
            raise ValueError(f"alphas must start with 0 (uniform, the baseline) and be >= 0, got {self.alphas}")


def run(cfg: Config, ctx) -> dict:
    arms = [parity.arm(f"alpha={a:g}", "zipf", alpha=a) for a in cfg.alphas]
    res = parity.run_sweep(cfg.parity, ctx, arms, f"Zipf over batches, k={cfg.parity.k} (Fig. 5)")
    head = parity.headline(res)
    summary = "Steps to solve: " + "; ".join(parity.format_arm(a.name, res["per_arm"][a.name]) for a in arms) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every medium alpha (strictly between 0 and the largest) solves faster than uniform batches."""
    return [Claim(f"alpha={a:g}_faster", "004", "Figs. 5, 11", "drawing some batches more often (Zipf alpha) "
                  "learns sparse parity faster than uniform batches", "steps_to_solve", f"alpha={a:g}", "alpha=0",
                  expect="lower") for a in cfg.alphas[1:-1]]


EXPERIMENT = Experiment(
    name="parity_zipf",
    reproduces="seed 004 Fig. 5 and Fig. 11 (sparse parity: Zipf exponent alpha over batches)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(parity=QUICK, alphas=(0.0, 0.75, 1.5)), "full": Config()},
    cost={"quick": "~1 min CPU", "full": "~15 min CPU / GPU"},
    run=run,
    claims=claims,
    order=51,
)
