"""ICL regression: correlated task prior (1 - beta) I + beta v v^T; intermediate beta is fastest (seed 004 Fig. 6).

Reproduces: seed 004 Sec. 4.3 / Fig. 6. Training tasks are fresh w ~ N(0, (1 - beta) I + beta v v^T)
with a fixed random unit vector v (beta = 0: the test distribution; beta = 1: every task on one
line); tested on w ~ N(0, I). Per arm: normalized test loss, distance to ridge and to the
Bayes predictor of the correlated prior (the Gaussian posterior mean), steps to ridge +
1/2 (zero - ridge) over vmapped seeds.

Expected: an intermediate beta reaches the threshold much sooner than beta = 0; beta = 1 learns only
the direction v and never reaches it. Cost: the experiment's `cost` field (`lsb list`); quick: a
tiny model, d = 4; full: paper-scale GPT-2, d = 20, 3 seeds at each of 2 base seeds x 6 betas, 30k
steps: GPU only (not run here). The seed gives no beta grid: ours is (0, 0.25, 0.5, 0.75, 0.9, 1).

    lsb run icl_correlated --config quick
"""

from __future__ import annotations

import dataclasses


from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import icl as icl_sweep
from lsb_jax.sweeps.icl import SweepConfig


@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = SweepConfig()
    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)   # betas[0] = 0: the baseline

    def __post_init__(self):
        if not self.betas or self.betas[0] != 0:
            raise ValueError(f"betas must start with 0 (the test distribution, the baseline), got {self.betas}")
        icl_sweep.validate_arms([{"beta": b} for b in self.betas], self.sweep.pool_size, "betas")


def run(cfg: Config, ctx) -> dict:
    names = [f"beta={b:g}" for b in cfg.betas]
    res = icl_sweep.run_sweep(cfg.sweep, ctx, "fresh", [{"beta": b} for b in cfg.betas], names,
                              title="task correlation beta (Fig. 6)")
    head = icl_sweep.headline(res)
    summary = "Steps to threshold: " + "; ".join(icl_sweep.format_arm(n, res["per_arm"][n]) for n in names) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every intermediate beta (0 < beta < 1) is faster than beta = 0 and, when swept, than beta = 1."""
    says = "intermediate task correlations beta learn much faster than either extreme"
    extremes = [("uncorrelated", "beta=0")] + ([("beta1", "beta=1")] if 1.0 in cfg.betas else [])
    return [Claim(f"beta={b:g}_faster_than_{what}", "004", "Fig. 6", says, "steps_to_threshold", f"beta={b:g}", other,
                  expect="lower") for b in cfg.betas if 0 < b < 1 for what, other in extremes]


QUICK_SWEEP = icl_sweep.QUICK

QUICK = Config(sweep=QUICK_SWEEP, betas=(0.0, 0.5, 0.9, 1.0))

EXPERIMENT = Experiment(
    name="icl_correlated",
    reproduces="seed 004 Fig. 6 (ICL regression: correlated task covariance beta)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS),
        "full": Config(sweep=icl_sweep.FULL),
    },
    cost={"quick": "~3 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=42,
)
