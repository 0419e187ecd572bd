"""Fact memorization (seed 004 Sec. 2.3, App. B.3): task, levers over subjects, one vmapped sweep.

Vocabulary (V = S + R + R |A^r| + |N| tokens, in this order):

    subjects   s          -> token s                               0 <= s < S
    relations  r          -> token S + r                           0 <= r < R
    answers    A^r        -> tokens S + R + r |A^r| + j             0 <= j < |A^r|  (disjoint per relation)
    noise      n          -> token S + R + R |A^r| + n             0 <= n < |N|

Ground truth: phi(s, r) = the answer token S + R + r |A^r| + j_{s,r}, j_{s,r} ~ Unif{0..|A^r|-1}
i.i.d., drawn once from a key (`facts(key)`; each seed of a sweep draws its own phi).

Document (eq. 4), T = k_noise + 3 tokens:

    d = [s, r, n_1, ..., n_{k_noise}, phi(s, r)],   r ~ Unif(R), n_i ~ Unif(N) i.i.d.

and s drawn by a `lsb_jax.data` sampler over the S subjects (the "items" of the lever).

Loss (eq. 5, per document): the model reads d_0..d_{T-2} (T - 1 tokens) and predicts
d_1..d_{T-1}; the per-example loss is the mean over the predicted positions p in P of
-log softmax(logits_p)[d_{p+1}]. `loss_positions="all"` (default) takes every next-token
prediction, P = {0, ..., T-2} (relation, noise and answer: eq. 5's sum over k, divided by T - 1);
`"answer"` takes only the last one, P = {T-2} (the fact itself). The relation and noise terms
are irreducible (log R and log |N| nats at the optimum).

Accuracy: every (s, r) pair once (S R prompts, fresh noise from a fixed evaluation key), prompt
= the document without its last token, greedy next token = argmax over the WHOLE vocabulary
at the last prompt position, exact match with phi(s, r). Before any fact is memorized the best
a model can do is the most frequent answer of A^r for relation r, so accuracy plateaus near
max_j #{s: j_{s,r} = j} / S (a few percent), then rises as facts are memorized.

Levers (arms of one sweep, all traced so seeds x arms run in ONE vmapped `train.fit` program):

    k           truncation: `Subset(S, k)`, the first k subjects of a fixed random order (Fig. 4)
    alpha       `Zipf(S, alpha)`: p(rank r) ∝ (r+1)^-alpha, random rank assignment (Fig. 5)
    curriculum  1 = `Subset(S, k(step))` with k(step) = piecewise((switch,), (k0, S)) (Fig. 7)

`run_sweep` reuses the sweep machinery of `train.arms` (`member_arms`, `group_arms`,
`group_members`, `ArmTraining`) and `icl_sweep.validate_arms`: optimizer arms (gradient biasing,
SAM, frozen or layer-wise-lr parameters) are groups of arms, one compiled program each.

Axis letters: B batch, T document length, P predicted positions (T - 1), V vocabulary,
S subjects, R relations, M vmapped members, E evaluation rows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lsb_jax import analysis, plots
from lsb_jax.config import require_positive
from lsb_jax.data import Subset, Zipf, piecewise
from lsb_jax.models import gpt2
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.tasks import icl_sweep
from lsb_jax.train.arms import ArmTraining, group_arms, group_members, member_arms
from lsb_jax.train import EvalHook, ensemble_init, ensemble_step, fit, init_state, make_sampled_step

LEVERS = ("subset", "zipf", "curriculum")
LOSS_POSITIONS = ("all", "answer")
_FACTS_STREAM = 0xFAC7                    # fold_in tag of the facts table (per seed) under data_seed
_EVAL_STREAM = 0xE7A1                     # fold_in tag of the evaluation noise


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class FactsTask:
    """Sizes of the synthetic language (see the module docstring for the token layout).

    The seed fixes only S = 100 (truncation experiments); |R|, |A^r|, |N| and k_noise are ours:
    R = 4 relations gives S R = 400 facts, enough that memorizing them takes many steps; |A^r| = 32
    answers per relation (disjoint blocks, as Nichani et al.'s A^r) puts the subject-blind best
    guess at ~8% (the most frequent of 32 answers over 100 subjects: a low plateau floor); |N| = 64
    noise tokens and k_noise = 4 make the noise high-entropy (log 64 nats per token, so it cannot be
    memorized with the fact) while keeping documents short (T = 7) and the answer 5 positions after s.
    """

    num_subjects: int = 100
    num_relations: int = 4
    answers_per_relation: int = 32
    num_noise: int = 64
    k_noise: int = 4

    def __post_init__(self):
        require_positive(self, ("num_subjects", "num_relations", "answers_per_relation", "num_noise"), "FactsTask")
        if self.k_noise < 0:
            raise ValueError(f"FactsTask.k_noise must be >= 0, got {self.k_noise}")

    @property
    def relation_offset(self) -> int:
        return self.num_subjects

    @property
    def answer_offset(self) -> int:
        return self.num_subjects + self.num_relations

    @property
    def noise_offset(self) -> int:
        return self.answer_offset + self.num_relations * self.answers_per_relation

    @property
    def vocab_size(self) -> int:
        return self.noise_offset + self.num_noise

    @property
    def seq_len(self) -> int:
        """T = k_noise + 3 tokens per document."""
        return self.k_noise + 3

    def facts(self, key: jax.Array) -> jax.Array:
        """phi_SxR int32: phi[s, r] = answer token of A^r, uniform and i.i.d. over (s, r)."""
        j_SxR = jax.random.randint(key, (self.num_subjects, self.num_relations), 0, self.answers_per_relation,
                                   jnp.int32)
        r_R = jnp.arange(self.num_relations, dtype=jnp.int32)
        return self.answer_offset + r_R * self.answers_per_relation + j_SxR

    def documents(self, key: jax.Array, subjects_B: jax.Array, phi_SxR: jax.Array,
                  relations_B: jax.Array | None = None) -> jax.Array:
        """tokens_BxT = [s, r, n_1..n_k, phi(s, r)] with r ~ Unif(R) (unless given), n_i ~ Unif(N)."""
        k_rel, k_noise = jax.random.split(key)
        b = subjects_B.shape[0]
        subjects_B = subjects_B.astype(jnp.int32)
        if relations_B is None:
            relations_B = jax.random.randint(k_rel, (b,), 0, self.num_relations, jnp.int32)
        noise_BxK = self.noise_offset + jax.random.randint(k_noise, (b, self.k_noise), 0, self.num_noise, jnp.int32)
        answer_B = phi_SxR[subjects_B, relations_B]
        return jnp.concatenate([subjects_B[:, None], (self.relation_offset + relations_B)[:, None], noise_BxK,
                                answer_B[:, None]], axis=1)

    def all_pairs(self, key: jax.Array, phi_SxR: jax.Array) -> jax.Array:
        """tokens_[S R]xT: one document per (s, r) pair (row s R + r), fresh noise for each."""
        s_Q = jnp.repeat(jnp.arange(self.num_subjects, dtype=jnp.int32), self.num_relations)
        r_Q = jnp.tile(jnp.arange(self.num_relations, dtype=jnp.int32), self.num_subjects)
        return self.documents(key, s_Q, phi_SxR, r_Q)

    def chance_accuracy(self, phi_SxR) -> float:
        """Accuracy of the best subject-blind predictor: the most frequent answer of each relation."""
        phi = np.asarray(phi_SxR)
        return float(sum(np.bincount(phi[:, r]).max() for r in range(phi.shape[1])) / phi.size)


def token_losses(logits_BxPxV: jax.Array, tokens_BxT: jax.Array) -> jax.Array:
    """[B, P] -log softmax(logits_p)[d_{p+1}]: the next-token losses of a document."""
    logp_BxPxV = jax.nn.log_softmax(logits_BxPxV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BxPxV, tokens_BxT[:, 1:, None], axis=-1)[..., 0]


def per_example_loss(logits_BxPxV: jax.Array, tokens_BxT: jax.Array, positions: str = "all") -> jax.Array:
    """[B] mean next-token loss over the predicted positions ("all": every one; "answer": the last)."""
    if positions not in LOSS_POSITIONS:
        raise ValueError(f"loss_positions must be one of {LOSS_POSITIONS}, got {positions!r}")
    loss_BxP = token_losses(logits_BxPxV, tokens_BxT)
    return loss_BxP[:, -1] if positions == "answer" else jnp.mean(loss_BxP, axis=1)


def greedy_correct(logits_BxPxV: jax.Array, tokens_BxT: jax.Array) -> jax.Array:
    """[B] bool: argmax over the vocabulary at the last prompt position == the document's answer."""
    return jnp.argmax(logits_BxPxV[:, -1], axis=-1) == tokens_BxT[:, -1]


def make_loss_fn(graphdef, positions: str = "all"):
    """loss_fn(params, {"tokens": [B, T]}) -> [B]: the model reads tokens[:, :-1]."""
    def loss_fn(params, batch):
        tokens_BxT = batch["tokens"]
        return per_example_loss(gpt2.apply(graphdef, params, tokens_BxT[:, :-1]), tokens_BxT, positions)
    return loss_fn


def evaluate_pairs(graphdef, params, tokens_QxT: jax.Array):
    """(correct_Q bool, answer_loss_Q): greedy exact match and -log p(answer) on the prompts tokens[:, :-1]."""
    logits_QxPxV = gpt2.apply(graphdef, params, tokens_QxT[:, :-1])
    return greedy_correct(logits_QxPxV, tokens_QxT), token_losses(logits_QxPxV, tokens_QxT)[:, -1]


# ----------------------------------------------------------------------------- sweep config


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

    Field names `optim`, `batch_size`, `steps` are the ones `train.arms.group_arms` reads.
    """

    task: FactsTask = FactsTask()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig(name="adam", lr=5e-5, b1=0.9, b2=0.95)
    batch_size: int = 64
    steps: int = 20_000
    seeds: int = 5
    seed: int = 0
    data_seed: int = 4321          # facts tables (folded with the seed index), subject order, eval noise
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


# ----------------------------------------------------------------------------- levers


def subject_sampler(lever: str, cfg: SweepConfig, hp: Mapping[str, jax.Array], perm_seed: int):
    """The `lsb_jax.data` sampler of subjects for one member (lever values traced)."""
    n = cfg.task.num_subjects
    k = jnp.where(jnp.isfinite(hp["k"]), hp["k"], n)
    if lever == "zipf":
        return Zipf(n, hp["alpha"], perm_seed=perm_seed)
    if lever == "curriculum":
        grow = piecewise((cfg.curriculum_switch,), (cfg.curriculum_start, n))
        return Subset(n, lambda step: jnp.where(hp["curriculum"] > 0, grow(step), k), perm_seed=perm_seed)
    return Subset(n, k, perm_seed=perm_seed)


def make_sample_batch(lever: str, cfg: SweepConfig, perm_seed: int, batch_size: int | None = None):
    """sample_batch(key, step, hp, phi_XxSxR) -> {"tokens": [B, T]}: pure in (key, step).

    The subject sampler gets the constant key and folds in the step itself; relations and noise
    use fold_in(k_doc, step). phi_XxSxR holds every seed's facts; the member uses row hp["seed"].
    """
    task, b = cfg.task, cfg.batch_size if batch_size is None else batch_size

    def sample_batch(key, step, hp, phi_XxSxR):
        k_subj, k_doc = jax.random.split(key)
        subjects_B = subject_sampler(lever, cfg, hp, perm_seed).sample(k_subj, step, b).index
        phi_SxR = phi_XxSxR[hp["seed"].astype(jnp.int32)]
        return {"tokens": task.documents(jax.random.fold_in(k_doc, step), subjects_B, phi_SxR)}

    return sample_batch


def draw_facts(cfg: SweepConfig) -> jax.Array:
    """[seeds, S, R] int32: seed i's phi from fold_in(fold_in(PRNGKey(data_seed), FACTS), i)."""
    base = jax.random.fold_in(jax.random.PRNGKey(cfg.data_seed), _FACTS_STREAM)
    return jax.vmap(lambda i: cfg.task.facts(jax.random.fold_in(base, i)))(jnp.arange(cfg.seeds))


def eval_documents(cfg: SweepConfig, phi_XxSxR: jax.Array) -> jax.Array:
    """[seeds, S R, T]: every (s, r) pair of each seed's facts; the noise is shared by the seeds."""
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.data_seed), _EVAL_STREAM)
    return jax.vmap(lambda phi: cfg.task.all_pairs(key, phi))(phi_XxSxR)


# ----------------------------------------------------------------------------- the sweep


def _check_levers(arms: Sequence[Mapping[str, float]]) -> list[dict]:
    known = ("k", "alpha", "curriculum")
    for i, arm in enumerate(arms):
        bad = set(arm) - set(known)
        if bad:
            raise ValueError(f"arms[{i}]: unknown lever(s) {sorted(bad)}; known {list(known)}")
    return list(arms)


def run_sweep(cfg: SweepConfig, ctx, lever: str, arms: Sequence[Mapping[str, float]], arm_names: Sequence[str],
              baseline_arm: int = 0, title: str = "", training: Sequence[ArmTraining | None] | None = None) -> dict:
    """Trains seeds x arms of fact memorization in one vmapped `fit` per program group.

    arms: dicts of lever values {"k" (subjects, inf = all), "alpha", "curriculum"}; lever: which
      sampler draws subjects ("subset" | "zipf" | "curriculum", static).
    training: optional per-arm optimizer / batch size (`train.arms.ArmTraining`).

    Every `eval_every` steps each member is evaluated on ALL S R pairs of its facts: test accuracy
    (exact greedy match), answer loss, and the accuracy on the subjects its sampler can draw at
    that step (p(s) > 0: the truncated arm's own training facts). Returns per-arm steps to each
    accuracy threshold (mean +- std over seeds, NaN = never, `reached` counts), early/final/best
    accuracy, the [E, M] curves (saved as curves.npz) and the figure "accuracy_curves".
    """
    if lever not in LEVERS:
        raise ValueError(f"lever must be one of {LEVERS}, got {lever!r}")
    arms = icl_sweep.validate_arms(_check_levers(arms), cfg.task.num_subjects)
    if len(arm_names) != len(arms) or len(set(arm_names)) != len(arm_names):
        raise ValueError(f"need {len(arms)} unique arm names, got {list(arm_names)}")
    groups = group_arms(cfg, training, len(arms))
    task = cfg.task
    graphdef = gpt2.abstract_graphdef(cfg.model.gpt2(task))
    loss_fn = make_loss_fn(graphdef, cfg.loss_positions)
    perm_seed = cfg.data_seed
    phi_XxSxR = jax.jit(lambda: draw_facts(cfg))()
    eval_XxQxT = jax.jit(lambda phi: eval_documents(cfg, phi))(phi_XxSxR)
    chance_X = np.asarray([task.chance_accuracy(phi) for phi in np.asarray(phi_XxSxR)])
    members = member_arms(cfg.seeds, cfg.seed, arms)
    m = members.size

    def evaluate(state, hp, phi_XxSxR, eval_XxQxT):
        def one(params, hp_m, step):
            seed = hp_m["seed"].astype(jnp.int32)
            correct_Q, aloss_Q = evaluate_pairs(graphdef, params, eval_XxQxT[seed])
            active_Q = jnp.repeat(subject_sampler(lever, cfg, hp_m, perm_seed).probs(step) > 0, task.num_relations)
            train_acc = jnp.sum(correct_Q * active_Q) / jnp.maximum(jnp.sum(active_Q), 1)
            return {"test_acc": jnp.mean(correct_Q), "train_acc": train_acc, "answer_loss": jnp.mean(aloss_Q)}
        return jax.vmap(one)(state.params, hp, state.step)

    hist_parts = []
    diverged_M = np.full(m, -1, np.int64)   # first divergent step (DivergenceGuard), -1: none
    for g, group in enumerate(groups):
        idx_G, gm = group_members(members, group)
        gctx = ctx if len(groups) == 1 or ctx is None else ctx.child(f"group{g}")
        sample_batch = make_sample_batch(lever, cfg, perm_seed, group.batch_size)

        def optimizer(hp, group=group):
            return make_optimizer(group.optim, cfg.steps, **{f: hp["optim." + f] for f in group.traced})

        def member_init(key, hp, optimizer=optimizer):
            return init_state(lambda k: gpt2.init_params(cfg.model.gpt2(task), k)[1], optimizer(hp).tx, key)

        def member_step(state, hp, phi, optimizer=optimizer, sample_batch=sample_batch):
            return make_sampled_step(loss_fn, optimizer(hp), lambda k, s: sample_batch(k, s, hp, phi))(state)

        hook = EvalHook(evaluate, every=cfg.eval_every, args=(gm.hparams, phi_XxSxR, eval_XxQxT))
        result = fit(ensemble_step(member_step), ensemble_init(member_init, gm), cfg.steps, ctx=gctx, hooks=[hook],
                     step_args=(gm.hparams, phi_XxSxR), chunk_size=cfg.chunk_size,
                     checkpoint_every=cfg.checkpoint_every or None, log_every=cfg.log_every,
                     desc=f"facts {lever} g{g}", on_divergence="continue")
        hist_parts.append((idx_G, result.history))
        diverged_M[idx_G] = result.diverged_at

    steps_E = np.asarray(hist_parts[0][1]["test_acc_step"])
    curves = {n: np.full((len(steps_E), m), np.nan) for n in ("test_acc", "train_acc", "answer_loss")}
    for idx_G, hist in hist_parts:
        for n in curves:
            curves[n][:, idx_G] = np.asarray(hist[n]).reshape(len(steps_E), len(idx_G))
    res = summarize(cfg, steps_E, curves, members, arm_names, baseline_arm, chance_X)
    arm_M = np.asarray([lab["arm"] for lab in members.labels])
    res["per_arm"] = {name: {**{k: arms[a][k] for k in ("k", "alpha", "curriculum")}, **row,
                             "diverged": int((diverged_M[arm_M == a] >= 0).sum())}
                      for a, (name, row) in enumerate(res["per_arm"].items())}
    res["program_groups"] = [{"arms": [arm_names[a] for a in gr.arms], "batch_size": gr.batch_size,
                              "traced": list(gr.traced)} for gr in groups]
    if ctx is not None:
        arm_of = np.asarray([lab["arm"] for lab in members.labels])
        fig, (ax0, ax1, ax2) = plots.figure(3)
        for a, name in enumerate(arm_names):
            cols = arm_of == a
            plots.band(ax0, steps_E, curves["test_acc"][:, cols], label=name)
            plots.band(ax1, steps_E, curves["train_acc"][:, cols], label=name)
            plots.band(ax2, steps_E, curves["answer_loss"][:, cols], label=name, log=True)
        ax0.axhline(float(chance_X.mean()), color="gray", ls=":", lw=1, label="subject-blind best")
        ax0.axhline(cfg.thresholds[0], color="r", ls=":", lw=0.8, label="threshold")
        ax0.set(xlabel="step", ylabel="test accuracy (all S x R facts)", title=title or f"facts, {lever} lever")
        ax1.set(xlabel="step", ylabel="accuracy on the facts of drawable subjects")
        ax2.set(xlabel="step", ylabel="answer loss (nats, all facts)")
        ax0.legend(fontsize=6)
        ctx.save_figure(fig, "accuracy_curves")
        ctx.save_arrays("curves", steps=steps_E, arm=arm_of, **curves)
    return res


def summarize(cfg: SweepConfig, steps_E, curves: Mapping[str, np.ndarray], members, arm_names, baseline_arm: int,
              chance_X) -> dict:
    """Per-arm numbers from the [E, M] accuracy curves (host only; used by `run_sweep`)."""
    acc_ExM = np.asarray(curves["test_acc"], np.float64)
    arm_of = np.asarray([lab["arm"] for lab in members.labels])
    early = min(len(steps_E) - 1, max(1, len(steps_E) // 4))   # the row a quarter into training
    reach = {t: analysis.steps_to_threshold(steps_E, -acc_ExM, -t) for t in cfg.thresholds}
    per_arm = {}
    for a, name in enumerate(arm_names):
        cols = arm_of == a
        row = {}
        for t in cfg.thresholds:
            mean, std = analysis.mean_std(reach[t][cols])
            row[f"steps_to_{t:g}_mean"], row[f"steps_to_{t:g}_std"] = mean, std
            row[f"reached_{t:g}"] = int(np.isfinite(reach[t][cols]).sum())
            row[f"steps_to_{t:g}_censored_mean"] = float(np.mean(np.where(np.isnan(reach[t][cols]), cfg.steps,
                                                                           reach[t][cols])))
        row.update({
            "seeds": int(cols.sum()),
            "early_step": int(steps_E[early]),
            "early_test_acc_mean": float(acc_ExM[early, cols].mean()),
            "final_test_acc_mean": float(acc_ExM[-1, cols].mean()),
            "final_test_acc_std": float(acc_ExM[-1, cols].std()),
            "best_test_acc_mean": float(acc_ExM[:, cols].max(axis=0).mean()),
            "mean_test_acc_over_training": float(acc_ExM[:, cols].mean()),
            "final_train_acc_mean": float(np.asarray(curves["train_acc"])[-1, cols].mean()),
            "final_answer_loss_mean": float(np.asarray(curves["answer_loss"])[-1, cols].mean()),
        })
        per_arm[name] = row
    t0 = cfg.thresholds[0]
    base = per_arm[arm_names[baseline_arm]][f"steps_to_{t0:g}_mean"]
    for row in per_arm.values():
        r = row[f"steps_to_{t0:g}_mean"]
        row["speedup_vs_baseline"] = base / r if np.isfinite(r) and np.isfinite(base) else math.nan
    return {
        "per_arm": per_arm, "baseline": arm_names[baseline_arm], "thresholds": list(cfg.thresholds),
        "chance_acc": float(np.mean(chance_X)),
        "steps": [int(s) for s in steps_E],
        "curves": {name: [float(v) for v in acc_ExM[:, arm_of == a].mean(axis=1)] for a, name in enumerate(arm_names)},
        "members": [dict(lab, final_test_acc=float(acc_ExM[-1, i]),
                         **{f"steps_to_{t:g}": float(reach[t][i]) for t in cfg.thresholds})
                    for i, lab in enumerate(members.labels)],
    }


def headline(res: dict, cfg: SweepConfig) -> dict:
    """Flat numbers for the report: per arm steps to each threshold (mean, std), early/final accuracy."""
    head = {"seeds": cfg.seeds, "steps": cfg.steps, "subjects": cfg.task.num_subjects,
            "chance_acc": res["chance_acc"], "baseline_arm": res["baseline"]}
    t0 = cfg.thresholds[0]
    for name, row in res["per_arm"].items():
        for t in cfg.thresholds:
            head[f"{name}/steps_to_{t:g}"] = row[f"steps_to_{t:g}_mean"]
            head[f"{name}/steps_to_{t:g}_std"] = row[f"steps_to_{t:g}_std"]
        head[f"{name}/early_acc"] = row["early_test_acc_mean"]
        head[f"{name}/final_acc"] = row["final_test_acc_mean"]
        head[f"{name}/speedup"] = row["speedup_vs_baseline"]
    per = res["per_arm"]
    head["fastest_arm"] = min(per, key=lambda n: (per[n][f"steps_to_{t0:g}_censored_mean"],
                                                  -per[n]["mean_test_acc_over_training"]))
    return head


def format_arm(name: str, row: dict, threshold: float) -> str:
    r, s = row[f"steps_to_{threshold:g}_mean"], row[f"steps_to_{threshold:g}_std"]
    reach = f"{r:.0f} +- {s:.0f}" if np.isfinite(r) else "never"
    return (f"{name}: {reach} steps to acc {threshold:g} ({row[f'reached_{threshold:g}']}/{row['seeds']} seeds), "
            f"acc {row['early_test_acc_mean']:.2f} at step {row['early_step']}, final {row['final_test_acc_mean']:.2f}")


__all__ = ["LEVERS", "LOSS_POSITIONS", "FactsTask", "ModelConfig", "SweepConfig", "draw_facts", "eval_documents",
           "evaluate_pairs", "format_arm", "greedy_correct", "headline", "make_loss_fn", "make_sample_batch",
           "per_example_loss", "run_sweep", "subject_sampler", "summarize", "token_losses"]


# Shared presets of the facts experiments (synthetic/facts_*.py). FULL is the paper's (App. B.3:
# 6x6x192 GPT-2, Adam lr 5e-5, betas (0.9, 0.95), batch 64, 100 subjects); QUICK is the CPU scale:
# 50 subjects, 2 layers x 2 heads x width 64, lr 1e-3 (20x the paper's: at 5e-5 a tiny model barely
# moves in 500 steps), 500 steps, 3 seeds.
QUICK = SweepConfig(
    task=FactsTask(num_subjects=50, num_relations=4, answers_per_relation=16, num_noise=32, k_noise=3),
    model=ModelConfig(num_layers=2, num_heads=2, width=64),
    optim=OptimConfig(name="adam", lr=1e-3, b1=0.9, b2=0.95), batch_size=64, steps=500, seeds=3,
    thresholds=(0.2, 0.5), eval_every=25, curriculum_start=10, curriculum_switch=100, chunk_size=250, log_every=25)
FULL = SweepConfig()
