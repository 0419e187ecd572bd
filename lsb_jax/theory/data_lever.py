"""The data lever in the MLSA model: reshaping the data instead of the optimizer (arXiv 2602.00576).

(a) `distribution_lever`: GD on task priors Omega_gamma (omega_i proportional to lam_i^-gamma,
`mlsa.reweighted_omega`) against SAM over rho on the original prior, both as `sweeps.sweep`
grids; gamma*(rho) is the gamma where GD's mean entropy reaches SAM's (`learning_times.
first_crossing`); final losses are measured on the original distribution. Entropies are of the
seeds that learn every feature (`learning_times.complete_entropy`: one over fewer features is not
comparable); a seed that misses one is NaN in the per-seed tables, so its claims are inconclusive.

(b) `pool_pipeline`: the paper's pipeline on a finite pool of sequences with the LLM path's
tracking code: a GD proxy's per-example losses at K checkpoints (`TrajectoryStore` +
`pool_scorer`), the selections of `tracking.selection_counts` (uniform, hard / easy cluster,
random) as loss weights of full-batch GD (duplication), and SAM on the original pool; every
arm x seed in one vmapped program.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.theory import dynamics, learning_times, mlsa, sweeps
from lsb_jax.theory.setup import ModelConfig
from lsb_jax.tracking import TrajectoryStore, evenly_spaced_steps, pool_scorer, selection_counts
from lsb_jax.train.arms import base_seed_tuple
from lsb_jax.train.guard import TrainingDiverged, trajectory_divergence


class DistributionLever(NamedTuple):
    gd: sweeps.Grid            # [G, 1, n]: GD on Omega_gamma per gamma
    sam: sweeps.Grid           # [1, P, n]: SAM (global) per rho on Omega = I
    seed_entropy_gd: np.ndarray   # [G, n] per seed (`learning_times.complete_entropy`: NaN if one is unlearned)
    seed_entropy_sam: np.ndarray  # [P, n]
    gamma_star: list           # [P] gamma matching SAM's entropy at each rho (NaN: out of range)
    test_gd: np.ndarray        # [G, n] final population loss on Omega = I / loss of 0
    test_sam: np.ndarray       # [P, n]

    @property
    def entropy_gd(self) -> np.ndarray:
        """[G] mean entropy over the seeds that learn every feature."""
        return np.nanmean(self.seed_entropy_gd, -1)

    @property
    def entropy_sam(self) -> np.ndarray:
        """[P] likewise for SAM per rho."""
        return np.nanmean(self.seed_entropy_sam, -1)


def distribution_lever(model: ModelConfig, gammas: Sequence[float], rhos: Sequence[float], *, seeds: int,
                       seed: int | Sequence[int] = 0) -> DistributionLever:
    """Part (a) of the module doc, every member from the same per-seed initializations (several base
    seeds: R * seeds of them, `sweeps.sweep`)."""
    common = dict(seeds=seeds, seed=seed, **model.sweep_args())
    specs = [model.spectrum(omega=mlsa.reweighted_omega(np.asarray(model.eigenvalues), g)) for g in gammas]
    gd = sweeps.sweep(specs, rhos=(0.0,), method="gd", **common)
    sam = sweeps.sweep([model.spectrum()], rhos=rhos, method="sam", **common)
    base = model.spectrum()
    test_loss = jax.vmap(lambda p: mlsa.population_loss(p, base))
    flat = lambda tree: jax.tree.map(lambda x: x.reshape((-1,) + x.shape[3:]), tree)
    gd_test = np.asarray(test_loss(flat(gd.params))).reshape(len(gammas), -1) / float(mlsa.null_loss(base))
    sam_test = np.asarray(test_loss(flat(sam.params))).reshape(len(rhos), -1) / float(mlsa.null_loss(base))
    seeds_gd = learning_times.complete_entropy(gd.times[:, 0])         # seeds that learn every feature
    seeds_sam = learning_times.complete_entropy(sam.times[0])
    h_gd = np.nanmean(seeds_gd, -1)
    gamma_star = [learning_times.first_crossing(gammas, h_gd, h) for h in np.nanmean(seeds_sam, -1)]
    return DistributionLever(gd, sam, seeds_gd, seeds_sam, gamma_star, gd_test, sam_test)


def distribution_headline(lever: DistributionLever, gammas: Sequence[float], rhos: Sequence[float]) -> dict:
    """Entropy per gamma and per rho, gamma*(rho) for rho > 0, and the mean test losses of plain
    GD, GD at the largest gamma and SAM at the largest rho."""
    headline = {f"entropy_gd_gamma{g:g}": float(h) for g, h in zip(gammas, lever.entropy_gd)}
    headline.update({f"entropy_sam_rho{r:g}": float(h) for r, h in zip(rhos, lever.entropy_sam)})
    headline.update({f"gamma_matching_rho{r:g}": gs for r, gs in zip(rhos[1:], lever.gamma_star[1:])})
    headline.update({"test_loss_rel_gd": float(np.nanmean(lever.test_gd[0])),
                     "test_loss_rel_gd_max_gamma": float(np.nanmean(lever.test_gd[-1])),
                     "test_loss_rel_sam_max_rho": float(np.nanmean(lever.test_sam[-1]))})
    return headline


class PoolLever(NamedTuple):
    names: list               # [A] arms: GD, the upsampled selections, SAM
    times: np.ndarray         # [A, R * n, D] learning times (steps; NaN: not learned or diverged)
    entropy: np.ndarray       # [A, R * n] (NaN where a feature is not learned: `complete_entropy`)
    test: np.ndarray          # [A, R * n] final population loss (context of the pool) / loss of 0
    hard: np.ndarray          # [P] bool: the proxy's hard cluster (the first base seed's pool)
    loading: np.ndarray       # [D] mean w_i^2 over the hard cluster / over the pool (mean over base seeds)
    store: TrajectoryStore    # the proxy's per-example losses [P, K] at its steps (first base seed)
    diverged: int             # diverged arm x seed members
    hard_fraction: np.ndarray  # [R] the hard cluster's share of each base seed's pool


def proxy_losses(pool: dict, params, *, lr: float, num_steps: int, points: int, path) -> TrajectoryStore:
    """Full-batch GD on the pool from `params`; every example's loss at `points` evenly spaced
    steps, written to a `TrajectoryStore` at `path` (saved once, at the end). Raises
    `TrainingDiverged` (before anything is saved) as soon as the mean loss diverges."""
    steps_K = evenly_spaced_steps(num_steps, points)
    store = TrajectoryStore(path, len(pool["weight"]), steps_K)
    score = jax.jit(pool_scorer(mlsa.example_loss, 512))
    done, mean_K = 0, []
    for s in steps_K:
        if s > done:
            seg = dynamics.simulator(dynamics.pool_loss, num_steps=s - done, record_every=s - done, method="gd")
            params = seg(params, pool, lr, 0.0).params
            done = s
        losses = np.asarray(score(params, pool))
        mean_K.append(float(losses.mean()))
        if trajectory_divergence(np.asarray(mean_K)[None])[0]:   # never cluster a diverged proxy's losses
            raise TrainingDiverged(f"pool proxy: mean loss diverged at step {s} ({mean_K[-1]:.4g}, "
                                   f"started at {mean_K[0]:.4g}); lower model.lr")
        store.write(s, losses, save=False)
    store.save()
    return store


def pool_pipeline(model: ModelConfig, *, pool_size: int, context: int, pool_seed: int, seeds: int,
                  seed: int | Sequence[int], proxy_fraction: float, points: int, factor: int, cluster_on: str,
                  rho: float, path) -> PoolLever:
    """Part (b) of the module doc, once per base seed b (`seed`): its own pool (sequences keyed by
    fold_in(PRNGKey(pool_seed), b)), a proxy from its first seed's init (`proxy_fraction` of the
    steps), its selections (k-means and the random draw seeded by b), then GD per selection and SAM
    (radius `rho`) on its uniform pool for each of its `seeds` inits; learning times against each
    arm's own weighted-pool optimum (`mlsa.pool_optimal_features`). A base seed's block is what a
    run of that base seed alone gives, so base seeds replicate the whole pipeline; within one, the
    seeds' inits are the paired replicates. Every arm x base seed x seed runs in one vmapped program
    per method. The first base seed's proxy losses are saved at `path`, the others' beside it
    (`<stem>.base<b>.npz`)."""
    m, bases = model, base_seed_tuple(seed)
    spec_n = mlsa.spectrum(m.eigenvalues, context=context, noise=m.noise)
    params0 = sweeps.init_members(seeds, m.heads, m.dim, m.init_spec(), bases)       # [R * n], base-major
    num_proxy = max(points, int(m.steps * proxy_fraction))
    pools, weights, hards, loadings, stores = [], [], [], [], []
    for r, b in enumerate(bases):
        seqs = mlsa.sample_sequences(jax.random.fold_in(jax.random.PRNGKey(pool_seed), b), spec_n, pool_size,
                                     context)
        pool = {"c": seqs["c"], "xq": seqs["xq"], "yq": seqs["yq"], "weight": jnp.ones(pool_size)}
        where = Path(path) if r == 0 else Path(path).with_name(f"{Path(path).stem}.base{b}{Path(path).suffix}")
        store = proxy_losses(pool, jax.tree.map(lambda x: x[r * seeds], params0), lr=m.lr, num_steps=num_proxy,
                             points=points, path=where)
        select = {s: selection_counts(store.losses, s, factor=factor, features=cluster_on, seed=b)
                  for s in ("uniform", "hard", "easy", "random")}       # the LLM pipeline's selections
        w2 = np.asarray(seqs["w"], np.float64) ** 2
        hard = select["hard"][1]
        pools.append(pool)
        weights.append([select["uniform"][0]] + [select[s][0] for s in ("hard", "easy", "random")])
        hards.append(hard)
        loadings.append(w2[hard].mean(0) / w2.mean(0))
        stores.append(store)
    names = ["GD"] + [f"GD, {s} x{factor}" for s in ("hard", "easy", "random")] + [f"SAM rho={rho}"]
    weights_RxAxP = np.asarray(weights, np.float32)
    pool_of = {k: jnp.stack([p[k] for p in pools]) for k in ("c", "xq", "yq")}       # [R, P, ...]

    def train(method, weights_RxAxP, rho):      # every arm x base seed x seed: leaves [A, R * n, ...]
        run = dynamics.simulator(dynamics.pool_loss, num_steps=m.steps, record_every=m.record_every, method=method)
        a, r, n = weights_RxAxP.shape[1], len(bases), seeds
        ia, ir, i_s = (x.ravel() for x in np.meshgrid(np.arange(a), np.arange(r), np.arange(n), indexing="ij"))
        data = {k: v[ir] for k, v in pool_of.items()} | {"weight": jnp.asarray(weights_RxAxP[ir, ia])}
        out = sweeps.run_members(run, jax.tree.map(lambda x: x[ir * n + i_s], params0), data, m.lr,
                                 np.full(ia.size, rho), data_axes=0)
        return jax.tree.map(lambda x: x.reshape((a, r * n) + x.shape[1:]), out)

    out_gd = train("gd", weights_RxAxP, 0.0)
    out_sam = train("sam", np.ones((len(bases), 1, pool_size), np.float32), rho)
    feats = np.concatenate([np.asarray(out_gd.features), np.asarray(out_sam.features)])          # [A, R n, T, D]
    finals = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), out_gd.params, out_sam.params)
    targets = np.stack([[mlsa.pool_optimal_features(dict(pool, weight=w)) for w in list(ws) + [np.ones(pool_size)]]
                        for pool, ws in zip(pools, weights)])                            # [R, A, D]
    targets_AxMxD = np.repeat(targets.transpose(1, 0, 2), seeds, axis=1)                # members base-major
    times = learning_times.crossing_times(np.asarray(out_gd.steps[0, 0]), feats, targets_AxMxD, m.fraction)
    diverged = trajectory_divergence(np.concatenate([np.asarray(out_gd.loss), np.asarray(out_sam.loss)]))  # [A, M]
    times[diverged] = np.nan
    test = jax.vmap(jax.vmap(lambda p: mlsa.population_loss(p, spec_n)))(finals)
    test = np.asarray(test) / float(mlsa.null_loss(spec_n))
    return PoolLever(names, times, learning_times.complete_entropy(times), test, hards[0], np.mean(loadings, 0),
                     stores[0], int(diverged.sum()), np.asarray([h.mean() for h in hards]))


def pool_headline(pool: PoolLever) -> dict:
    """Mean entropy and test loss per arm, the hard cluster's share of the pool (mean over base seeds)."""
    headline = {f"pool_entropy[{n}]": float(np.nanmean(e)) for n, e in zip(pool.names, pool.entropy)}
    headline.update({f"pool_test_loss_rel[{n}]": float(np.nanmean(t)) for n, t in zip(pool.names, pool.test)})
    headline["pool_hard_fraction"] = float(np.mean(pool.hard_fraction))
    return headline
