"""Fact memorization (seed 004 Sec. 2.3, App. B.3): the task and its levers over subjects.

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

Levers (arms of one sweep, all traced so seeds x arms run in ONE vmapped program; the sweep itself
is `lsb_jax.sweeps.facts`):

    k           truncation: `Subset(S, k)`, the first k subjects of a fixed random order (Fig. 4)
    alpha       `Zipf(S, alpha)`: p(rank r) ∝ (r+1)^-alpha, random rank assignment (Fig. 5)
    curriculum  1 = `Subset(S, k(step))` with k(step) = piecewise((switch,), (k0, S)) (Fig. 7)

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

from lsb_jax.config import require_positive
from lsb_jax.data import Subset, Zipf, piecewise
from lsb_jax.models import gpt2
from lsb_jax.train.arms import member_data_keys

LEVERS = ("subset", "zipf", "curriculum")
LOSS_POSITIONS = ("all", "answer")
ARM_DEFAULTS = {"k": math.inf, "alpha": 0.0, "curriculum": 0.0}
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



# ----------------------------------------------------------------------------- levers


def subject_sampler(lever: str, cfg, hp: Mapping[str, jax.Array], perm_seed: int):
    """The `lsb_jax.data` sampler of subjects for one member (lever values traced)."""
    n = cfg.task.num_subjects
    k = jnp.where(jnp.isfinite(hp["k"]), hp["k"], n)
    if lever == "zipf":
        return Zipf(n, hp["alpha"], perm_seed=perm_seed)
    if lever == "curriculum":
        grow = piecewise((cfg.curriculum_switch,), (cfg.curriculum_start, n))
        return Subset(n, lambda step: jnp.where(hp["curriculum"] > 0, grow(step), k), perm_seed=perm_seed)
    return Subset(n, k, perm_seed=perm_seed)


def make_sample_batch(lever: str, cfg, perm_seed: int, batch_size: int | None = None):
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


def draw_facts(cfg) -> jax.Array:
    """[seeds, S, R] int32: each seed's phi; base seed r's seed i draws it from
    fold_in(fold_in(fold_in(PRNGKey(data_seed), FACTS), r), i) (`train.arms.member_data_keys`)."""
    keys = member_data_keys(jax.random.fold_in(jax.random.PRNGKey(cfg.data_seed), _FACTS_STREAM), cfg.seeds,
                            cfg.base_seeds)
    return jax.vmap(cfg.task.facts)(keys)


def eval_documents(cfg, phi_XxSxR: jax.Array) -> jax.Array:
    """[seeds, S R, T]: every (s, r) pair of each seed's facts; the noise is shared by the seeds."""
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.data_seed), _EVAL_STREAM)
    return jax.vmap(lambda phi: cfg.task.all_pairs(key, phi))(phi_XxSxR)


def validate_arms(arms: Sequence[Mapping[str, float]], num_subjects: int, field: str = "arms") -> list[dict]:
    """Fills the defaults of the subject levers and checks them (the error names the arm and field)."""
    out = []
    for i, arm in enumerate(arms):
        bad = set(arm) - set(ARM_DEFAULTS)
        if bad:
            raise ValueError(f"{field}[{i}]: unknown lever(s) {sorted(bad)}; known {list(ARM_DEFAULTS)}")
        a = {**ARM_DEFAULTS, **{k: float(v) for k, v in arm.items()}}
        if a["k"] == 0:
            a["k"] = math.inf
        if not (math.isinf(a["k"]) or (a["k"] == round(a["k"]) and 1 <= a["k"] <= num_subjects)):
            raise ValueError(f"{field}[{i}].k: must be an integer in [1, {num_subjects}] or inf, got {a['k']}")
        if not (math.isfinite(a["alpha"]) and a["alpha"] >= 0):
            raise ValueError(f"{field}[{i}].alpha: must be finite and >= 0, got {a['alpha']}")
        out.append(a)
    return out


__all__ = ["ARM_DEFAULTS", "LEVERS", "LOSS_POSITIONS", "FactsTask", "draw_facts", "eval_documents", "evaluate_pairs",
           "greedy_correct", "make_loss_fn", "make_sample_batch", "per_example_loss", "subject_sampler",
           "token_losses", "validate_arms"]
