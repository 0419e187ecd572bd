"""ICL regression: Zipf sampling over a large task pool; a medium alpha is fastest (seed 004 Fig. 5).

Reproduces: seed 004 Sec. 4.2 / Fig. 5. Each seed fixes a large pool of N tasks w ~ N(0, I)
(so alpha = 0 behaves like the continuous case) and draws training tasks with
p(rank r) ∝ (r+1)^-alpha, ranks a fixed random order (`data.Zipf`). Tested on fresh w ~ N(0, I).
Per arm: normalized test loss, distance to ridge and to the Bayes predictor of the Zipf-weighted
pool, steps to ridge + 1/2 (zero - ridge) over vmapped seeds.

Expected: alpha around 1 reaches the threshold sooner than alpha = 0 (uniform) and than a large
alpha (close to a single task, which memorizes and never generalizes).
Cost: the experiment's `cost` field (`lsb list`); quick: a tiny model, d = 4; full: paper-scale
GPT-2, d = 20, pool 2^15, 3 seeds at each of 2 base seeds x 5 alphas, 30k steps: GPU only (not run here).

    lsb run icl_zipf --config quick
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
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)   # alphas[0] = 0: uniform, the baseline

    def __post_init__(self):
        if not self.alphas or self.alphas[0] != 0:
            raise ValueError(f"alphas must start with 0 (uniform, the baseline), got {self.alphas}")
        icl_sweep.validate_arms([{"alpha": a} for a in self.alphas], self.sweep.pool_size, "alphas")


def run(cfg: Config, ctx) -> dict:
    names = [f"alpha={a:g}" for a in cfg.alphas]
    res = icl_sweep.run_sweep(cfg.sweep, ctx, "zipf", [{"alpha": a} for a in cfg.alphas], names,
                              title=f"Zipf over {cfg.sweep.pool_size} tasks (Fig. 5)")
    head = icl_sweep.headline(res)
    summary = "Steps to threshold: " + "; ".join(icl_sweep.format_arm(n, res["per_arm"][n]) for n in names) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every medium alpha (strictly between 0 and the largest) is faster than either extreme."""
    lo, hi = f"alpha={cfg.alphas[0]:g}", f"alpha={cfg.alphas[-1]:g}"
    says = "for a medium Zipf exponent alpha there is a speedup over either extreme"
    return [Claim(f"alpha={a:g}_faster_than_{extreme}", "004", "Fig. 5", says, "steps_to_threshold", f"alpha={a:g}",
                  other, expect="lower")
            for a in cfg.alphas[1:-1] for extreme, other in (("uniform", lo), ("largest", hi))]


QUICK_SWEEP = icl_sweep.QUICK

QUICK = Config(sweep=QUICK_SWEEP, alphas=(0.0, 1.0, 2.5))

EXPERIMENT = Experiment(
    name="icl_zipf",
    reproduces="seed 004 Fig. 5 (ICL regression: Zipf exponent alpha over a task pool)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS),
        "full": Config(sweep=icl_sweep.FULL),
    },
    cost={"quick": "~3 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=41,
)
