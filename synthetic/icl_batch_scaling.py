"""ICL regression: fewer tasks still learn faster when the batch size grows with k (seed 004 Fig. 9, App. C.2).

Reproduces: seed 004 App. C.2 / Fig. 9. Arm k trains on k tasks (`data.Subset`) with batch size
B = k / `k_over_b` (k / B the same for every arm), so each batch holds the same
expected number of sequences per task; learning curves are compared against datapoints seen
(steps x B). Every arm runs the same number of steps (one compiled program per batch size,
`train.arms.group_arms`; seeds, test set and baselines shared), so the arms are compared at equal
data up to the smallest arm's budget (`data_budget` = steps x min B): the test loss there
(interpolated on the evaluation curve) and the datapoints to the threshold.

Expected (paper): lower k still reaches low test loss with fewer datapoints, i.e. the speed-up of
fewer tasks is not explained by how many tasks a batch mixes.
Quick differs from the paper: `sweeps.icl.QUICK_ESCAPE` (d = 2, 8 points, sigma^2 = 0.25, 2-layer
32-wide GPT-2, Adam lr 1e-3, 1500 steps, 2 seeds at each of 2 base seeds), k = 8, 32, 128 with B = k.
Cost: the experiment's `cost` field (`lsb list`); 3 programs, 168 sequences per step over the
arms; full (`sweeps.icl.FULL`, k = 32, 128, 512 with B = k): GPU.

    lsb run icl_batch_scaling --config quick
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import icl as icl_sweep
from lsb_jax.sweeps.icl import ArmTraining, SweepConfig


@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = SweepConfig()
    ks: tuple[int, ...] = (32, 128, 512)
    k_over_b: float = 1.0                 # k / B, the same for every arm

    def __post_init__(self):
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be finite task counts >= 1, got {self.ks}")
        icl_sweep.validate_arms([{"k": k} for k in self.ks], self.sweep.pool_size, "ks")
        bad = [k for k in self.ks
               if round(k / self.k_over_b) < 1 or abs(k / self.k_over_b - round(k / self.k_over_b)) > 1e-9]
        if not self.k_over_b > 0 or bad:
            raise ValueError(f"k_over_b={self.k_over_b} must be > 0 and give an integer batch size >= 1 for every k; "
                             f"bad k: {bad}")

    def batch_sizes(self) -> list[int]:
        return [int(round(k / self.k_over_b)) for k in self.ks]


def run(cfg: Config, ctx) -> dict:
    names = [f"k={k},B={b}" for k, b in zip(cfg.ks, cfg.batch_sizes())]
    res = icl_sweep.run_sweep(cfg.sweep, ctx, "subset", [{"k": k} for k in cfg.ks], names,
                              training=[ArmTraining(batch_size=b) for b in cfg.batch_sizes()],
                              baseline_arm=len(names) - 1, title=f"k / B = {cfg.k_over_b:g} (Fig. 9)")
    head = icl_sweep.headline(res)
    per = res["per_arm"]
    head["data_budget"] = res["data_budget"]
    for n in names:
        head[f"loss_at_data_budget[{n}]"] = per[n]["test_loss_at_data_budget"]
        head[f"data_to_threshold[{n}]"] = per[n]["datapoints_to_threshold_rmean"]
    at_budget = [per[n]["test_loss_at_data_budget"] for n in names]
    summary = (f"Test loss at {res['data_budget']} datapoints (ridge {res['ridge_test_loss']:.3f}, zero "
               f"{res['zero_test_loss']:.3f}): " + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, at_budget))
               + ". Datapoints to threshold: " + ", ".join(
                   f"{n} {per[n]['datapoints_to_threshold_rmean']:.0f}" if per[n]["steps_to_threshold_reached"]
                   else f"{n} never" for n in names) + ".")
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every k below the largest has a lower test loss at the shared datapoint budget than the largest."""
    names = [f"k={k},B={b}" for k, b in zip(cfg.ks, cfg.batch_sizes())]
    largest = names[int(np.argmax(cfg.ks))]
    return [Claim(f"{n}_better_at_equal_data", "004", "Fig. 9", "with the batch size scaled with k, lower k still "
                  "does better at an equal number of datapoints seen", "test_loss_at_data_budget", n, largest,
                  expect="lower") for n, k in zip(names, cfg.ks) if k < max(cfg.ks)]


QUICK = Config(sweep=icl_sweep.QUICK_ESCAPE, ks=(8, 32, 128))

EXPERIMENT = Experiment(
    name="icl_batch_scaling",
    reproduces="seed 004 Fig. 9, App. C.2 (ICL regression: batch size scaled with k, loss vs datapoints seen)",
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS), "full": Config(sweep=icl_sweep.FULL)},
    cost={"quick": "~2 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=48,
)
