"""Sparse parity: biasing every gradient by a stored batch gradient speeds up learning (seed 004 Fig. 2).

Reproduces: seed 004 Sec. 3 / Fig. 2 (sparse parity panel). SGD with u_t = g_t + gamma g_bias, where
g_bias is the batch gradient stored every n = 100 steps (`optim.gradient_bias` via
`OptimConfig.grad_bias_gamma/grad_bias_every`); fresh points every step. gamma = 0 is plain SGD (the
baseline). The seed gives no gamma values: we sweep them.

Expected: a medium gamma reaches the solve threshold in fewer steps than gamma = 0; a large gamma
destabilizes training.
Quick differs from the paper: k = 4 instead of 6, 2500 steps, 16 seeds at each of 2 base seeds (d = 20,
width 40, SGD lr 0.1, batch 20, n = 100 as in the paper). Cost: the experiment's `cost` field.

    lsb run parity_grad_bias --config quick
"""

from __future__ import annotations

import dataclasses

from lsb_jax.claims import Claim
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import parity
from lsb_jax.sweeps.parity import QUICK, ParityConfig
from lsb_jax.train.arms import grad_bias_arms



@dataclasses.dataclass(frozen=True)
class Config:
    parity: ParityConfig = ParityConfig()
    gammas: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)   # gammas[0] = 0: plain SGD, the baseline
    refresh_every: int = 100                               # n of the paper

    def __post_init__(self):
        if not self.gammas or self.gammas[0] != 0 or any(g < 0 for g in self.gammas):
            raise ValueError(f"gammas must start with 0 (plain SGD) and be >= 0, got {self.gammas}")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {self.refresh_every}")


def run(cfg: Config, ctx) -> dict:
    arms = [parity.arm(n, optim=t.optim)
            for n, t in grad_bias_arms(cfg.gammas, cfg.parity.optim, cfg.refresh_every).items()]
    res = parity.run_sweep(cfg.parity, ctx, arms, f"gradient biasing, n={cfg.refresh_every}, k={cfg.parity.k} (Fig. 2)")
    head = parity.headline(res)
    summary = "Steps to solve: " + "; ".join(parity.format_arm(a.name, res["per_arm"][a.name]) for a in arms) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every medium gamma (strictly between 0 and the largest) solves faster than plain SGD."""
    names = list(grad_bias_arms(cfg.gammas, cfg.parity.optim, cfg.refresh_every))
    return [Claim(f"{n}_faster", "004", "Fig. 2", "adding a stale batch gradient (medium gamma) speeds up "
                  "training", "steps_to_solve", n, names[0], expect="lower") for n in names[1:-1]]


EXPERIMENT = Experiment(
    name="parity_grad_bias",
    reproduces="seed 004 Fig. 2 (sparse parity: gradient biasing gamma, refresh n = 100)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(parity=QUICK, gammas=(0.0, 0.1, 0.3)), "full": Config()},
    cost={"quick": "~1 min CPU", "full": "~15 min CPU / GPU"},
    run=run,
    claims=claims,
    order=53,
)
