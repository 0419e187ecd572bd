"""ICL regression: biasing every gradient by a stored batch gradient (seed 004 Fig. 2).

Reproduces: seed 004 Sec. 3 / Fig. 2 (in-context linear regression panel). Adam on
u_t = g_t + gamma g_bias, where g_bias is the batch gradient stored every n = 100 steps
(`optim.gradient_bias` via `OptimConfig.grad_bias_gamma/grad_bias_every`); fresh tasks
w ~ N(0, I) for every sequence (k = infinity). gamma = 0 is plain Adam (the baseline). All gammas
are traced hyperparameters of ONE vmapped program (`train.arms.ArmTraining` + `group_arms`: the
gamma = 0 arm runs the same program with gamma = 0, which is exactly g_t), seeds shared across arms.
The seed gives no gamma values: we sweep them.

Expected (paper): a medium gamma leaves the initial plateau in fewer steps than gamma = 0; a high
gamma destabilizes training. Quick differs from the paper: `sweeps.icl.QUICK_ESCAPE` (d = 2, 8
points, sigma^2 = 0.25, a 2-layer 32-wide GPT-2, Adam lr 1e-3, batch 32, 1500 steps, 2 seeds at each
of 2 base seeds; threshold = ridge + 0.7 (zero - ridge)), chosen because at QUICK's d = 4 Adam does
not leave the plateau within a CPU budget; the run reports each arm's escape step (censored: seeds
reached, restricted mean, median).

Cost: the experiment's `cost` field (`lsb list`); quick compiles one program;
full (`sweeps.icl.FULL`, 12-layer GPT-2, d = 20, 30k steps): GPU.

    lsb run icl_grad_bias --config quick
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import icl as icl_sweep
from lsb_jax.sweeps.icl import SweepConfig
from lsb_jax.train.arms import grad_bias_arms


@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = SweepConfig()
    gammas: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)   # gammas[0] = 0: plain Adam, the baseline
    refresh_every: int = 100                               # n of the paper
    k: int = 0                                             # training tasks (0 = a fresh task per sequence)

    def __post_init__(self):
        if not self.gammas or self.gammas[0] != 0 or any(g < 0 for g in self.gammas):
            raise ValueError(f"gammas must start with 0 (plain Adam) and be >= 0, got {self.gammas}")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {self.refresh_every}")
        icl_sweep.validate_arms([{"k": self.k}], self.sweep.pool_size, "k")


def run(cfg: Config, ctx) -> dict:
    names = [f"gamma={g:g}" for g in cfg.gammas]
    training = list(grad_bias_arms(cfg.gammas, cfg.sweep.optim, cfg.refresh_every).values())
    res = icl_sweep.run_sweep(cfg.sweep, ctx, "subset", [{"k": cfg.k}] * len(names), names, training=training,
                              title=f"gradient biasing, n = {cfg.refresh_every} (Fig. 2)")
    head = icl_sweep.headline(res)
    gap = {n: head[f"gap_closed[{n}]"] for n in names}
    summary = ("Steps to threshold: " + "; ".join(icl_sweep.format_arm(n, res["per_arm"][n]) for n in names)
               + ". Gap closed (best eval): " + ", ".join(f"{n} {gap[n]:.1%}" for n in names) + ".")
    diverged = [n for n in names if not np.isfinite(res["per_arm"][n]["final_test_loss_mean"])]
    if diverged:
        summary += f" Diverged: {', '.join(diverged)}."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every medium gamma (strictly between 0 and the largest) reaches the threshold sooner than Adam."""
    return [Claim(f"gamma={g:g}_faster", "004", "Fig. 2", "adding a small fraction gamma of a stored batch gradient "
                  "(medium gamma) improves training", "steps_to_threshold", f"gamma={g:g}", "gamma=0", expect="lower")
            for g in cfg.gammas[1:-1]]


QUICK = Config(sweep=icl_sweep.QUICK_ESCAPE, gammas=(0.0, 0.01, 0.03, 0.1))

EXPERIMENT = Experiment(
    name="icl_grad_bias",
    reproduces="seed 004 Fig. 2 (ICL regression: gradient biasing gamma, refresh n = 100)",
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS),
             "full": Config(sweep=icl_sweep.FULL)},
    cost={"quick": "~3 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=45,
)
