"""MLSA under GD and SAM: stage-wise loss drops, and the reduced ODEs against the simulated model.

Reproduces: arXiv 2602.00576 (seeds 000/001), the saddle-to-saddle dynamics of multi-head
linear self-attention with rank-one key/query per head (each stage: one head learns one
eigenvector of Sigma, in decreasing-eigenvalue order) and the reduced per-feature ODEs.

Part A (from a small random initialization, figures `stagewise_loss`, `learning_time_vs_eigenvalue`,
seeds vmapped): population-loss curves with stage-wise drops for GD and SAM (global
normalization), and which eigen-direction each stage learns. Part B (on the ansatz, slightly off
it, with a small step): the simulated m_i(t) against the reduced ODEs (GD: adaptive Tsit5; SAM:
fixed-step Heun, its field is discontinuous at the targets) and the closed-form learning times;
errors reported.

Expected: 4 drops in decreasing-eigenvalue order in every seed; ODE learning times within a
few percent of the simulation (the ODE is the lr -> 0 limit). Claims (decided per base seed, see
the report): the fraction of seeds learning in decreasing-eigenvalue order is above chance (1/D!,
a random order), for GD and for SAM. Cost: the experiment's `cost` field (`lsb list`).

    lsb run mlsa_stagewise --config quick --set rho=0.06 --set model.init_scale=0.1
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from lsb_jax import claims as claims_lib
from lsb_jax.claims import Claim
from lsb_jax.experiments import Experiment
from lsb_jax.theory import figures, learning_times, mlsa, odes, sweeps
from lsb_jax.theory.setup import ModelConfig
from lsb_jax.train.arms import check_base_seeds


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    rho: float = 0.04                    # SAM radius for part A and B
    seeds: int = 8                       # per base seed
    base_seeds: tuple[int, ...] = (0, 1)  # replicates: each claim is decided at every base seed
    ode_lr: float = 0.005                # part B: small step (ODE time = lr * steps; SAM ODE step dt = ode_lr)
    ode_init_noise: float = 0.01         # part B: relative off-ansatz noise
    ode_record_every: int = 25

    def __post_init__(self):
        if self.rho < 0 or self.seeds < 1 or self.ode_lr <= 0 or self.ode_record_every < 1:
            raise ValueError("rho >= 0, seeds >= 1, ode_lr > 0 and ode_record_every >= 1 are required")
        check_base_seeds(self.base_seeds)


def sam_name(cfg: Config) -> str:
    return f"SAM rho={cfg.rho}"


def claims(cfg: Config) -> list[Claim]:
    """Seed 001 (= 000): saddle-to-saddle, one eigenvector per stage in decreasing-eigenvalue order, under GD
    and SAM. Against chance: a random order of the D features is the decreasing one with rate 1/D!."""
    chance = 1.0 / math.factorial(cfg.model.dim)
    return [Claim(f"stagewise_order_{key}", "001", "Sec. 4 (saddle-to-saddle)",
                  f"{label} learns the eigenvectors of Sigma one per stage, in decreasing-eigenvalue order",
                  "in_order", arm, expect="higher", null=chance, test="proportion")
            for key, label, arm in (("gd", "GD", "GD"), ("sam", "SAM", sam_name(cfg)))]


def run(cfg: Config, ctx) -> dict:
    m = cfg.model
    spec = m.spectrum()
    target_D = np.asarray(mlsa.optimal_features(spec), np.float64)
    null = float(mlsa.null_loss(spec))
    sam = sam_name(cfg)
    # A: random small init, GD vs SAM (global normalization), seeds vmapped
    arms = {name: sweeps.sweep([spec], rhos=(rho,), seeds=cfg.seeds, method="gd" if rho == 0 else "sam",
                               seed=cfg.base_seeds, **m.sweep_args())
            for name, rho in (("GD", 0.0), (sam, cfg.rho))}
    # B: on the ansatz (slightly off it), small step: simulation vs reduced ODE vs closed form
    p0 = mlsa.init_params(jax.random.PRNGKey(cfg.base_seeds[0]), m.heads, m.dim,
                          mlsa.Init("ansatz", m.init_scale, cfg.ode_init_noise))
    ode_steps = int(round(m.steps * m.lr / cfg.ode_lr / cfg.ode_record_every)) * cfg.ode_record_every
    checks = {kind: odes.check_simulation(
        kind, spec, p0, m.init_scale, lr=cfg.ode_lr, rho=rho, num_steps=ode_steps, record_every=cfg.ode_record_every,
        fraction=m.fraction, closed_form=None if kind == "sam_global" else odes.learning_time(
            m.eigenvalues, m.init_scale, m.fraction, context=m.context, noise=m.noise, rho=rho))
        for kind, rho in (("gd", 0.0), ("sam_per_head", cfg.rho), ("sam_global", cfg.rho))}
    rows = {kind: c.row for kind, c in checks.items()}

    ctx.save_figure(figures.stagewise_loss(arms, target_D, null, m.eigenvalues), "stagewise_loss")
    ctx.save_figure(figures.ode_check(checks, target_D), "ode_check")
    ctx.save_figure(figures.learning_time_vs_eigenvalue(
        m.eigenvalues, m.init_scale, m.fraction, cfg.rho, m.lr, arms,
        extra_times=rows["sam_global"]["times_sim"] * cfg.ode_lr / m.lr, extra_label="SAM global, ansatz (sim)",
        context=m.context, noise=m.noise),
        "learning_time_vs_eigenvalue")

    order_ok = {k: learning_times.in_order(g.times[0, 0]) for k, g in arms.items()}
    final = {k: float(np.mean(g.loss[0, 0, :, -1]) / null) for k, g in arms.items()}
    headline = {"stage_order_ok_GD": float(order_ok["GD"].mean()), "stage_order_ok_SAM": float(order_ok[sam].mean()),
                "final_loss_rel_GD": final["GD"], "final_loss_rel_SAM": final[sam],
                **{f"ode_time_err_{k}": r["time_rel_err_max"] for k, r in rows.items()},
                **{f"closed_form_err_{k}": rows[k]["closed_rel_err_max"] for k in ("gd", "sam_per_head")},
                "gd_time_vs_eigenvalue_loglog_slope": odes.gd_time_exponent(m.eigenvalues, m.init_scale, m.fraction,
                                                                            context=m.context, noise=m.noise)}
    in_order = claims_lib.per_seed(np.stack([order_ok["GD"], order_ok[sam]]).astype(float), ["GD", sam],
                                   cfg.base_seeds)
    return {"headline": headline, "summary": summary(cfg, headline), "ode_checks": rows,
            "per_seed": {"in_order": in_order},
            "learning_times": {k: g.times[0, 0] for k, g in arms.items()}}


def summary(cfg: Config, head: dict) -> str:
    return (f"From a small random init, {head['stage_order_ok_GD']:.0%} of GD seeds and "
            f"{head['stage_order_ok_SAM']:.0%} of SAM seeds learn the {cfg.model.dim} eigen-directions in "
            "decreasing-eigenvalue order, one loss drop each. "
            f"On the ansatz (lr {cfg.ode_lr}) the reduced ODEs "
            f"give the simulated learning times within {head['ode_time_err_gd']:.1%} (GD), "
            f"{head['ode_time_err_sam_per_head']:.1%} (SAM per-head) and "
            f"{head['ode_time_err_sam_global']:.1%} (SAM global); the closed-form times within "
            f"{head['closed_form_err_gd']:.1%} (GD) and "
            f"{head['closed_form_err_sam_per_head']:.1%} (SAM per-head).")


EXPERIMENT = Experiment(
    name="mlsa_stagewise",
    reproduces="arXiv 2602.00576: saddle-to-saddle loss drops under GD vs SAM; reduced ODEs (seeds 000/001)",
    description=__doc__.splitlines()[0],
    configs={
        "quick": Config(model=ModelConfig(steps=6000)),
        "full": Config(model=ModelConfig(eigenvalues=(4.0, 2.0, 1.0, 0.5, 0.25, 0.125), heads=6, steps=200_000,
                                         record_every=50), seeds=16, ode_lr=0.002, ode_record_every=50),
    },
    cost={"quick": "~10 s CPU", "full": "~25 s CPU"},
    run=run,
    claims=claims,
    order=10,
)
