"""Grids of MLSA runs (spectra x rho x seeds) in one vmapped program, and their learning times.

    grid = sweep(specs, rhos=(0.0, 0.02, 0.04), seeds=4, heads=4, init=Init("random", 0.05),
                 lr=0.02, num_steps=20_000, record_every=20, method="sam", norm="global")
    grid.times       # [S, P, n, D] learning times (steps; NaN = not learned)
    grid.entropy     # [S, P, n]

Every member of the grid shares one compiled program (`run_members`: `jax.vmap` of
`dynamics.simulator`), so a 64-member grid costs about one long run on a CPU; with several
devices (or the CPU split into one per core, `lsb --cpu-devices`) the members are split over them.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax.theory import dynamics, learning_times, mlsa
from lsb_jax.train.arms import member_keys
from lsb_jax.train.ensemble import is_axis, member_mesh, member_vmap, padded_index
from lsb_jax.train.guard import trajectory_divergence


class Grid(NamedTuple):
    steps: np.ndarray      # [R+1]
    features: np.ndarray   # [S, P, n, R+1, D]  m_i(t)
    loss: np.ndarray       # [S, P, n, R+1]
    targets: np.ndarray    # [S, D] m*_i
    times: np.ndarray      # [S, P, n, D]
    entropy: np.ndarray    # [S, P, n]
    diverged: np.ndarray   # [S, P, n] bool (a recorded loss diverged: `train.guard.trajectory_divergence`)
    params: dict           # final parameters, leaves [S, P, n, ...]


def stack(specs: Sequence[mlsa.Spectrum]) -> mlsa.Spectrum:
    """A list of same-D spectra -> one Spectrum with a leading [S] axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *specs)


def init_members(seeds: int, heads: int, dim: int, init: mlsa.Init, seed: int | Sequence[int] = 0) -> dict:
    """[R * seeds] initial parameter sets, shared across the grid: base seed r's seed i uses PRNGKey(r)
    folded with i (`train.arms.member_keys`), the one it has in a run of base seed r alone."""
    return jax.vmap(lambda k: mlsa.init_params(k, heads, dim, init))(member_keys(seeds, seed))


def run_members(run, params_M: dict, data, lr, rho_M, data_axes=0, devices=None) -> dynamics.Trajectory:
    """`run` (a `dynamics.simulator`) for M members at once: params_M and rho_M have a leading
    member axis, `data` too where `data_axes` (0 / None, or a pytree prefix of them) says 0.

    One compiled program (`dynamics.grid_compiler_options`); its members are split over `devices`
    (default: the local devices; `train.member_mesh`), padded to a multiple of them with copies of
    the last member (dropped from the result), each device running its own block (`train.member_vmap`)."""
    m = int(jnp.shape(rho_M)[0])
    mesh = member_mesh(devices)
    idx = padded_index(m, 1 if mesh is None else mesh.size)
    take = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[idx], tree)      # noqa: E731
    data = jax.tree.map(lambda a, x: take(x) if a == 0 else x, data_axes, data, is_leaf=is_axis)
    step = jax.jit(member_vmap(run, (0, data_axes, None, 0), mesh), compiler_options=dynamics.grid_compiler_options())
    out = step(take(params_M), data, jnp.float32(lr), take(jnp.asarray(rho_M, jnp.float32)))
    return jax.tree.map(lambda x: x[:m], out)


def sweep(specs: Sequence[mlsa.Spectrum], *, rhos: Sequence[float], seeds: int, heads: int, init: mlsa.Init,
          lr: float, num_steps: int, record_every: int, method: str = "sam", norm: str = "global",
          fraction: float = 0.5, seed: int | Sequence[int] = 0) -> Grid:
    """Runs every (spectrum, rho, seed) from the same per-seed initializations; see the module doc.
    Several base seeds give R * seeds members along the seed axis (base seed r's at r*seeds:(r+1)*seeds)."""
    stacked = stack(specs)
    dim = stacked.lam.shape[-1]
    params0 = init_members(seeds, heads, dim, init, seed)
    run = dynamics.simulator(mlsa.population_loss, num_steps=num_steps, record_every=record_every,
                             method=method, norm=norm)
    shape = (len(specs), len(rhos), jax.tree.leaves(params0)[0].shape[0])
    ip, ir, i_s = (a.ravel() for a in np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"))  # spec, rho, seed
    out = run_members(run, jax.tree.map(lambda x: x[i_s], params0), jax.tree.map(lambda x: x[ip], stacked), lr,
                      np.asarray(rhos, np.float32)[ir])
    out = jax.tree.map(lambda x: x.reshape(shape + x.shape[1:]), out)                        # [S, P, n, ...]
    feats = np.asarray(out.features, np.float64)
    loss = np.asarray(out.loss, np.float64)
    targets = np.asarray(jax.vmap(mlsa.optimal_features)(stacked), np.float64)
    times = learning_times.crossing_times(np.asarray(out.steps[0, 0, 0]), feats, targets[:, None, None, :], fraction)
    diverged = trajectory_divergence(loss)   # NaN/inf, or a loss 1000x its start (train.DivergenceGuard)
    times[diverged] = np.nan
    return Grid(np.asarray(out.steps[0, 0, 0]), feats, loss, targets, times, learning_times.entropy(times), diverged,
                out.params)


def entropy_gain_rows(grid: Grid, decays: Sequence[float], rhos: Sequence[float], **labels) -> list[dict]:
    """One row per (spectrum, rho) of a grid whose first rho is 0 (the GD reference).

    Per row: the mean entropy over seeds, SAM's entropy gain over the reference and the fraction
    of seeds where it is positive (both over the seeds where every feature is learned at this
    rho and at 0; NaN if none), the fraction of seeds learning every feature and the diverged
    count. `decays` label the spectra, `labels` (e.g. init, norm) are copied into every row.
    """
    all_learned = np.isfinite(grid.times).all(-1)                         # [S, P, n]
    rows = []
    for s, decay in enumerate(decays):
        for p, rho in enumerate(rhos):
            both = all_learned[s, p] & all_learned[s, 0]
            gain = grid.entropy[s, p] - grid.entropy[s, 0]
            rows.append({**labels, "decay": decay, "rho": rho,
                         "entropy_mean": (float(np.nanmean(grid.entropy[s, p]))
                                          if np.isfinite(grid.entropy[s, p]).any() else float("nan")),
                         "entropy_gain_mean": float(np.mean(gain[both])) if both.any() else float("nan"),
                         "sam_higher_frac": float(np.mean(gain[both] > 0)) if both.any() else float("nan"),
                         "all_learned_frac": float(all_learned[s, p].mean()),
                         "diverged": int(grid.diverged[s, p].sum())})
    return rows


def entropy_headline(rows: Sequence[dict], norms: Sequence[str], rho_max: float) -> dict:
    """Theorem 4.4 over `entropy_gain_rows` labelled by init and norm.

    theorem_holds_frac_<init>_<norm>: the mean over radii 0 < rho < rho_max of the fraction of
    seeds where SAM's entropy exceeds GD's (None if that grid is absent);
    all_learned_frac_beyond_rho_max_<norm>: the mean fraction of seeds learning every feature at
    rho >= rho_max; entropy_gain_<init>_<norm>_rho<r>: the mean gain at the largest r < rho_max.
    """
    pairs = list(dict.fromkeys((r["init"], r["norm"]) for r in rows))

    def theorem(init, norm):
        if (init, norm) not in pairs:
            return None
        sel = [r for r in rows if r["init"] == init and r["norm"] == norm and 0 < r["rho"] < rho_max
               and np.isfinite(r["sam_higher_frac"])]
        return float(np.mean([r["sam_higher_frac"] for r in sel])) if sel else float("nan")

    headline = {f"theorem_holds_frac_{i}_{n}": theorem(i, n)
                for i, n in (("ansatz", "global"), ("random", "global"), ("ansatz", "per_head"))}
    headline.update({"rho_max": float(rho_max), "diverged_members": sum(r["diverged"] for r in rows)})
    for norm in norms:
        big = [r for r in rows if r["rho"] >= rho_max and r["norm"] == norm]
        headline[f"all_learned_frac_beyond_rho_max_{norm}"] = (float(np.mean([r["all_learned_frac"] for r in big]))
                                                               if big else None)
    for init, norm in pairs:
        best = max((r for r in rows if r["init"] == init and r["norm"] == norm and 0 < r["rho"] < rho_max),
                   key=lambda r: r["rho"], default=None)
        if best is not None:
            headline[f"entropy_gain_{init}_{norm}_rho{best['rho']:g}"] = best["entropy_gain_mean"]
    return headline


def entropy_gain_per_seed(grid: Grid, rhos: Sequence[float], rho_below: float) -> np.ndarray:
    """[n] per seed: SAM's entropy gain over the GD reference (rho = 0, the grid's first radius),
    averaged over the spectra and the radii 0 < rho < rho_below at which every feature is learned
    both at rho and at 0; NaN for a seed with no such (spectrum, radius)."""
    sel = [p for p, r in enumerate(rhos) if 0 < r < rho_below]
    all_learned = np.isfinite(grid.times).all(-1)                                   # [S, P, n]
    ok = all_learned[:, sel] & all_learned[:, :1]
    gain = np.where(ok, grid.entropy[:, sel] - grid.entropy[:, :1], 0.0)
    count = ok.sum(axis=(0, 1))
    return np.where(count > 0, gain.sum(axis=(0, 1)) / np.maximum(count, 1), np.nan)
