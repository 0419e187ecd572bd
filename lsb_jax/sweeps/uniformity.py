"""GD speed vs the uniformity h_min of the training set (seed 003): pool, sets, training, figure.

The machinery behind `synthetic/uniformity_speed.py`. `clustered_sphere_pool` draws N unit
vectors from a clustered distribution (random subsets contain near-duplicates) with tanh-teacher
labels; `kcenter_training_sets` picks training sets of n points by greedy k-center
(`data.selection.kcenter_greedy`) from random candidate sub-pools of size m (m = n: a plain
random subset; m = N: greedy over the whole pool) and measures each set's h_min
(`data.selection.min_pairwise_distance`). `fit_full_batch` trains a ReLU MLP on every set by
full-batch GD, sets x init seeds as ONE vmapped program (each member's data rides in its
hparams). `ntk_min_eigenvalue` is the smallest eigenvalue of the empirical NTK Gram matrix, the
mechanism of the theory (well-separated points give a well-conditioned kernel).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from lsb_jax import analysis, plots
from lsb_jax.claims import Claim, per_seed
from lsb_jax.data import selection
from lsb_jax.models.mlp import init_mlp, mlp_apply, squared_error
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.train import Members, ensemble_init, fit, init_state, make_sampled_step, split_ensemble
from lsb_jax.train.arms import base_seed_tuple, member_keys


def clustered_sphere_pool(data_seed: int, dim: int, pool_size: int, clusters: int, spread: float, label_noise: float):
    """Clustered unit vectors x [N, d] (Gaussian centers + `spread` noise, normalized) and labels y [N]
    (a width-64 tanh teacher normalized to unit variance + `label_noise`). Returns (x, y, rng): the
    numpy generator, seeded by `data_seed`, continues to draw the training sets."""
    rng = np.random.default_rng(data_seed)
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, pool_size)] + spread * rng.standard_normal((pool_size, dim))
    x_NxD = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    teacher = init_mlp(jax.random.PRNGKey(data_seed + 1), (dim, 64, 1))
    f_N = np.asarray(mlp_apply(teacher, x_NxD, "tanh")[:, 0])
    y_N = f_N / f_N.std() + label_noise * rng.standard_normal(pool_size)
    return x_NxD, y_N.astype(np.float32), rng


def kcenter_training_sets(x_NxD: np.ndarray, n: int, subpools: Sequence[int], draws: int, rng: np.random.Generator):
    """`draws` training sets of n points per sub-pool size m: greedy k-center (random start) over m
    random candidates. Returns (indices [S, n], the sets' m [S], h_min [S]), m-major."""
    sets, group = [], []
    for m in subpools:
        for _ in range(draws):
            cand = rng.choice(len(x_NxD), m, replace=False)
            picks = selection.kcenter_greedy(x_NxD[cand], n, start=int(rng.integers(m))).index_K
            sets.append(cand[np.asarray(picks)])
            group.append(m)
    set_SxN = np.stack(sets)
    h_min_S = np.asarray([float(selection.min_pairwise_distance(x_NxD[s])) for s in set_SxN])
    return set_SxN, np.asarray(group), h_min_S


def set_members(base_seeds: Sequence[int], num_seeds: int, blocks: Sequence[tuple]) -> Members:
    """Init seeds x training sets, one block per base seed: blocks[r] = (x [S, n, D], y [S, n], labels)
    are base seed r's sets, trained from its `num_seeds` init seeds (`train.arms.member_keys`: the
    keys of a run of base seed r alone). Members are base-seed-major, then seed-major; each member's
    set {"x", "y"} is its hparams and its label is {"seed": s, **labels[i]}."""
    bases = base_seed_tuple(base_seeds)
    if len(blocks) != len(bases) or len({len(b[0]) for b in blocks}) != 1:
        raise ValueError(f"set_members: need one block of equally many sets per base seed {bases}")
    keys = member_keys(num_seeds, bases).reshape(len(bases), num_seeds, -1)
    xs, ys, ks, labs = [], [], [], []
    for r, (x_SxNxD, y_SxN, labels) in enumerate(blocks):
        for s in range(num_seeds):
            xs.append(x_SxNxD)
            ys.append(y_SxN)
            ks.append(jnp.repeat(keys[r, s][None], len(x_SxNxD), axis=0))
            labs.extend({"seed": s, **lab} for lab in labels)
    data = {"x": jnp.asarray(np.concatenate(xs)), "y": jnp.asarray(np.concatenate(ys))}
    return Members(keys=jnp.concatenate(ks), hparams=data, labels=tuple(labs))


def ntk_min_eigenvalue(params: dict, x_nxD: jax.Array) -> jax.Array:
    """λ_min of the empirical NTK Gram J J^T / n of the ReLU MLP's scalar output on x [n, D]."""
    n = x_nxD.shape[0]
    jac = jax.vmap(jax.grad(lambda p, xi: mlp_apply(p, xi[None], "relu")[0, 0]), in_axes=(None, 0))(params, x_nxD)
    flat_nxP = jnp.concatenate([j.reshape(n, -1) for j in jax.tree.leaves(jac)], axis=1)
    return jnp.linalg.eigvalsh(flat_nxP @ flat_nxP.T / n)[0]


def fit_full_batch(ctx, members: Members, sizes: Sequence[int], *, lr: float, steps: int, chunk_size: int,
                   log_every: int, desc: str):
    """Full-batch GD (SGD at lr on the member's whole set) of a ReLU MLP `sizes` per member, one
    vmapped `train.fit`. Returns (FitResult, the NTK λ_min of every member at initialization [M])."""
    opt = make_optimizer(OptimConfig(name="sgd", lr=lr), steps)

    def member_init(key, hp):
        return init_state(lambda k: init_mlp(k, sizes), opt.tx, key)

    def member_step(state, hp):
        return make_sampled_step(squared_error("relu"), opt, lambda key, step: hp)(state)  # full batch: plain GD

    state0 = ensemble_init(member_init, members)
    ntk_M = np.asarray(jax.jit(jax.vmap(ntk_min_eigenvalue))(state0.params, members.hparams["x"]))
    step, state, hparams = split_ensemble(member_step, members, state0)
    result = fit(step, state, steps, ctx=ctx, step_args=(hparams,), chunk_size=chunk_size, log_every=log_every,
                 desc=desc)
    return result, ntk_M


@dataclasses.dataclass(frozen=True)
class SpeedComparison:
    """Per member (seed-major over the sets): its sub-pool size, h_min, NTK λ_min at init, train
    loss curve, and steps to the threshold (inf: never reached)."""

    subpools: tuple[int, ...]
    train_size: int
    pool_size: int
    width: int
    steps: int
    threshold: float
    group_M: np.ndarray
    h_min_M: np.ndarray
    ntk_M: np.ndarray
    steps_T: np.ndarray
    loss_TxM: np.ndarray

    @property
    def reach_M(self) -> np.ndarray:
        reach_M = analysis.steps_to_threshold(self.steps_T, self.loss_TxM, self.threshold)
        return np.where(np.isnan(reach_M), np.inf, reach_M)  # never reached: ranks last

    def tag(self, m: int) -> str:
        return RANDOM if m == self.train_size else (GREEDY_POOL if m == self.pool_size else f"greedy of {m}")


def spearman(c: SpeedComparison) -> dict:
    """Spearman correlations of h_min with the steps to threshold, the log final loss and NTK λ_min."""
    return {"steps": float(spearmanr(c.h_min_M, c.reach_M).statistic),
            "final": float(spearmanr(c.h_min_M, np.log(c.loss_TxM[-1])).statistic),
            "ntk": float(spearmanr(c.h_min_M, c.ntk_M).statistic)}


def plot_speed(c: SpeedComparison, rho: dict):
    """Train loss curves per sub-pool size (mean ± std), steps to threshold vs h_min, NTK λ_min vs h_min."""
    fig, (ax0, ax1, ax2) = plots.figure(3, width=4.6, height=3.6)
    for m in c.subpools:
        sel = c.group_M == m
        plots.band(ax0, c.steps_T, c.loss_TxM[:, sel], label=f"{c.tag(m)}: h_min {np.mean(c.h_min_M[sel]):.2f}",
                   log=True)
    ax0.axhline(c.threshold, color="k", ls=":", lw=1)
    ax0.set_xlabel("GD step")
    ax0.set_ylabel("train MSE")
    ax0.legend(fontsize=7)
    ax0.set_title(f"n={c.train_size} points, ReLU MLP width {c.width}", fontsize=9)
    reach_M = c.reach_M
    shown = np.where(np.isfinite(reach_M), reach_M, c.steps)
    for m in c.subpools:
        sel = c.group_M == m
        ax1.scatter(c.h_min_M[sel], shown[sel], s=12, label=f"m={m}")
        ax2.scatter(c.h_min_M[sel], c.ntk_M[sel], s=12, label=f"m={m}")
    ax1.set_xlabel("h_min of the training set")
    ax1.set_ylabel(f"steps to train MSE <= {c.threshold} (cap {c.steps})")
    ax1.set_title(f"Spearman rho = {rho['steps']:.2f}", fontsize=9)
    ax1.legend(fontsize=7)
    plots.log_axis(ax2, "x")
    plots.log_axis(ax2)
    ax2.set_xlabel("h_min")
    ax2.set_ylabel("λ_min of the NTK Gram at init")
    ax2.set_title(f"Spearman rho = {rho['ntk']:.2f}", fontsize=9)
    return fig


def speed_results(c: SpeedComparison, rho: dict) -> dict:
    """Per sub-pool size: mean h_min, median steps to threshold, geometric-mean final loss, reached
    count; the headline compares the first (random) and last (greedy) sizes; and the summary."""
    reach_M, final_M = c.reach_M, c.loss_TxM[-1]
    per_group = {}
    for m in c.subpools:
        sel = c.group_M == m
        per_group[m] = {"h_min": float(np.mean(c.h_min_M[sel])), "steps_median": float(np.median(reach_M[sel])),
                        "final_loss_geomean": float(np.exp(np.mean(np.log(final_M[sel])))),
                        "reached": int(np.isfinite(reach_M[sel]).sum()), "members": int(sel.sum())}
    rand, greedy = per_group[c.subpools[0]], per_group[c.subpools[-1]]
    members = len(c.h_min_M)
    head = {"spearman_hmin_vs_steps": rho["steps"], "spearman_hmin_vs_final_log_loss": rho["final"],
            "spearman_hmin_vs_ntk_min": rho["ntk"], "h_min_random": rand["h_min"], "h_min_greedy": greedy["h_min"],
            "steps_median_random": rand["steps_median"], "steps_median_greedy": greedy["steps_median"],
            "speedup_greedy_vs_random": rand["steps_median"] / greedy["steps_median"],
            "final_loss_random": rand["final_loss_geomean"], "final_loss_greedy": greedy["final_loss_geomean"],
            "members": members}
    summary = (f"Greedy k-center training sets (h_min {greedy['h_min']:.2f}) reach train MSE {c.threshold} in "
               f"{greedy['steps_median']:.0f} GD steps (median) vs {rand['steps_median']:.0f} for random sets "
               f"(h_min {rand['h_min']:.2f}); across {members} runs Spearman(h_min, steps) = {rho['steps']:.2f}, "
               f"Spearman(h_min, NTK lambda_min at init) = {rho['ntk']:.2f}.")
    return {"headline": head, "summary": summary, "groups": {str(m): v for m, v in per_group.items()}}


RANDOM, GREEDY_POOL = "random", "greedy, whole pool"   # SpeedComparison.tag of m = n and m = N


def speed_claims(subpools: Sequence[int], train_size: int, pool_size: int) -> list[Claim]:
    """Seed 003: a larger h_min speeds up GD (greedy k-center over the whole pool vs a random set of the
    same size: censored steps to the threshold), through a better conditioned kernel (the NTK's smallest
    eigenvalue at init). Declared when the config runs both ends (m = n and m = N)."""
    if train_size not in subpools or pool_size not in subpools:
        return []
    return [Claim("uniform_set_trains_faster", "003", "abstract (GD speed vs h_min)",
                  "a more uniform training set (larger h_min: greedy k-center) trains faster by GD than a random one",
                  "steps_to_threshold", GREEDY_POOL, RANDOM, expect="lower"),
            Claim("uniform_set_better_conditioned", "003", "abstract (convergence theory)",
                  "its kernel is better conditioned: larger smallest NTK eigenvalue at initialization",
                  "ntk_min_eigenvalue", GREEDY_POOL, RANDOM, expect="higher")]


def speed_tables(c: SpeedComparison, base_seeds: Sequence[int], num_seeds: int) -> dict:
    """The per-seed tables of `speed_claims`, one arm per sub-pool size (its tag). The replicate is
    a training set (draw d of each arm, paired by d), its value the mean over the `num_seeds` init
    seeds trained on it: the seeds of one set share its data, so they are not independent samples
    (counting them as such narrows the interval). Steps are censored at the horizon before the mean
    (a restricted mean time per set). Members are base-seed-major, then init-seed-major, then sets."""
    reach_M = analysis.steps_to_threshold(c.steps_T, c.loss_TxM, c.threshold)    # NaN: never reached
    restricted_M = np.where(np.isnan(reach_M), float(c.steps), reach_M)          # min(T, tau)
    names = [c.tag(m) for m in c.subpools]
    base_tuple = tuple(base_seeds)
    r = len(base_tuple)

    def per_set(v_M):   # [arm, base seed x draw]: the mean over the init seeds of each set
        v_AxM = np.stack([np.asarray(v_M, np.float64)[c.group_M == m] for m in c.subpools])
        return v_AxM.reshape(len(names), r, num_seeds, -1).mean(axis=2).reshape(len(names), -1)

    return {"steps_to_threshold": per_seed(per_set(restricted_M), names, base_tuple, horizon=float(c.steps),
                                           unit="steps (mean over a set's init seeds)"),
            "ntk_min_eigenvalue": per_seed(per_set(c.ntk_M), names, base_tuple)}
