"""Sparse parity: a low-then-high diversity curriculum (rho_0 of the data until a switch step, \
then all of it) (seed 004 Fig. 7).

Reproduces: seed 004 App. A / Fig. 7 (sparse parity panel: rho = 0.02 until step 100, then
rho = 1.0). Arms (same seeds, init and test set; `tasks.parity` counter-based pool of steps x
batch points):

    rho=1                the full data in one pass (the baseline)
    rho=<r0>             a fixed subsample of fraction r0 for 1/r0 epochs (Fig. 4's lever)
    <r0>-><1>@<switch>   the curriculum: the first round(r0 |D|) points in epochs until `switch`,
                         then the whole pool in epochs (sampler "curriculum")

Expected (paper): the curriculum learns faster early than the full data and, unlike a tiny fixed
subsample, still converges (best of both). Quick differs from the paper: k = 4 instead of 6, 2,500
steps, 16 seeds at each of 2 base seeds; the switch is later (500) and a second, tinier r0 (0.002,
which alone never generalizes) is added so the "best of both" part is visible at this scale.

    lsb run parity_curriculum --config quick
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
    rho0s: tuple[float, ...] = (0.02,)      # first-phase fractions (each also run fixed, as a control)
    switch: int = 100                       # step at which the curriculum moves to the full data

    def __post_init__(self):
        if not self.rho0s or any(not 0 < r < 1 for r in self.rho0s):
            raise ValueError(f"rho0s must be non-empty fractions in (0, 1), got {self.rho0s}")
        if not 0 < self.switch < self.parity.steps:
            raise ValueError(f"switch must be in (0, parity.steps={self.parity.steps}), got {self.switch}")


def arms(cfg: Config) -> list[parity.Arm]:
    out = [parity.arm("rho=1", "subsample", rho=1.0)]
    for r in cfg.rho0s:
        out += [parity.arm(f"rho={r:g}", "subsample", rho=r),
                parity.arm(f"{r:g}->1@{cfg.switch}", "curriculum", rho=r, switch=cfg.switch)]
    return out


def run(cfg: Config, ctx) -> dict:
    arm_list = arms(cfg)
    res = parity.run_sweep(cfg.parity, ctx, arm_list, f"curriculum over rho, k={cfg.parity.k} (Fig. 7)")
    head = parity.headline(res)
    summary = "Steps to solve: " + "; ".join(parity.format_arm(a.name, res["per_arm"][a.name]) for a in arm_list) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Each curriculum is faster than the full data and ends at least as accurate as its fixed fraction."""
    out = []
    for r in cfg.rho0s:
        cur = f"{r:g}->1@{cfg.switch}"
        out += [Claim(f"curriculum_{r:g}_faster", "004", "Fig. 7", "a curriculum from a small fraction to the full "
                      "data learns faster early ...", "steps_to_solve", cur, "rho=1", expect="lower"),
                Claim(f"curriculum_{r:g}_generalizes", "004", "Fig. 7", "... and converges to the generalizing "
                      "solution, unlike the fixed small fraction", "final_test_acc", cur, f"rho={r:g}",
                      expect="higher")]
    return out


EXPERIMENT = Experiment(
    name="parity_curriculum",
    reproduces="seed 004 Fig. 7 (sparse parity: rho_0 until a switch step, then the full data)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(parity=QUICK, rho0s=(0.02, 0.002), switch=500), "full": Config()},
    cost={"quick": "~2 min CPU", "full": "~10 min CPU / GPU"},
    run=run,
    claims=claims,
    order=55,
)
