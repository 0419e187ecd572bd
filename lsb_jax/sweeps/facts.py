"""Fact-memorization sweeps (seed 004 Sec. 2.3, App. B.3): config, presets, the task on `train.sweep`.

`run_sweep(cfg, ctx, lever, arms, names, training=...)` trains seeds x arms (subject levers of
`tasks.facts`, optionally their own optimizer / batch size) with `train.sweep.run`. Every
`eval_every` steps each member is evaluated on ALL S R pairs of its facts: test accuracy (exact
greedy match), answer loss, and the accuracy on the subjects its sampler can draw at that step
(p(s) > 0: the truncated arm's own training facts). Steps to each accuracy threshold are
right-censored at `steps` (`analysis.censored_summary`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from lsb_jax import plots
from lsb_jax.config import require_positive
from lsb_jax.models import gpt2
from lsb_jax.optim import OptimConfig
from lsb_jax.tasks.facts import (LEVERS, LOSS_POSITIONS, FactsTask, draw_facts, eval_documents, evaluate_pairs,
                                 make_loss_fn, make_sample_batch, subject_sampler, validate_arms)
from lsb_jax.train import sweep
from lsb_jax.train.arms import ArmTraining, arm_training, check_base_seeds
from lsb_jax.train.state import jit_once
from lsb_jax.train.sweep import Arm, SweepSpec, SweepTask


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """GPT-2 shape (seed 004 App. B.3: 6 layers, 6 heads, width 192).

    tie_embeddings: logits = h wte^T (default, GPT-2's tying); False gives a separate readout
    `lm_head` [D, V] (the frozen-readout / layer-wise-lr interventions need one to act on).
    """

    num_layers: int = 6
    num_heads: int = 6
    width: int = 192
    tie_embeddings: bool = True

    def gpt2(self, task: FactsTask) -> gpt2.GPT2Config:
        return gpt2.GPT2Config(num_layers=self.num_layers, num_heads=self.num_heads, width=self.width,
                               max_len=task.seq_len - 1, vocab_size=task.vocab_size,
                               tie_embeddings=self.tie_embeddings)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything a facts sweep shares (`--set sweep.steps=...`); the lever values live in each experiment.

    """

    task: FactsTask = FactsTask()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig(name="adam", lr=5e-5, b1=0.9, b2=0.95)
    batch_size: int = 64
    steps: int = 20_000
    seeds: int = 5                 # per base seed
    base_seeds: tuple[int, ...] = (0, 1)  # replicates: every claim is decided at each (init, facts, data)
    data_seed: int = 4321          # subject order, eval noise; facts tables fold in (base seed, seed index)
    loss_positions: str = "all"
    thresholds: tuple[float, ...] = (0.1, 0.5, 0.9)   # test accuracies; thresholds[0] is the headline one
    eval_every: int = 100
    curriculum_start: int = 20     # curriculum: k0 subjects until `curriculum_switch`, then all
    curriculum_switch: int = 100
    chunk_size: int = 100
    log_every: int = 10
    checkpoint_every: int = 0

    def __post_init__(self):
        require_positive(self, ("batch_size", "steps", "seeds", "eval_every", "chunk_size", "log_every",
                                "curriculum_start"), "sweep")
        if self.loss_positions not in LOSS_POSITIONS:
            raise ValueError(f"sweep.loss_positions must be one of {LOSS_POSITIONS}, got {self.loss_positions!r}")
        if not self.thresholds or not all(0 < t <= 1 for t in self.thresholds):
            raise ValueError(f"sweep.thresholds must be accuracies in (0, 1], got {self.thresholds}")
        if self.curriculum_start > self.task.num_subjects:
            raise ValueError(f"sweep.curriculum_start={self.curriculum_start} exceeds "
                             f"task.num_subjects={self.task.num_subjects}")
        if self.curriculum_switch < 0 or self.checkpoint_every < 0:
            raise ValueError("sweep.curriculum_switch and sweep.checkpoint_every must be >= 0")
        self.model.gpt2(self.task)   # validates the shape (width divisible by heads, ...)
        check_base_seeds(self.base_seeds, "sweep.base_seeds")

    @property
    def total_seeds(self) -> int:
        """Seeds per arm over all base seeds (global seed index r * seeds + i)."""
        return self.seeds * len(self.base_seeds)



def run_sweep(cfg: SweepConfig, ctx, lever: str, arms: Sequence[Mapping[str, float]], arm_names: Sequence[str],
              baseline_arm: int = 0, title: str = "", training: Sequence[ArmTraining | None] | None = None) -> dict:
    """Trains seeds x arms of fact memorization; returns per-arm censored steps to each accuracy
    threshold, early / final / best accuracy, per-member rows; saves curves.npz ([E, M]) and the
    figure "accuracy_curves"."""
    if lever not in LEVERS:
        raise ValueError(f"lever must be one of {LEVERS}, got {lever!r}")
    arms = validate_arms(arms, cfg.task.num_subjects)
    training = arm_training(training, len(arms), arm_names)
    task = cfg.task
    model_cfg = cfg.model.gpt2(task)
    graphdef = gpt2.abstract_graphdef(model_cfg)
    perm_seed = cfg.data_seed
    phi_XxSxR = jit_once(lambda: draw_facts(cfg))()
    eval_XxQxT = jit_once(lambda phi: eval_documents(cfg, phi))(phi_XxSxR)
    chance_X = np.asarray([task.chance_accuracy(phi) for phi in np.asarray(phi_XxSxR)])

    def evaluate(params, step, hp_m, eval_XxQxT):
        seed = hp_m["seed"].astype(jnp.int32)
        correct_Q, aloss_Q = evaluate_pairs(graphdef, params, eval_XxQxT[seed])
        active_Q = jnp.repeat(subject_sampler(lever, cfg, hp_m, perm_seed).probs(step) > 0, task.num_relations)
        train_acc = jnp.sum(correct_Q * active_Q) / jnp.maximum(jnp.sum(active_Q), 1)
        return {"test_acc": jnp.mean(correct_Q), "train_acc": train_acc, "answer_loss": jnp.mean(aloss_Q)}

    sweep_task = SweepTask(init_params=lambda k: gpt2.init_params(model_cfg, k)[1],
                           loss_fn=make_loss_fn(graphdef, cfg.loss_positions),
                           sampler=lambda group: make_sample_batch(lever, cfg, perm_seed, group.batch_size),
                           evaluate=evaluate, data=(phi_XxSxR,), eval_data=(eval_XxQxT,))
    spec = SweepSpec(seeds=cfg.seeds, steps=cfg.steps, optim=cfg.optim, batch_size=cfg.batch_size,
                     eval_every=cfg.eval_every, seed=cfg.base_seeds, chunk_size=cfg.chunk_size, log_every=cfg.log_every,
                     checkpoint_every=cfg.checkpoint_every)
    res = sweep.run(sweep_task, [Arm(n, a, t) for n, a, t in zip(arm_names, arms, training)], spec, ctx,
                    desc=f"facts {lever}")
    out = summarize(cfg, res, arm_names, baseline_arm, chance_X)
    out["per_arm"] = {name: {**{k: arms[a][k] for k in ("k", "alpha", "curriculum")}, **row,
                             "diverged": int((res.diverged_at[a] >= 0).sum())}
                      for a, (name, row) in enumerate(out["per_arm"].items())}
    out["program_groups"] = res.program_groups()
    if ctx is not None:
        fig = plots.compare_arms(res.eval_steps, arm_names, [
            plots.Panel(res.curves["test_acc"], "test accuracy (all S x R facts)", bounds=(0, 1),
                        lines={"subject-blind best": float(chance_X.mean()), "threshold": cfg.thresholds[0]}),
            plots.Panel(res.curves["train_acc"], "accuracy on the facts of drawable subjects", bounds=(0, 1)),
            plots.Panel(res.curves["answer_loss"], "answer loss (nats, all facts)", log=True)],
            title=title or f"facts, {lever} lever")
        ctx.save_figure(fig, "accuracy_curves")
        m = cfg.total_seeds * len(arms)
        ctx.save_arrays("curves", steps=res.eval_steps, arm=np.tile(np.arange(len(arms)), cfg.total_seeds),
                        **{n: np.swapaxes(res.curves[n], 0, 1).reshape(m, -1).T
                           for n in ("test_acc", "train_acc", "answer_loss")})
    return out


def summarize(cfg: SweepConfig, res: sweep.SweepResult, arm_names, baseline_arm: int, chance_X) -> dict:
    """Per-arm numbers from the sweep's [A, S, E] accuracy curves (host only; used by `run_sweep`)."""
    acc = np.asarray(res.curves["test_acc"], np.float64)
    steps_E = res.eval_steps
    early = min(len(steps_E) - 1, max(1, len(steps_E) // 4))   # the row a quarter into training
    cols = {t: res.threshold_columns("test_acc", t, below=False, prefix=f"steps_to_{t:g}", baseline=baseline_arm)
            for t in cfg.thresholds}
    reach = {t: res.steps_to(acc, t, below=False) for t in cfg.thresholds}
    t0 = cfg.thresholds[0]
    per_arm = {}
    for a, name in enumerate(arm_names):
        row = {}
        for t in cfg.thresholds:
            row.update(cols[t][name])
        final = acc[a, :, -1]
        row.update({
            "seeds": cfg.total_seeds,
            "early_step": int(steps_E[early]),
            "early_test_acc_mean": float(acc[a, :, early].mean()),
            "final_test_acc_mean": float(final.mean()),
            "final_test_acc_std": float(final.std(ddof=1)) if final.size > 1 else float("nan"),
            "best_test_acc_mean": float(acc[a].max(axis=1).mean()),
            "mean_test_acc_over_training": float(acc[a].mean()),
            "final_train_acc_mean": float(np.asarray(res.curves["train_acc"])[a, :, -1].mean()),
            "final_answer_loss_mean": float(np.asarray(res.curves["answer_loss"])[a, :, -1].mean()),
            "speedup_vs_baseline": row[f"steps_to_{t0:g}_speedup"],
        })
        per_arm[name] = row
    labels = [{"seed": s, "arm": a, **{k: v for k, v in res.arms[a].levers.items()}}
              for s in range(cfg.total_seeds) for a in range(len(arm_names))]
    per_seed = {f"steps_to_{t:g}": res.per_seed(reach[t], censored=True, unit="steps") for t in cfg.thresholds}
    per_seed.update(early_test_acc=res.per_seed(acc[:, :, early]), final_test_acc=res.per_seed(acc[:, :, -1]),
                    mean_test_acc=res.per_seed(acc.mean(axis=2)))
    return {
        "per_seed": per_seed,
        "per_arm": per_arm, "baseline": arm_names[baseline_arm], "thresholds": list(cfg.thresholds),
        "chance_acc": float(np.mean(chance_X)),
        "steps": [int(s) for s in steps_E],
        "curves": {name: [float(v) for v in acc[a].mean(axis=0)] for a, name in enumerate(arm_names)},
        "members": [dict(lab, final_test_acc=float(acc[lab["arm"], lab["seed"], -1]),
                         **{f"steps_to_{t:g}": float(reach[t][lab["arm"], lab["seed"]]) for t in cfg.thresholds})
                    for lab in labels],
    }


def headline(res: dict, cfg: SweepConfig) -> dict:
    """Flat numbers for the report: per arm censored steps to each threshold (restricted mean,
    seeds reached), early / final accuracy, speed-up vs the baseline."""
    head = {"seeds": cfg.total_seeds, "steps": cfg.steps, "subjects": cfg.task.num_subjects,
            "chance_acc": res["chance_acc"], "baseline_arm": res["baseline"]}
    t0 = cfg.thresholds[0]
    for name, row in res["per_arm"].items():
        for t in cfg.thresholds:
            head[f"{name}/steps_to_{t:g}"] = row[f"steps_to_{t:g}_rmean"]
            head[f"{name}/reached_{t:g}"] = f"{row[f'steps_to_{t:g}_reached']}/{row['seeds']}"
        head[f"{name}/early_acc"] = row["early_test_acc_mean"]
        head[f"{name}/final_acc"] = row["final_test_acc_mean"]
        head[f"{name}/speedup"] = row["speedup_vs_baseline"]
    per = res["per_arm"]
    head["fastest_arm"] = min(per, key=lambda n: (per[n][f"steps_to_{t0:g}_rmean"],
                                                  -per[n]["mean_test_acc_over_training"]))
    return head


def format_arm(name: str, row: dict, threshold: float) -> str:
    p = f"steps_to_{threshold:g}"
    return (f"{name}: restricted mean {row[p + '_rmean']:.0f} steps to acc {threshold:g} "
            f"({row[p + '_reached']}/{row['seeds']} seeds reached), acc {row['early_test_acc_mean']:.2f} at step "
            f"{row['early_step']}, final {row['final_test_acc_mean']:.2f}")


__all__ = ["FULL", "LEVERS", "LOSS_POSITIONS", "MEDIUM_SEEDS", "QUICK", "FactsTask", "ModelConfig", "SweepConfig",
           "format_arm",
           "headline", "run_sweep", "summarize"]




# Shared presets of the facts experiments (synthetic/facts_*.py). FULL is the paper's (App. B.3:
# 6x6x192 GPT-2, Adam lr 5e-5, betas (0.9, 0.95), batch 64, 100 subjects); QUICK is the CPU scale:
# 50 subjects, 2 layers x 2 heads x width 64, lr 1e-3 (20x the paper's: at 5e-5 a tiny model barely
# moves in 500 steps), 500 steps, 4 seeds at each of 2 base seeds.
QUICK = SweepConfig(
    task=FactsTask(num_subjects=50, num_relations=4, answers_per_relation=16, num_noise=32, k_noise=3),
    model=ModelConfig(num_layers=2, num_heads=2, width=64),
    optim=OptimConfig(name="adam", lr=1e-3, b1=0.9, b2=0.95), batch_size=64, steps=500, seeds=4,
    thresholds=(0.2, 0.5), eval_every=25, curriculum_start=10, curriculum_switch=100, chunk_size=250, log_every=25)
# The medium scale (CPU, `lsb run NAME --config medium`): a quick config with more seeds per base seed.
MEDIUM_SEEDS = 16
FULL = SweepConfig()
