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
41 points, batch 128, 3 seeds x 6 arms, 30k steps: GPU only (not run here).

    lsb run icl_task_count --config quick
"""

from __future__ import annotations

import dataclasses


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
    head = icl_sweep.headline(res, names[0])
    steps = {n: res["per_arm"][n]["steps_to_threshold_rmean"] for n in names}
    base = steps[names[0]]
    faster = [n for n in names[1:] if steps[n] < base]     # censored restricted means: never-reached = horizon
    head["finite_k_faster_than_infinite"] = ", ".join(faster) or "none"
    stalls = [n for n in names[1:] if res["per_arm"][n]["steps_to_threshold_reached"] == 0]
    head["finite_k_never_reaching"] = ", ".join(stalls) or "none"
    summary = ("Steps to threshold: " + "; ".join(icl_sweep.format_arm(n, res["per_arm"][n]) for n in names)
               + f". Faster than k=inf: {head['finite_k_faster_than_infinite']}; never reach it: "
               + f"{head['finite_k_never_reaching']}.")
    return {"headline": head, "summary": summary, **res}


QUICK_SWEEP = icl_sweep.QUICK_ESCAPE

EXPERIMENT = Experiment(
    name="icl_task_count",
    reproduces="seed 004 Figs. 1, 4 (ICL regression: number of training tasks k)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": Config(sweep=QUICK_SWEEP, ks=(0, 4, 32, 256)),
        "full": Config(sweep=icl_sweep.FULL),
    },
    cost={"quick": "~3 min CPU (8-12 min measured on a heavily loaded 2-core machine)", "full": "GPU (not run)"},
    run=run,
    order=40,
)
