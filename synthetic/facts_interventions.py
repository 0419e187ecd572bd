"""Fact memorization: optimizer interventions vs Adam (gradient bias, PCGrad, readout freeze/lr, SAM; seed 004 Fig. 2).

Reproduces: seed 004 Sec. 3 / Fig. 2 (gradient biasing on the facts task: g_t + gamma g_bias with
g_bias the batch gradient refreshed every n = 25 steps, `OptimConfig.grad_bias_gamma` /
`grad_bias_every`), PCGrad at a 4x smaller batch (Fig. 3's setting, there for ICL; per-example
gradients, Yu et al.'s conditional projection), plus the interventions of App. C.5 / Fig. 12 run on
facts: the readout `lm_head` frozen at its initialization (`OptimConfig.freeze`), the readout's lr
scaled by `readout_lr_scale` (`OptimConfig.layer_lr`), and SAM (`OptimConfig.sam_rho`) around Adam.
All arms train on all subjects. The model is untied (`ModelConfig.tie_embeddings=False`) so that the
readout is a parameter of its own; every arm, the baseline included, uses that model. Arms that
differ only in gamma share one vmapped program (gamma traced); the others get one program each
(`train.arms.group_arms`), all with the same seeds' keys and facts.

Expected (paper, Fig. 2): a medium gamma speeds up the escape from the plateau, a large gamma
destabilizes, gamma -> 0 is plain Adam. PCGrad / frozen readout / layer-wise lr / SAM: not in the
paper's facts figures; measured, no direction claimed.
Quick: the facts quick scale (50 subjects, 2x2x64 GPT-2, Adam lr 1e-3, batch 64) with 400 steps
and 2 seeds at each of 2 base seeds, gammas (0.3, 1.0).
Cost: the experiment's `cost` field (`lsb list`); quick compiles 5 programs; full: GPU (not run
here).

    lsb run facts_interventions --config quick
"""

from __future__ import annotations

import dataclasses

from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import facts
from lsb_jax.sweeps.facts import SweepConfig
from lsb_jax.train.arms import (INTERVENTION_CLAIMS, INTERVENTIONS, ArmTraining, check_interventions, grad_bias_arms,
                                intervention_arms)

READOUT = r"^lm_head$"


def _untied(sweep: SweepConfig, every: int = 25) -> SweepConfig:
    return dataclasses.replace(sweep, model=dataclasses.replace(sweep.model, tie_embeddings=False),
                               optim=dataclasses.replace(sweep.optim, grad_bias_every=every))


@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = _untied(facts.FULL)
    gammas: tuple[float, ...] = (0.1, 0.3, 1.0)     # gradient-bias strengths (0 = the Adam baseline)
    interventions: tuple[str, ...] = INTERVENTIONS
    readout_lr_scale: float = 0.1
    sam_rho: float = 0.05
    pcgrad_batch_divisor: int = 4                   # PCGrad at a 4x smaller batch, as the paper runs it (Fig. 3)

    def __post_init__(self):
        check_interventions(self.interventions, self.pcgrad_batch_divisor, self.readout_lr_scale, self.sam_rho)
        if any(g <= 0 for g in self.gammas):
            raise ValueError(f"gammas must be > 0 (the baseline is gamma = 0), got {self.gammas}")
        if self.sweep.model.tie_embeddings and set(self.interventions) & {"frozen_readout", "layer_lr"}:
            raise ValueError("sweep.model.tie_embeddings must be False for frozen_readout / layer_lr "
                             "(the tied readout is the token embedding)")


def arms(cfg: Config) -> tuple[list[str], list[ArmTraining | None]]:
    base = cfg.sweep.optim
    table = {"adam": None,
             **grad_bias_arms(cfg.gammas, base, base.grad_bias_every, name="grad_bias gamma={:g}"),
             **intervention_arms(cfg.interventions, base, cfg.sweep.batch_size, READOUT,
                                 pcgrad_batch_divisor=cfg.pcgrad_batch_divisor,
                                 readout_lr_scale=cfg.readout_lr_scale, sam_rho=cfg.sam_rho)}
    return list(table), list(table.values())


def run(cfg: Config, ctx) -> dict:
    names, training = arms(cfg)
    res = facts.run_sweep(cfg.sweep, ctx, "subset", [{"k": 0}] * len(names), names,
                          title="optimizer interventions (Fig. 2)", training=training)
    head = facts.headline(res, cfg.sweep)
    per, t0 = res["per_arm"], cfg.sweep.thresholds[0]
    summary = "Optimizer interventions on facts: " + "; ".join(facts.format_arm(n, per[n], t0) for n in names) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every gamma but the largest (medium biasing), PCGrad and the frozen readout each reach the first
    accuracy threshold sooner than Adam."""
    t0 = f"steps_to_{cfg.sweep.thresholds[0]:g}"
    out = [Claim(f"gamma={g:g}_faster", "004", "Fig. 2", "adding a fraction gamma of a stored batch gradient (medium "
                 "gamma) speeds up training (shown on every setting)", t0, f"grad_bias gamma={g:g}", "adam",
                 expect="lower") for g in sorted(cfg.gammas)[:-1]]
    out += [Claim(f"{n}_faster", "004", INTERVENTION_CLAIMS[n][0], INTERVENTION_CLAIMS[n][1] + " (shown on ICL; here "
                  "on fact memorization)", t0, n, "adam", expect="lower")
            for n in cfg.interventions if n in INTERVENTION_CLAIMS]
    return out


QUICK = Config(sweep=dataclasses.replace(_untied(facts.QUICK), steps=400, seeds=2), gammas=(0.3, 1.0))

EXPERIMENT = Experiment(
    name="facts_interventions",
    reproduces=("seed 004 Fig. 2 on fact memorization (gradient biasing, n = 25; PCGrad, frozen readout, "
                "layer-wise lr, SAM)"),
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, facts.MEDIUM_SEEDS),
             "full": Config()},
    cost={"quick": "~4.5 min CPU",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=64,
)
