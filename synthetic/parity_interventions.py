"""Sparse parity: optimizer interventions vs plain SGD -- PCGrad, frozen readout, layer-wise lr, SAM \
(seed 004 Figs. 3, 12).

Reproduces: seed 004 Sec. 3 / Fig. 3 (PCGrad, run at a 4x smaller batch) and App. C.5 / Fig. 12
(training with the readout frozen; the paper shows both for ICL, the issue asks for them on parity),
plus two foundation interventions: a smaller readout learning rate (`OptimConfig.layer_lr`) and SAM.
Every arm uses fresh points each step; arms differ only in the optimizer (and PCGrad's batch size):

    sgd            SGD lr 0.1, batch 20 (the baseline)
    pcgrad         per-example PCGrad (Yu et al., conditional projection), batch 20 / 4 = 5
    frozen_readout the last layer kept at its initialization (`OptimConfig.freeze`)
    layer_lr       the readout's lr scaled by `readout_lr_scale`
    sam            SAM with radius `sam_rho` around SGD

Expected (paper): PCGrad and the frozen readout learn faster per step than the baseline (the frozen
readout only moderately). SAM and layer-wise lr are not in the paper's parity figures: no direction
is claimed, they are measured.
Quick differs from the paper: k = 4 instead of 6, 2500 steps, 16 seeds at each of 2 base seeds. Cost:
the experiment's `cost` field.

    lsb run parity_interventions --config quick
"""

from __future__ import annotations

import dataclasses

from lsb_jax.claims import Claim
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import parity
from lsb_jax.sweeps.parity import QUICK, ParityConfig
from lsb_jax.train.arms import INTERVENTION_CLAIMS, INTERVENTIONS, check_interventions, intervention_arms



@dataclasses.dataclass(frozen=True)
class Config:
    parity: ParityConfig = ParityConfig()
    interventions: tuple[str, ...] = INTERVENTIONS
    pcgrad_batch_divisor: int = 4          # "run at a 4x lower batch size"
    readout_lr_scale: float = 0.1
    sam_rho: float = 0.05

    def __post_init__(self):
        check_interventions(self.interventions, self.pcgrad_batch_divisor, self.readout_lr_scale, self.sam_rho)


def arms(cfg: Config) -> list[parity.Arm]:
    p = cfg.parity
    table = intervention_arms(cfg.interventions, p.optim, p.batch_size, rf"^layers_{len(p.hidden)}\.",
                              pcgrad_batch_divisor=cfg.pcgrad_batch_divisor, readout_lr_scale=cfg.readout_lr_scale,
                              sam_rho=cfg.sam_rho)
    return [parity.arm("sgd")] + [parity.arm(n, optim=t.optim, batch_size=t.batch_size) for n, t in table.items()]


def run(cfg: Config, ctx) -> dict:
    arm_list = arms(cfg)
    res = parity.run_sweep(cfg.parity, ctx, arm_list, f"optimizer interventions, k={cfg.parity.k} (Figs. 3, 12)")
    head = parity.headline(res)
    summary = "Steps to solve: " + "; ".join(parity.format_arm(a.name, res["per_arm"][a.name]) for a in arm_list) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """PCGrad and the frozen readout each solve faster than SGD (the paper shows them on ICL)."""
    return [Claim(f"{n}_faster", "004", INTERVENTION_CLAIMS[n][0], INTERVENTION_CLAIMS[n][1] + " (shown on ICL; "
                  "here on sparse parity)", "steps_to_solve", n, "sgd", expect="lower")
            for n in cfg.interventions if n in INTERVENTION_CLAIMS]


EXPERIMENT = Experiment(
    name="parity_interventions",
    reproduces="seed 004 Figs. 3 and 12 on sparse parity (PCGrad at batch/4, frozen readout; plus layer-wise lr, SAM)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(parity=QUICK), "full": Config()},
    cost={"quick": "~1-2 min CPU", "full": "~20 min CPU / GPU"},
    run=run,
    claims=claims,
    order=54,
)
