"""ICL regression: a task-count curriculum is as fast as the best fixed k and still generalizes (seed 004 Fig. 7).

Reproduces: seed 004 App. A / Fig. 7. The curriculum trains on the first 32 tasks of the pool for
30 steps, then doubles the task count every 20 steps keeping the old tasks (`data.Subset` with
k(step) = `data.doubling(32, 30, 20, N)`), capped at the pool size N; it is compared with fixed
k (`data.Subset`) and with fresh tasks (k = infinity), all in one vmapped program. Tested on
fresh w ~ N(0, I).

Expected: the curriculum reaches ridge + 1/2 (zero - ridge) no later than any fixed k and ends
near ridge, while small fixed k stall (memorize) and k = infinity is slower.

Cost: the experiment's `cost` field (`lsb list`); quick: a tiny model, d = 4;
curriculum 4 tasks for 100 steps, x2 every 100 steps; full: paper-scale GPT-2, d = 20, pool
2^15, 30k steps: GPU only (not run here).

    lsb run icl_curriculum --config quick
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
    ks: tuple[int, ...] = (0, 32, 256, 2048)   # fixed-k arms (0 = infinite tasks, the baseline)

    def __post_init__(self):
        if not self.ks or self.ks[0] != 0:
            raise ValueError(f"ks must start with 0 (= infinite tasks, the baseline), got {self.ks}")
        icl_sweep.validate_arms([{"k": k} for k in self.ks], self.sweep.pool_size, "ks")


def run(cfg: Config, ctx) -> dict:
    s = cfg.sweep
    names = ["k=inf" if k == 0 else f"k={k}" for k in cfg.ks] + [curriculum_name(s)]
    arms = [{"k": k} for k in cfg.ks] + [{"curriculum": 1}]
    res = icl_sweep.run_sweep(s, ctx, "curriculum", arms, names, title="task-count curriculum (Fig. 7)")
    head = icl_sweep.headline(res)
    steps = {n: res["per_arm"][n]["steps_to_threshold_rmean"] for n in names}
    cur = steps[names[-1]]
    fixed = [v for n, v in steps.items() if n != names[-1] and res["per_arm"][n]["steps_to_threshold_reached"] > 0]
    head["curriculum_steps"] = cur
    head["best_fixed_steps"] = min(fixed) if fixed else float("nan")
    head["curriculum_final_vs_ridge"] = res["per_arm"][names[-1]]["final_test_loss_mean"] / res["ridge_test_loss"]
    summary = ("Steps to threshold: " + "; ".join(icl_sweep.format_arm(n, res["per_arm"][n]) for n in names)
               + f". Curriculum final test loss = {head['curriculum_final_vs_ridge']:.3f} x ridge.")
    return {"headline": head, "summary": summary, **res}


def curriculum_name(s: SweepConfig) -> str:
    return f"curriculum {s.curriculum_start}@{s.curriculum_first}+x2/{s.curriculum_every}"


def claims(cfg: Config) -> list[Claim]:
    """The curriculum is faster than k = inf and ends with a lower test loss than every fixed finite k."""
    cur = curriculum_name(cfg.sweep)
    out = [Claim("curriculum_faster", "004", "Fig. 7", "a curriculum over the task count improves the test loss "
                 "faster early than training on infinitely many tasks ...", "steps_to_threshold", cur, "k=inf",
                 expect="lower")]
    out += [Claim(f"curriculum_ends_below_k={k}", "004", "Fig. 7", "... and converges to the optimal test loss, "
                  "unlike a fixed small task count", "final_test_loss", cur, f"k={k}", expect="lower")
            for k in cfg.ks if k > 0]
    return out


QUICK_SWEEP = dataclasses.replace(icl_sweep.QUICK, curriculum_start=4, curriculum_first=100, curriculum_every=100)

QUICK = Config(sweep=QUICK_SWEEP, ks=(0, 8))

EXPERIMENT = Experiment(
    name="icl_curriculum",
    reproduces="seed 004 Fig. 7 (ICL regression: doubling task-count curriculum)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS),
        "full": Config(sweep=icl_sweep.FULL),
    },
    cost={"quick": "~3 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=43,
)
