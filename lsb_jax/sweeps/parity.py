"""Sparse-parity sweeps (seed 004 Sec. 2.2, App. B.2, C.3): config, arms, the task on `train.sweep`.

`run_sweep(cfg, ctx, arms, title)` trains every arm (a `tasks.parity.Lever`, optionally its own
optimizer / batch size; build them with `arm(...)`) for `cfg.seeds` vmapped seeds at each base seed with
`train.sweep.run` (seeds share the init key across arms: common random numbers). Arms with
different levers get different programs (a lever is static); arms that differ only in numeric
optimizer fields share one. Test accuracy / MSE every `eval_every` steps; steps to solve = the
first evaluated step with test accuracy >= `solve_acc`, right-censored at `steps`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lsb_jax import plots
from lsb_jax.config import require_positive
from lsb_jax.models.mlp import ACTIVATIONS, init_mlp
from lsb_jax.optim import OptimConfig
from lsb_jax.optim.factory import validate as validate_optim
from lsb_jax.tasks.parity import Lever, batch_sampler, evaluate, mse_losses, test_set
from lsb_jax.train import sweep
from lsb_jax.train.arms import ArmTraining, check_base_seeds
from lsb_jax.train.sweep import Arm, SweepSpec, SweepTask


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    """The setup shared by the parity experiments (defaults: the paper's, App. B.2)."""

    dim: int = 20
    k: int = 6
    hidden: tuple[int, ...] = (40, 40)   # "3-layer MLP, hidden width 40": 20-40-40-1
    activation: str = "relu"
    batch_size: int = 20
    steps: int = 50_000                  # the pool D has steps x batch_size points
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.1)
    seeds: int = 5                       # per base seed
    base_seeds: tuple[int, ...] = (0, 1)  # replicates: every claim is decided at each (init + data streams)
    data_seed: int = 1234                # the test set (shared by all members and arms)
    test_size: int = 4096
    eval_every: int = 500
    solve_acc: float = 0.95              # "solved" = test accuracy on chi_k >= this
    chunk_size: int = 500
    log_every: int = 100
    checkpoint_every: int | None = None

    def __post_init__(self):
        if not 1 <= self.k <= self.dim <= 32:
            raise ValueError(f"ParityConfig: need 1 <= k <= dim <= 32, got k={self.k}, dim={self.dim}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ParityConfig.activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}")
        require_positive(self, ("batch_size", "steps", "seeds", "test_size", "eval_every", "chunk_size", "log_every"),
                         "ParityConfig")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"ParityConfig.hidden sizes must be >= 1, got {self.hidden}")
        if not 0.5 < self.solve_acc <= 1.0:
            raise ValueError(f"ParityConfig.solve_acc must be in (0.5, 1], got {self.solve_acc}")
        validate_optim(self.optim, self.steps, {})
        check_base_seeds(self.base_seeds, "ParityConfig.base_seeds")

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.dim, *self.hidden, 1)

    @property
    def pool_size(self) -> int:
        return self.steps * self.batch_size


# The quick scale of the parity experiments (CPU): k = 4 instead of 6, 2500 steps, 16 seeds per base seed.
QUICK = ParityConfig(k=4, steps=2500, seeds=16, test_size=1024, eval_every=100, chunk_size=500, log_every=100)


def arm(name: str, sampler: str = "online", *, rho: float = 1.0, alpha: float = 0.0, switch: int = 100,
        eps: float = 0.0, optim: OptimConfig | None = None, batch_size: int | None = None) -> Arm:
    """A parity arm: its lever (static) and, optionally, its own optimizer / batch size."""
    training = None if optim is None and batch_size is None else ArmTraining(optim, batch_size)
    return Arm(name, {}, training, static=Lever(sampler, rho, alpha, switch, eps))


def sweep_task(cfg: ParityConfig) -> SweepTask:
    """The parity MLP on the sweep engine: init, per-example MSE, the group's lever sampler, test metrics."""
    x_test, y_test = test_set(cfg)
    return SweepTask(
        init_params=lambda k: init_mlp(k, cfg.sizes),
        loss_fn=lambda params, batch: mse_losses(params, batch, cfg.activation),
        sampler=lambda group: (lambda sample: lambda key, step, hp: sample(key, step))(
            batch_sampler(cfg, group.static, group.batch_size)),
        evaluate=lambda params, step, hp, x, y: {"test_" + k: v
                                                 for k, v in evaluate(params, x, y, cfg.activation).items()},
        eval_data=(x_test, y_test))


def spec(cfg: ParityConfig) -> SweepSpec:
    return SweepSpec(seeds=cfg.seeds, steps=cfg.steps, optim=cfg.optim, batch_size=cfg.batch_size,
                     eval_every=cfg.eval_every, seed=cfg.base_seeds, chunk_size=cfg.chunk_size, log_every=cfg.log_every,
                     checkpoint_every=cfg.checkpoint_every)


def run_sweep(cfg: ParityConfig, ctx, arms: Sequence[Arm], title: str) -> dict:
    """Trains every arm, saves the accuracy / MSE figure, returns {"per_arm": {name: summary},
    "curves": {name: {"step", "test_acc_mean"}}, "baseline": arms[0].name, "per_seed": the claims'
    tables}: steps_to_solve (censored at the horizon), solved (0/1), final_test_acc and
    mean_test_acc (the accuracy averaged over the evaluations: the area under the learning curve)."""
    for a in arms:
        if not isinstance(a.static, Lever):
            raise ValueError(f"arm {a.name!r}: a parity arm needs a Lever as its static key (use sweeps.parity.arm)")
    res = sweep.run(sweep_task(cfg), arms, spec(cfg), ctx, desc="parity")
    acc, mse = res.curves["test_acc"], res.curves["test_mse"]
    solve = res.steps_to(acc, cfg.solve_acc, below=False)
    cols = res.threshold_columns("test_acc", cfg.solve_acc, below=False, prefix="steps_to_solve")
    per_arm, curves = {}, {}
    for i, a in enumerate(arms):
        final = acc[i, :, -1]
        per_arm[a.name] = {
            "steps_to_solve": [float(s) for s in solve[i]], **cols[a.name],
            "solved_fraction": float(np.mean(~np.isnan(solve[i]))),
            "final_test_acc_mean": float(final.mean()),
            "final_test_acc_std": float(final.std(ddof=1)) if final.size > 1 else float("nan"),
            "mean_test_acc_over_training": float(acc[i].mean()),
            "final_test_mse_mean": float(np.nanmean(mse[i, :, -1])),
            "diverged": int((res.diverged_at[i] >= 0).sum()),
            "program_group": next(g.number for g in res.groups if i in g.group.arms),
        }
        curves[a.name] = {"step": [int(s) for s in res.eval_steps], "test_acc_mean": [float(v) for v in acc[i].mean(0)]}
    if ctx is not None:
        fig = plots.compare_arms(res.eval_steps, res.names, [
            plots.Panel(acc, f"test accuracy on chi_{cfg.k}", lines={"solved": cfg.solve_acc}, bounds=(0, 1)),
            plots.Panel(mse, f"test MSE vs chi_{cfg.k}", log=True)], title=title)
        ctx.save_figure(fig, "parity_curves")
    per_seed = {"steps_to_solve": res.per_seed(solve, censored=True, unit="steps"),
                "solved": res.per_seed(~np.isnan(solve)), "final_test_acc": res.per_seed(acc[:, :, -1]),
                "mean_test_acc": res.per_seed(acc.mean(-1))}
    return {"per_arm": per_arm, "curves": curves, "baseline": arms[0].name, "program_groups": res.program_groups(),
            "per_seed": per_seed}


def headline(res: dict) -> dict:
    """Flat numbers for the report: per arm the censored steps to solve (restricted mean) and solved
    fraction, and the fastest arm (lowest restricted mean, no test: the claims decide) with its
    speed-up over the baseline (arms[0])."""
    per = res["per_arm"]
    head = {}
    for name, s in per.items():
        head[f"{name}/steps_to_solve"] = s["steps_to_solve_rmean"]
        head[f"{name}/solved"] = s["solved_fraction"]
        head[f"{name}/mean_acc"] = s["mean_test_acc_over_training"]
    base = per[res["baseline"]]["steps_to_solve_rmean"]
    fastest = min(per, key=lambda n: (per[n]["steps_to_solve_rmean"], -per[n]["mean_test_acc_over_training"]))
    head["fastest_arm"] = fastest
    head["speedup_fastest_vs_baseline"] = sweep.speedup(base, per[fastest]["steps_to_solve_rmean"])
    return head


def format_arm(name: str, s: dict) -> str:
    return (f"{name}: restricted mean {s['steps_to_solve_rmean']:.0f} steps (solved {s['solved_fraction']:.0%}, "
            f"final acc {s['final_test_acc_mean']:.3f})")


__all__ = ["QUICK", "Arm", "ParityConfig", "arm", "format_arm", "headline", "run_sweep", "spec", "sweep_task"]
