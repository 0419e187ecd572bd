"""ICL regression: fewer training tasks speed up early test-loss progress (seed 004 Figs. 1 and 4).

Reproduces: seed 004 Sec. 4.1 / Figs. 1, 4. A GPT-2 is trained in-context on w drawn uniformly
from a pool of k tasks W_k ~ N(0, I) (`data.Subset`: the first k of a fixed random order of the
seed's pool), or on a fresh w ~ N(0, I) per sequence (k = 0 means k = infinity); it is tested on
fresh w ~ N(0, I). Per arm: the normalized test loss over training, its distance to ridge and to
the Bayes predictor of the arm's own pool (dMMSE), the steps to reach ridge + 1/2 (zero - ridge)
(mean +- std over vmapped seeds) and the per-task loss trajectories of the pool, clustered.

Expected: small k memorizes the pool (tracks dMMSE, test loss stalls above the threshold);
large k behaves like k = infinity; an intermediate k reaches the threshold in fewer steps than
k = infinity (then drifts toward memorization, its distance to ridge rising again).

Cost: the experiment's `cost` field (`lsb list`); quick: a tiny model, d = 2;
full: 12-layer 256-wide GPT-2 (9.5M parameters without GPT2Model's unused token table), d = 20,
41 points, batch 128, 3 seeds at each of 2 base seeds x 6 arms, 30k steps: GPU only (not run here).

    lsb run icl_task_count --config quick
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
    ks: tuple[int, ...] = (0, 16, 64, 256, 1024, 8192)   # 0 = infinitely many tasks (the baseline)

    def __post_init__(self):
        if not self.ks or self.ks[0] != 0:
            raise ValueError(f"ks must start with 0 (= infinite tasks, the baseline), got {self.ks}")
        icl_sweep.validate_arms([{"k": k} for k in self.ks], self.sweep.pool_size, "ks")


def run(cfg: Config, ctx) -> dict:
    names = ["k=inf" if k == 0 else f"k={k}" for k in cfg.ks]
    res = icl_sweep.run_sweep(cfg.sweep, ctx, "subset", [{"k": k} for k in cfg.ks], names,
                              title="task count k (Figs. 1, 4)")
    head = icl_sweep.headline(res)
    summary = "Steps to threshold: " + "; ".join(icl_sweep.format_arm(n, res["per_arm"][n]) for n in names) + "."
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Each finite k strictly between the smallest and the largest is faster than k = inf; the smallest
    k memorizes (nearer its pool's Bayes predictor than ridge) and ends with a higher test loss."""
    finite = sorted(k for k in cfg.ks if k > 0)
    out = [Claim(f"k={k}_faster", "004", "Figs. 1, 4", "an intermediate number of training tasks k reaches the "
                 "test-loss threshold in fewer steps than infinitely many tasks", "steps_to_threshold", f"k={k}",
                 "k=inf", expect="lower") for k in finite[1:-1]]
    if finite:
        k0 = f"k={finite[0]}"
        out += [Claim(f"{k0}_memorizes", "004", "Fig. 1", "with few tasks the model memorizes them: its predictions "
                      "end nearer its pool's Bayes predictor (dMMSE) than ridge", "train_bayes_minus_ridge_distance",
                      k0, expect="lower"),
                Claim(f"{k0}_never_generalizes", "004", "Figs. 1, 4", "... and never generalizes: its final test "
                      "loss is above that of infinitely many tasks", "final_test_loss", k0, "k=inf", expect="higher")]
    return out


QUICK_SWEEP = icl_sweep.QUICK_ESCAPE

QUICK = Config(sweep=QUICK_SWEEP, ks=(0, 4, 32, 256))

EXPERIMENT = Experiment(
    name="icl_task_count",
    reproduces="seed 004 Figs. 1, 4 (ICL regression: number of training tasks k)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS),
        "full": Config(sweep=icl_sweep.FULL),
    },
    cost={"quick": "~3 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=40,
)
