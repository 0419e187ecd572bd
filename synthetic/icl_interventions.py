"""ICL regression: optimizer interventions vs Adam -- PCGrad, frozen readout, layer-wise lr, SAM (seed 004 Figs. 3, 12).

Reproduces: seed 004 Sec. 3 / Fig. 3 (PCGrad, run at a 4x smaller batch) and App. C.5 / Fig. 12
(training with the readout layer frozen), plus a smaller readout learning rate (`OptimConfig.layer_lr`,
the "different learning rates per layer" the paper mentions with Fig. 12) and SAM. Every arm trains on
fresh tasks (k = infinity); arms differ only in the optimizer (and PCGrad's batch size):

    adam            Adam, the sweep's lr and batch (the baseline)
    pcgrad          per-example PCGrad (Yu et al., conditional projection) before Adam, batch / 4
    frozen_readout  read_out_{kernel,bias} kept at their initialization (`OptimConfig.freeze`)
    layer_lr        the readout's lr scaled by `readout_lr_scale`
    sam             SAM with radius `sam_rho` around Adam

Each arm is its own compiled program (`train.arms.group_arms`: static differences); all arms share
the seeds (same initialization and data key), the test set and the baselines.

Expected (paper): PCGrad improves faster per step than Adam despite the 4x smaller batch; the
frozen readout gives a moderate speed-up. Layer-wise lr and SAM: no direction claimed, measured.
Quick differs from the paper: `sweeps.icl.QUICK_ESCAPE` (d = 2, 8 points, sigma^2 = 0.25, 2-layer
32-wide GPT-2, Adam lr 1e-3, batch 32 (PCGrad 8), 1500 steps, 2 seeds at each of 2 base seeds).

Cost: the experiment's `cost` field (`lsb list`); quick compiles 5 programs and PCGrad and SAM
cost more than a plain step; full (`sweeps.icl.FULL`: PCGrad's per-example gradients of a
9.5M-parameter model at batch 32): GPU.

    lsb run icl_interventions --config quick
"""

from __future__ import annotations

import dataclasses

from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import icl as icl_sweep
from lsb_jax.sweeps.icl import ArmTraining, SweepConfig
from lsb_jax.train.arms import INTERVENTION_CLAIMS, INTERVENTIONS, check_interventions, intervention_arms

@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = SweepConfig()
    interventions: tuple[str, ...] = INTERVENTIONS
    pcgrad_batch_divisor: int = 4          # "run at a 4x lower batch size"
    readout_lr_scale: float = 0.1
    sam_rho: float = 0.05
    k: int = 0                             # training tasks (0 = a fresh task per sequence)

    def __post_init__(self):
        check_interventions(self.interventions, self.pcgrad_batch_divisor, self.readout_lr_scale, self.sam_rho)
        icl_sweep.validate_arms([{"k": self.k}], self.sweep.pool_size, "k")


def trainings(cfg: Config) -> dict[str, ArmTraining | None]:
    return {"adam": None, **intervention_arms(cfg.interventions, cfg.sweep.optim, cfg.sweep.batch_size,
                                              icl_sweep.READOUT, pcgrad_batch_divisor=cfg.pcgrad_batch_divisor,
                                              readout_lr_scale=cfg.readout_lr_scale, sam_rho=cfg.sam_rho)}


def run(cfg: Config, ctx) -> dict:
    arms = trainings(cfg)
    names = list(arms)
    res = icl_sweep.run_sweep(cfg.sweep, ctx, "subset", [{"k": cfg.k}] * len(names), names,
                              training=list(arms.values()), title="optimizer interventions (Figs. 3, 12)")
    head = icl_sweep.headline(res)
    summary = ("Steps to threshold: " + "; ".join(icl_sweep.format_arm(n, res["per_arm"][n]) for n in names)
               + ". Gap closed (best eval): " + ", ".join(f"{n} {head[f'gap_closed[{n}]']:.1%}" for n in names) + ".")
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """PCGrad (at batch / divisor) and the frozen readout each reach the threshold sooner than Adam."""
    return [Claim(f"{n}_faster", "004", INTERVENTION_CLAIMS[n][0], INTERVENTION_CLAIMS[n][1], "steps_to_threshold",
                  n, "adam", expect="lower") for n in cfg.interventions if n in INTERVENTION_CLAIMS]


QUICK = Config(sweep=icl_sweep.QUICK_ESCAPE)

EXPERIMENT = Experiment(
    name="icl_interventions",
    reproduces="seed 004 Figs. 3 and 12 on ICL regression (PCGrad at batch/4, frozen readout; plus layer-wise lr, SAM)",
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS), "full": Config(sweep=icl_sweep.FULL)},
    cost={"quick": "~4 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=46,
)
