"""Sparse parity (seed 004 Sec. 2.2, App. B.2, C.3): data, targets, data levers and a seeds-vmapped sweep.

Inputs live on the hypercube {-1, +1}^D (the seed writes {0, 1}^D, for which the product of bits is
an AND, not a parity; we use ±1 coordinates as Barak et al. 2022 do). Without loss of generality the
k relevant bits are the first k coordinates (the MLP's init is exchangeable across input units):

    chi_j(x)  = prod_{i < j} x_i                            (chi_k: the test function)
    S_eps(x)  = chi_k(x) + eps * sum_{j=1}^{k-1} chi_j(x)    (the staircase training target, Fig. 10)

MSE loss (f(x) - y)^2; chance level is MSE 1 (predict 0) and accuracy 1/2; accuracy is
mean[sign f(x) = chi_k(x)] on a fixed test set drawn uniformly from the hypercube.

Points are generated from random bits, never stored: x = 2 * bits(u) - 1 for one uint32 u per
example (D <= 32), so a batch costs one PRNG draw and a shift. The training set D of the paper
(size N = steps x batch) is a *counter-based pool*: point i is bits(fold_in(pool_key, i)), a pure
function of (member, i). As the points are i.i.d., "a random fraction rho of D" is distributed
exactly as "the first round(rho N) points", which is what the levers use:

    online      fresh points every step: bits(fold_in(data_key, step), [B])
    subsample   rho: the pool [0, K), K = round(rho N), in epochs without replacement
                (`data.Epochs`), for the same number of steps, i.e. ~1/rho epochs (Fig. 4)
    zipf        the pool cut into N/B fixed batches; batch b drawn with p ∝ (rank + 1)^-alpha,
                ranks a fixed random order (`data.Zipf` over batches, Fig. 5 / Fig. 11)
    curriculum  rho_0 (subsample) until step `switch`, then the full pool in epochs

`run_sweep(cfg, ctx, arms)` trains every arm (a data lever, a staircase eps, an optimizer from
`lsb_jax.optim` and optionally its own batch size) for `cfg.seeds` vmapped seeds in one compiled
`train.fit` program per arm (seeds share the init key across arms: common random numbers), evaluates
test accuracy / MSE every `eval_every` steps and reports steps-to-solve (the first evaluated step
with test accuracy >= `solve_acc`).

Axis letters: B batch, D input dim, K staircase levels, M vmapped members, T evaluation rows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import analysis, plots
from lsb_jax.config import require_positive
from lsb_jax.data import Epochs, Zipf
from lsb_jax.models.mlp import ACTIVATIONS, init_mlp, mlp_apply
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.optim.factory import validate as validate_optim
from lsb_jax.train import EvalHook, fit, init_state, make_sampled_step, seed_keys

SAMPLERS = ("online", "subsample", "zipf", "curriculum")
_POOL_STREAM = 0x7001  # fold_in tag of the pool key inside the member's data key

# ----------------------------------------------------------------------------- data and targets


def bits_to_signs(bits_B: jax.Array, dim: int) -> jax.Array:
    """[B] uint32 -> [B, D] float32 in {-1, +1}: x_bi = +1 if bit i of u_b is set, else -1."""
    if not 1 <= dim <= 32:
        raise ValueError(f"parity: dim must be in [1, 32] (one uint32 of bits per point), got {dim}")
    shift_D = jnp.arange(dim, dtype=jnp.uint32)
    set_BxD = (bits_B[:, None] >> shift_D) & jnp.uint32(1)
    return set_BxD.astype(jnp.float32) * 2.0 - 1.0


def sample_signs(key: jax.Array, num: int, dim: int) -> jax.Array:
    """[num, D] i.i.d. uniform points of {-1, +1}^D (one uint32 draw per point)."""
    return bits_to_signs(jax.random.bits(key, (num,), jnp.uint32), dim)


def pool_key(data_key: jax.Array) -> jax.Array:
    """The member's pool key: pool point i is `pool_points(pool_key, i)`."""
    return jax.random.fold_in(data_key, _POOL_STREAM)


def pool_points(key: jax.Array, index_B: jax.Array, dim: int) -> jax.Array:
    """[B, D] points i of the counter-based pool: x_i = signs(bits(fold_in(key, i)))."""
    bits_B = jax.vmap(lambda i: jax.random.bits(jax.random.fold_in(key, i), (), jnp.uint32))(index_B)
    return bits_to_signs(bits_B, dim)


def parity(x_BxD: jax.Array, k: int) -> jax.Array:
    """chi_k(x) = prod_{i<k} x_i, [B]."""
    return jnp.prod(x_BxD[:, :k], axis=1)


def staircase(x_BxD: jax.Array, k: int, eps) -> jax.Array:
    """chi_k(x) + eps * sum_{j=1}^{k-1} chi_j(x), [B] (eps may be traced; eps = 0 is chi_k)."""
    chi_BxK = jnp.cumprod(x_BxD[:, :k], axis=1)  # chi_BxK[:, j-1] = chi_j
    return chi_BxK[:, k - 1] + eps * jnp.sum(chi_BxK[:, : k - 1], axis=1)


def mse_losses(params, batch, activation: str = "relu") -> jax.Array:
    """Per-example (f(x) - y)^2, [B]."""
    pred_B = mlp_apply(params, batch["x"], activation)[:, 0]
    return (pred_B - batch["y"]) ** 2


def evaluate(params, x_BxD: jax.Array, y_B: jax.Array, activation: str = "relu") -> dict:
    """Test metrics of one model: {"acc": mean[sign f = y], "mse": mean (f - y)^2} (sign 0 counts wrong)."""
    pred_B = mlp_apply(params, x_BxD, activation)[:, 0]
    return {"acc": jnp.mean(pred_B * y_B > 0), "mse": jnp.mean((pred_B - y_B) ** 2)}


def steps_to_solve(steps_T, acc_TxM, solve_acc: float) -> np.ndarray:
    """[M] first evaluated step with accuracy >= solve_acc (NaN if never)."""
    acc_TxM = np.asarray(acc_TxM, np.float64).reshape(len(steps_T), -1)
    return analysis.steps_to_threshold(steps_T, -acc_TxM, -solve_acc)


# ----------------------------------------------------------------------------- sweep config


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of a parity comparison; None fields take the sweep config's value."""

    name: str
    sampler: str = "online"          # online | subsample | zipf | curriculum
    rho: float = 1.0                 # subsample fraction; curriculum: the first phase's fraction
    alpha: float = 0.0               # Zipf exponent over batches
    switch: int = 100                # curriculum: rho until this step, then the full pool
    eps: float = 0.0                 # staircase weight (0 = train on chi_k)
    optim: OptimConfig | None = None
    batch_size: int | None = None

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"Arm {self.name!r}: sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"Arm {self.name!r}: rho must be in (0, 1], got {self.rho}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"Arm {self.name!r}: alpha must be a finite value >= 0, got {self.alpha}")
        if self.switch < 0 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError(f"Arm {self.name!r}: switch must be >= 0 and batch_size >= 1")
        if not math.isfinite(self.eps):
            raise ValueError(f"Arm {self.name!r}: eps must be finite, got {self.eps}")


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
    seeds: int = 5
    seed: int = 0                        # init + data streams of the members
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

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.dim, *self.hidden, 1)

    @property
    def pool_size(self) -> int:
        return self.steps * self.batch_size


# ----------------------------------------------------------------------------- training


def batch_sampler(cfg: ParityConfig, arm: Arm):
    """sample_batch(data_key, step) -> {"x": [B, D], "y": [B]} for the arm's lever and target."""
    b = arm.batch_size or cfg.batch_size
    n = cfg.steps * b  # the pool D: steps x batch points (seed 004 App. B.2)
    dim, k, eps = cfg.dim, cfg.k, arm.eps

    def target(x_BxD):
        return parity(x_BxD, k) if eps == 0 else staircase(x_BxD, k, eps)

    if arm.sampler == "online":
        def sample(key, step):
            x_BxD = sample_signs(jax.random.fold_in(key, step), b, dim)
            return {"x": x_BxD, "y": target(x_BxD)}
        return sample

    if arm.sampler == "subsample":
        epochs = Epochs(np.ones(max(1, round(arm.rho * n)), np.int32))

        def index(key, step):
            return epochs.sample(key, step, b).index
    elif arm.sampler == "zipf":
        zipf = Zipf(cfg.steps, arm.alpha)  # over the steps-many fixed batches of the pool

        def index(key, step):
            batch_1 = zipf.sample(key, step, 1).index
            return batch_1[0] * b + jnp.arange(b, dtype=jnp.int32)
    else:  # curriculum: rho until `switch`, then the whole pool
        small, full = Epochs(np.ones(max(1, round(arm.rho * n)), np.int32)), Epochs(np.ones(n, np.int32))

        def index(key, step):
            return jnp.where(step < arm.switch, small.sample(key, step, b).index,
                             full.sample(jax.random.fold_in(key, 1), step - arm.switch, b).index)

    def sample(key, step):
        x_BxD = pool_points(pool_key(key), index(key, step), dim)
        return {"x": x_BxD, "y": target(x_BxD)}
    return sample


def make_member(cfg: ParityConfig, arm: Arm):
    """(member_init(key) -> TrainState, member_step(state) -> (state, {"loss"})) for one seed."""
    optimizer = make_optimizer(arm.optim or cfg.optim, cfg.steps)
    loss_fn = lambda params, batch: mse_losses(params, batch, cfg.activation)  # noqa: E731
    step = make_sampled_step(loss_fn, optimizer, batch_sampler(cfg, arm))
    init = lambda key: init_state(lambda k: init_mlp(k, cfg.sizes), optimizer.tx, key)  # noqa: E731
    return init, step


def test_set(cfg: ParityConfig) -> tuple[jax.Array, jax.Array]:
    """The fixed test set: [T, D] uniform hypercube points and chi_k labels [T]."""
    x_TxD = sample_signs(jax.random.PRNGKey(cfg.data_seed), cfg.test_size, cfg.dim)
    return x_TxD, parity(x_TxD, cfg.k)


def train_arm(cfg: ParityConfig, arm: Arm, ctx=None, desc: str = "parity"):
    """Trains cfg.seeds vmapped members on one arm; returns the `train.FitResult`.

    History: "loss" [rows, M] (train batch), "test_acc" / "test_mse" [T, M] at the eval steps.
    """
    init, step = make_member(cfg, arm)
    state = jax.jit(jax.vmap(init))(seed_keys(cfg.seed, cfg.seeds))
    x_test, y_test = test_set(cfg)
    metrics = jax.vmap(lambda p, x, y: evaluate(p, x, y, cfg.activation), in_axes=(0, None, None))
    hook = EvalHook(lambda s, x, y: {"test_" + k: v for k, v in metrics(s.params, x, y).items()},
                    every=cfg.eval_every, args=(x_test, y_test))
    return fit(jax.vmap(step), state, cfg.steps, ctx=ctx, hooks=[hook], chunk_size=cfg.chunk_size,
               checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, desc=desc, on_divergence="continue")


def summarize_arm(cfg: ParityConfig, hist: dict) -> dict:
    """Steps to solve (mean/std over solved members; `censored` counts unsolved as cfg.steps), accuracy."""
    steps_T, acc_TxM = hist["test_acc_step"], hist["test_acc"]
    solve_M = steps_to_solve(steps_T, acc_TxM, cfg.solve_acc)
    mean, std = analysis.mean_std(solve_M)
    return {
        "steps_to_solve": [float(s) for s in solve_M],
        "steps_to_solve_mean": mean, "steps_to_solve_std": std,
        "steps_to_solve_censored_mean": float(np.mean(np.where(np.isnan(solve_M), cfg.steps, solve_M))),
        "solved_fraction": float(np.mean(~np.isnan(solve_M))),
        "final_test_acc_mean": float(np.mean(acc_TxM[-1])), "final_test_acc_std": float(np.std(acc_TxM[-1])),
        "mean_test_acc_over_training": float(np.mean(acc_TxM)),
        "final_test_mse_mean": float(np.nanmean(hist["test_mse"][-1])),
    }


def run_sweep(cfg: ParityConfig, ctx, arms: Sequence[Arm], title: str) -> dict:
    """Trains every arm (one `fit` each, seeds vmapped), saves the accuracy/MSE figure, returns
    {"per_arm": {name: summary}, "curves": {name: {"step", "test_acc_mean"}}, "baseline": arms[0].name}."""
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"run_sweep: arm names must be unique, got {names}")
    per_arm, curves = {}, {}
    fig, (ax0, ax1) = plots.figure(2)
    for arm in arms:
        result = train_arm(cfg, arm, ctx.child(arm.name) if ctx is not None else None, desc=f"parity {arm.name}")
        hist = result.history
        per_arm[arm.name] = summarize_arm(cfg, hist) | {"diverged": result.num_diverged}
        curves[arm.name] = {"step": [int(s) for s in hist["test_acc_step"]],
                            "test_acc_mean": [float(v) for v in np.mean(hist["test_acc"], axis=1)]}
        plots.band(ax0, hist["test_acc_step"], hist["test_acc"], label=arm.name)
        plots.band(ax1, hist["test_mse_step"], hist["test_mse"], label=arm.name, log=True)
    ax0.axhline(cfg.solve_acc, color="k", ls=":", lw=1)
    ax0.set(xlabel="step", ylabel=f"test accuracy on chi_{cfg.k}", title=title)
    ax1.set(xlabel="step", ylabel=f"test MSE vs chi_{cfg.k}")
    ax0.legend(fontsize=7)
    if ctx is not None:
        ctx.save_figure(fig, "parity_curves")
    return {"per_arm": per_arm, "curves": curves, "baseline": arms[0].name}


def headline(res: dict, cfg: ParityConfig) -> dict:
    """Flat numbers for the report: per arm censored steps-to-solve and solved fraction, and the
    fastest arm with its speedup over the baseline (arms[0])."""
    per = res["per_arm"]
    head = {"seeds": cfg.seeds, "steps": cfg.steps, "dim": cfg.dim, "k": cfg.k, "solve_acc": cfg.solve_acc}
    for name, s in per.items():
        head[f"{name}/steps_to_solve"] = s["steps_to_solve_censored_mean"]
        head[f"{name}/solved"] = s["solved_fraction"]
        head[f"{name}/mean_acc"] = s["mean_test_acc_over_training"]
    base = per[res["baseline"]]["steps_to_solve_censored_mean"]
    fastest = min(per, key=lambda n: (per[n]["steps_to_solve_censored_mean"], -per[n]["mean_test_acc_over_training"]))
    head["fastest_arm"] = fastest
    head["speedup_fastest_vs_baseline"] = base / per[fastest]["steps_to_solve_censored_mean"]
    return head


def format_arm(name: str, s: dict) -> str:
    return (f"{name}: {s['steps_to_solve_censored_mean']:.0f} steps (solved {s['solved_fraction']:.0%}, "
            f"final acc {s['final_test_acc_mean']:.3f})")


def scan_steps(ens_step, num_steps: int, unroll: int = 4):
    """run(state) -> (state, loss_T): `num_steps` calls of `ens_step` as one jitted `lax.scan`
    with `unroll` steps per iteration and the state donated; loss_T is the batch loss averaged
    over members. A throughput path for sweeps evaluated only at the end (no hooks, checkpoints
    or NaN guard: `train.fit` does those); on a CPU, unroll = 4 runs the parity MLP ~1.5x faster
    than one step per iteration (loop overhead dominates these tiny matmuls)."""
    def run(state):
        def body(s, _):
            s, metrics = ens_step(s)
            return s, jnp.mean(metrics["loss"])
        return jax.lax.scan(body, state, None, length=num_steps, unroll=unroll)
    return jax.jit(run, donate_argnums=0)
