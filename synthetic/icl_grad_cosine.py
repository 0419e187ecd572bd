"""ICL regression: gradients of random batches agree more when there are fewer tasks (seed 004 Fig. 8, App. C.1, C.5).

Reproduces: seed 004 App. C.1 / Fig. 8 and the decomposition of App. C.5. Arms train on k tasks
(`data.Subset`, k = 0 means a fresh task per sequence). At every evaluation step each member draws
`pairs` pairs of independent batches from its own training distribution (a PRNG stream training
never uses, so the runs are the same as without the diagnostic) and logs the cosine of the two
batch gradients, cos = <g_1, g_2> / (|g_1| |g_2|), averaged over the pairs, together with its
readout and rest terms <g_1p, g_2p> / (|g_1| |g_2|) (they sum to cos) and the cosine within each
group (`tasks.icl_levers.GradCosine`). Reported: the mean over seeds and evaluations, and the curves.

Expected (paper): the cosine is much lower for high task counts, high for low ones; it is noisy
early in training (-0.5..0.5 within one run); most of the noise sits in the readout term. Quick
differs from the paper: `sweeps.icl.QUICK_ESCAPE` (d = 2, 8 points, sigma^2 = 0.25, 2-layer 32-wide
GPT-2, Adam lr 1e-3, batch 32, 1500 steps, 2 seeds at each of 2 base seeds), 4 batch pairs per
evaluation. Cost: the experiment's `cost` field (`lsb list`); one program; the diagnostic adds 2 x
pairs gradients per member per evaluation; full (`sweeps.icl.FULL`): GPU.

    lsb run icl_grad_cosine --config quick
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lsb_jax.claims import Claim
from lsb_jax.config import with_seeds
from lsb_jax.experiments import Experiment
from lsb_jax.sweeps import icl as icl_sweep
from lsb_jax.sweeps.icl import GradCosine, SweepConfig


@dataclasses.dataclass(frozen=True)
class Config:
    sweep: SweepConfig = SweepConfig()
    ks: tuple[int, ...] = (0, 16, 64, 256, 1024, 8192)     # 0 = infinitely many tasks
    diagnostic: GradCosine = GradCosine(pairs=4)

    def __post_init__(self):
        if not self.ks or self.ks[0] != 0:
            raise ValueError(f"ks must start with 0 (= infinite tasks, the baseline), got {self.ks}")
        icl_sweep.validate_arms([{"k": k} for k in self.ks], self.sweep.pool_size, "ks")


def run(cfg: Config, ctx) -> dict:
    names = ["k=inf" if k == 0 else f"k={k}" for k in cfg.ks]
    res = icl_sweep.run_sweep(cfg.sweep, ctx, "subset", [{"k": k} for k in cfg.ks], names,
                              grad_cosine=cfg.diagnostic, title="task count k, gradient cosine (Fig. 8)")
    head = icl_sweep.headline(res)
    per = res["per_arm"]
    for n in names:
        head[f"grad_cos[{n}]"] = per[n]["grad_cos_mean"]
        head[f"grad_cos_readout_part[{n}]"] = per[n]["grad_cos_part_readout_mean"]
        head[f"grad_cos_rest_part[{n}]"] = per[n]["grad_cos_part_rest_mean"]
    finite = sorted((k, n) for k, n in zip(cfg.ks, names) if k > 0) + [(np.inf, names[0])]
    cos = [per[n]["grad_cos_mean"] for _, n in finite]
    head["grad_cos_spearman_vs_k"] = float(np.corrcoef(np.arange(len(cos)), np.argsort(np.argsort(cos)))[0, 1])
    summary = ("Mean gradient cosine of random batches (readout / rest terms): "
               + "; ".join(f"{n} {per[n]['grad_cos_mean']:.3f} ({per[n]['grad_cos_part_readout_mean']:.3f} / "
                           f"{per[n]['grad_cos_part_rest_mean']:.3f})" for _, n in finite)
               + f". Rank correlation with k: {head['grad_cos_spearman_vs_k']:+.2f} (paper: negative).")
    return {"headline": head, "summary": summary, **res}


def claims(cfg: Config) -> list[Claim]:
    """Every finite k has a higher mean gradient cosine than k = inf (over evaluations, per seed)."""
    return [Claim(f"k={k}_gradients_agree_more", "004", "Fig. 8", "gradients of random batches are more similar "
                  "(higher cosine) with fewer tasks, much lower with many", "grad_cos", f"k={k}", "k=inf",
                  expect="higher") for k in sorted(k for k in cfg.ks if k > 0)]


QUICK = Config(sweep=icl_sweep.QUICK_ESCAPE, ks=(0, 4, 32, 256))

EXPERIMENT = Experiment(
    name="icl_grad_cosine",
    reproduces="seed 004 Fig. 8, App. C.1 / C.5 (ICL regression: gradient cosine of random batches vs task count)",
    description=__doc__.splitlines()[0],
    configs={"quick": QUICK, "medium": with_seeds(QUICK, icl_sweep.MEDIUM_SEEDS), "full": Config(sweep=icl_sweep.FULL)},
    cost={"quick": "~3 min CPU idle",
          "medium": "~8x quick's training (16 seeds per base seed instead of 2)", "full": "GPU (not run)"},
    run=run,
    claims=claims,
    order=47,
)
