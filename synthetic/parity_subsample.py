"""Sparse parity: training on a random fraction rho of the data for 1/rho epochs learns faster (seed 004 Fig. 4).

Reproduces: seed 004 Sec. 4.1 / Fig. 4 (sparse parity panel). The dataset D has steps x batch uniform
points of {-1, +1}^d (a counter-based pool, `tasks.parity`); arm rho trains on round(rho |D|) of them in
epochs without replacement (`data.Epochs`) for the same number of steps, i.e. 1/rho epochs (rho = 1:
one pass, the baseline). Test: fresh uniform points, accuracy of sign f on chi_k.

Expected: rho << 1 reaches the solve threshold in fewer steps than rho = 1; rho -> 0 memorizes a tiny
set and never generalizes.
Quick differs from the paper: k = 4 instead of 6 (so the plateau is ~10^3 steps, not ~10^4), 2500 steps,
16 seeds at each of 2 base seeds; d = 20, width 40, SGD lr 0.1, batch 20 as in the paper. Cost: the
experiment's `cost` field.

    lsb run parity_subsample --config quick
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
    rhos: tuple[float, ...] = (1.0, 0.1, 0.02, 0.005, 0.0005)   # rhos[0] = 1: the baseline

    def __post_init__(self):
        if not self.rhos or self.rhos[0] != 1.0 or any(not 0 < r <= 1 for r in self.rhos):
            raise ValueError(f"rhos must start with 1.0 (the baseline) and lie in (0, 1], got {self.rhos}")


def run(cfg: Config, ctx) -> dict:
    arms = [parity.arm(f"rho={r:g}", "subsample", rho=r) for r in cfg.rhos]
    res = parity.run_sweep(cfg.parity, ctx, arms, f"subsampled data, k={cfg.parity.k} (Fig. 4)")
    head = parity.headline(res)
    summary = "Steps to solve: " + "; ".join(parity.format_arm(a.name, res["per_arm"][a.name]) for a in arms) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every rho strictly between 1 and the smallest solves faster than rho = 1; the smallest fails."""
    out = [Claim(f"rho={r:g}_faster", "004", "Fig. 4", "training on a small fraction rho of the data for 1/rho "
                 "epochs learns sparse parity in fewer steps than one pass over all of it",
                 "steps_to_solve", f"rho={r:g}", "rho=1", expect="lower") for r in cfg.rhos[1:-1]]
    if len(cfg.rhos) > 2:
        out.append(Claim(f"rho={cfg.rhos[-1]:g}_fails", "004", "Fig. 4", "rho -> 0 memorizes a tiny set and "
                         "never generalizes (solved by fewer than half the seeds)", "solved", f"rho={cfg.rhos[-1]:g}",
                         expect="lower", null=0.5, test="proportion"))
    return out


EXPERIMENT = Experiment(
    name="parity_subsample",
    reproduces="seed 004 Fig. 4 (sparse parity: subsample fraction rho, 1/rho epochs)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(parity=QUICK, rhos=(1.0, 0.1, 0.03, 0.002)), "full": Config()},
    cost={"quick": "~1 min CPU", "full": "~15 min CPU / GPU"},
    run=run,
    claims=claims,
    order=50,
)
