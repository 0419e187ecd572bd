"""Synthesis of hard-example variants (issue 8, item 4; seed 001's optional enhancement).

    cfg = SynthesisConfig(num_variants=2, temperature=0.8, keep="quantile", q=0.5)
    rows, report = synthesize(hard_rows, generator, generator_tok, cfg, key=jax.random.key(0),
                              score=score, score_args=args, score_tokenizer=proxy_tok,
                              template=template, hard_final_losses=losses_NxK[hard_N, -1],
                              exclude_train=[r.prompt for r in train_rows],
                              exclude_test=[r.prompt for r in test_rows])

The stages, each a function of its own:

1. `synthesis_prompt(row, cfg)`: the hard example shown to a generator model in `cfg.prompt_format`
   (default: the problem and its solution, then an instruction to write a new problem of the same
   kind with different numbers, ending in the problem marker, so that the model continues with
   "<new problem>\\nSolution: <its solution>").
2. `generate_variants`: our batched generation (`evaluate.model_generate_fn` on
   `models.lm.generate`), greedy or sampled; variant v of every example is decoded with the key
   `fold_in(key, v)`, so variants differ and the whole draw is a function of the key.
3. `parse_variant(text, cfg)`: the text up to the next problem marker, split at the solution
   marker into a `data.Row`; an unparseable generation is dropped and counted by reason
   ("no_solution_marker", "empty_problem", "empty_solution", "no_answer").
4. `deduplicate`: a variant whose problem equals a train or test problem (exactly or after
   `normalize_text`: NFKC, case-folded, whitespace collapsed) or an earlier variant is dropped,
   counted by which set it hit (a test hit is a leak that never reaches the output).
5. `rescore`: each surviving variant is tokenized exactly as training rows are
   (`data.tokenize_rows`, same template and `max_length`; too long ones are counted) and scored
   with the proxy's final checkpoint through `scoring.score_into`, i.e. the same per-example loss
   (`scoring.make_score_loss`: mean next-token loss over the response tokens) as the trajectories.
6. `keep_mask`: "quantile" keeps the variants with loss >= the `q`-quantile (numpy's linear
   interpolation) of the hard cluster's final-checkpoint losses; "top_m" keeps the `top_m`
   highest-loss variants (ties broken by generation order).

`variant_pairs` builds the (prompt, response) rows that teach a generator this format from pairs
of examples of the same source (used by the offline pipeline's from-scratch generator): its
response is exactly what `parse_variant` reads back.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Callable, Literal, Sequence

import jax
import numpy as np

from lsb_jax.llm.data import PromptTemplate, Row, ValidationReport, tokenize_rows
from lsb_jax.llm.evaluate import extract_answer, model_generate_fn
from lsb_jax.llm.scoring import score_into
from lsb_jax.tracking.trajectories import TrajectoryStore

DEFAULT_PROMPT = ("Problem: {prompt}\nSolution: {response}\n\n"
                  "Write a new problem of the same kind with different numbers, and its solution.\n\n"
                  "Problem:")
PARSE_REASONS = ("no_solution_marker", "empty_problem", "empty_solution", "no_answer")
DUP_REASONS = ("test_exact", "test_normalized", "train_exact", "train_normalized", "generated")


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """How variants are asked for, decoded, parsed and kept.

    prompt_format: shown to the generator, with `{prompt}` and `{response}` slots (the hard
      example); it should end with `problem_marker` so the model writes the new problem next.
    num_variants: generations per hard example (variant v decoded with `fold_in(key, v)`).
    temperature / top_k / top_p: 0 = greedy (then num_variants > 1 only repeats itself).
    require_answer: drop a solution from which `evaluate.extract_answer` reads no answer.
    keep: "quantile" (loss >= q-quantile of the hard cluster's final losses) or "top_m".
    """

    prompt_format: str = DEFAULT_PROMPT
    problem_marker: str = "Problem:"
    solution_marker: str = "Solution:"
    num_variants: int = 1
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 0.95
    batch_size: int = 32
    require_answer: bool = True
    keep: Literal["quantile", "top_m"] = "quantile"
    q: float = 0.5
    top_m: int = 0
    score_batch_size: int = 32
    bucket: int = 16

    def __post_init__(self):
        for slot in ("{prompt}", "{response}"):
            if slot not in self.prompt_format:
                raise ValueError(f"SynthesisConfig.prompt_format must contain {slot!r}")
        if not self.problem_marker.strip() or not self.solution_marker.strip():
            raise ValueError("SynthesisConfig: problem_marker and solution_marker must be non-empty")
        if self.num_variants < 1 or self.max_new_tokens < 1 or self.batch_size < 1 or self.score_batch_size < 1:
            raise ValueError("SynthesisConfig: num_variants, max_new_tokens, batch_size, score_batch_size >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"SynthesisConfig: temperature >= 0 and top_p in (0, 1], got {self.temperature}, "
                             f"{self.top_p}")
        if self.keep not in ("quantile", "top_m"):
            raise ValueError(f"SynthesisConfig.keep: expected 'quantile' or 'top_m', got {self.keep!r}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"SynthesisConfig.q must be in [0, 1], got {self.q}")
        if self.keep == "top_m" and self.top_m < 0:
            raise ValueError(f"SynthesisConfig.top_m must be >= 0, got {self.top_m}")


@dataclasses.dataclass
class SynthesisReport:
    """Counts per stage (generated -> parsed -> unique -> scored -> kept), drops by reason, and the
    loss statistics of the scored variants, the kept ones and the hard cluster's threshold."""

    generated: int = 0
    parsed: int = 0
    unparseable: dict[str, int] = dataclasses.field(default_factory=dict)
    duplicates: dict[str, int] = dataclasses.field(default_factory=dict)
    unique: int = 0
    too_long: int = 0
    scored: int = 0
    kept: int = 0
    threshold: float | None = None
    loss: dict = dataclasses.field(default_factory=dict)
    samples: list[str] = dataclasses.field(default_factory=list)   # the first raw generations

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, stripped: the dedup key."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def synthesis_prompt(row: Row, cfg: SynthesisConfig) -> str:
    return cfg.prompt_format.replace("{prompt}", row.prompt).replace("{response}", row.response)


def render_variant(row: Row, cfg: SynthesisConfig) -> str:
    """What a generator should write after `synthesis_prompt`: ' <problem>\\n<solution marker> <solution>'."""
    return f" {row.prompt}\n{cfg.solution_marker} {row.response}"


def parse_variant(text: str, cfg: SynthesisConfig) -> tuple[str, str] | str:
    """(problem, solution) of a generation, or the reason it is unparseable (`PARSE_REASONS`).

    The text is cut at the next `problem_marker` (a model that goes on to a third problem), then
    split at the first `solution_marker`; both parts are stripped.
    """
    text = text.split(cfg.problem_marker)[0]
    if cfg.solution_marker not in text:
        return "no_solution_marker"
    problem, solution = (s.strip() for s in text.split(cfg.solution_marker, 1))
    if not problem:
        return "empty_problem"
    if not solution:
        return "empty_solution"
    if cfg.require_answer and extract_answer(solution).answer is None:
        return "no_answer"
    return problem, solution


def variant_pairs(rows: Sequence[Row], cfg: SynthesisConfig, *, seed: int = 0) -> list[Row]:
    """Training rows for a generator: for every row a, a different row b of the same domain (drawn
    by a numpy Generator seeded by `seed`) gives prompt = synthesis_prompt(a), response =
    render_variant(b). Domains with a single row are skipped."""
    rng = np.random.default_rng(seed)
    by_domain: dict = {}
    position = []                    # row i is by_domain[domain][position[i]]
    for i, r in enumerate(rows):
        position.append(len(by_domain.setdefault(r.domain, [])))
        by_domain[r.domain].append(i)
    out = []
    for i, a in enumerate(rows):
        same = by_domain[a.domain]
        if len(same) < 2:
            continue
        j = same[(position[i] + rng.integers(1, len(same))) % len(same)]   # any other row of the domain
        out.append(Row(synthesis_prompt(a, cfg), render_variant(rows[j], cfg), a.domain, len(out)))
    return out


# ----------------------------------------------------------------------------- stages


def generate_variants(model, tokenizer, rows: Sequence[Row], cfg: SynthesisConfig, key: jax.Array | None
                      ) -> list[list[str]]:
    """texts[v][i]: variant v of row i, decoded by our batched generation (plain prompts, eos
    stops a row). Sampling (temperature > 0) needs `key`; variant v uses `fold_in(key, v)`."""
    if cfg.temperature > 0 and key is None:
        raise ValueError("generate_variants: sampling (temperature > 0) needs a PRNG key")
    prompts = [synthesis_prompt(r, cfg) for r in rows]
    texts = []
    for v in range(cfg.num_variants):
        sample = {} if cfg.temperature == 0 else dict(key=jax.random.fold_in(key, v), temperature=cfg.temperature,
                                                      top_k=cfg.top_k, top_p=cfg.top_p)
        generate_fn = model_generate_fn(model, tokenizer, PromptTemplate(kind="plain", prompt_format="{prompt}"),
                                        batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, **sample)
        texts.append(generate_fn(prompts))
    return texts


def deduplicate(candidates: Sequence[Row], *, train: Sequence[str] = (), test: Sequence[str] = ()
                ) -> tuple[list[Row], dict[str, int]]:
    """Candidates whose problem matches no test problem, no train problem and no earlier kept
    candidate (exactly, or after `normalize_text`); drops counted by the first rule that hit, in
    `DUP_REASONS` order (test first: a leak is reported as a leak)."""
    sets = {"test": (set(test), {normalize_text(t) for t in test}),
            "train": (set(train), {normalize_text(t) for t in train})}
    seen: set[str] = set()
    kept, dups = [], dict.fromkeys(DUP_REASONS, 0)
    for row in candidates:
        norm = normalize_text(row.prompt)
        reason = None
        for name, (exact, normalized) in sets.items():
            if row.prompt in exact:
                reason = f"{name}_exact"
            elif norm in normalized:
                reason = f"{name}_normalized"
            if reason:
                break
        if reason is None and norm in seen:
            reason = "generated"
        if reason:
            dups[reason] += 1
            continue
        seen.add(norm)
        kept.append(row)
    return kept, dups


def rescore(rows: Sequence[Row], tokenizer, template: PromptTemplate, score: Callable, score_args: tuple, *,
            max_length: int, batch_size: int = 32, bucket: int = 16, report: ValidationReport | None = None
            ) -> tuple[list[Row], np.ndarray]:
    """(rows that fit `max_length`, their losses [n]) under `score(*score_args, batch) -> [B]` (the
    proxy's `scoring.make_score_loss`, jitted), batched and length-sorted by `scoring.score_into`."""
    examples = tokenize_rows(list(rows), tokenizer, template, max_length=max_length, on_error="skip", report=report)
    if len(examples) == 0:
        return [], np.zeros(0, np.float32)
    store = TrajectoryStore(None, len(examples), (0,))
    score_into(store, 0, score, tuple(score_args), examples, batch_size=batch_size, bucket=bucket)
    return list(examples.rows), store.losses[:, 0].copy()


def keep_mask(losses_M, hard_final_losses, cfg: SynthesisConfig) -> tuple[np.ndarray, float | None]:
    """(mask [M] of the kept variants, the loss threshold or None for top_m); see the module
    docstring. NaN losses are never kept."""
    losses_M = np.asarray(losses_M, np.float64)
    finite = np.isfinite(losses_M)
    if cfg.keep == "top_m":
        order = np.argsort(-np.where(finite, losses_M, -np.inf), kind="stable")[:min(cfg.top_m, int(finite.sum()))]
        mask = np.zeros(len(losses_M), bool)
        mask[order] = True
        return mask, None
    hard = np.asarray(hard_final_losses, np.float64)
    if hard.size == 0 or not np.isfinite(hard).all():
        raise ValueError("keep_mask: the hard cluster's final losses must be a non-empty finite array")
    threshold = float(np.quantile(hard, cfg.q))
    return finite & (losses_M >= threshold), threshold


def _stats(x: np.ndarray) -> dict | None:
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return None
    std = float(x.std(ddof=1)) if x.size > 1 else float("nan")     # sample std (analysis.mean_std's convention)
    return {"n": int(x.size), "mean": float(x.mean()), "std": std, "min": float(x.min()),
            "median": float(np.median(x)), "max": float(x.max())}


def synthesize(hard_rows: Sequence[Row], model, tokenizer, cfg: SynthesisConfig, *, key: jax.Array | None,
               score: Callable, score_args: tuple, score_tokenizer, template: PromptTemplate, max_length: int,
               hard_final_losses, exclude_train: Sequence[str] = (), exclude_test: Sequence[str] = (),
               first_source_row: int = 0) -> tuple[list[Row], np.ndarray, SynthesisReport]:
    """Variants of `hard_rows` that the proxy still finds hard: (kept rows, their proxy losses,
    report). Stages in the module docstring; `model`/`tokenizer` generate, `score`/`score_args`/
    `score_tokenizer` re-score as the trajectories were scored (`template`, `max_length` of the
    training rows). Kept rows get domain = their source's domain and source_row numbers from
    `first_source_row` (beyond the training rows, so `pipeline.align_counts` leaves them at 1)."""
    report = SynthesisReport(unparseable=dict.fromkeys(PARSE_REASONS, 0))
    texts = generate_variants(model, tokenizer, hard_rows, cfg, key)
    report.samples = [t for per_variant in texts for t in per_variant][:5]
    candidates = []
    for per_variant in texts:
        for row, text in zip(hard_rows, per_variant, strict=True):
            report.generated += 1
            got = parse_variant(text, cfg)
            if isinstance(got, str):
                report.unparseable[got] += 1
                continue
            candidates.append(Row(got[0], got[1], row.domain, -1))
    report.parsed = len(candidates)
    unique, report.duplicates = deduplicate(candidates, train=exclude_train, test=exclude_test)
    report.unique = len(unique)
    unique = [dataclasses.replace(r, source_row=first_source_row + i) for i, r in enumerate(unique)]
    validation = ValidationReport("synthesis")
    scored, losses = rescore(unique, score_tokenizer, template, score, score_args, max_length=max_length,
                             batch_size=cfg.score_batch_size, bucket=cfg.bucket, report=validation)
    report.too_long, report.scored = validation.num_skipped, len(scored)
    mask, report.threshold = keep_mask(losses, hard_final_losses, cfg)
    kept = [r for r, m in zip(scored, mask) if m]
    kept = [dataclasses.replace(r, source_row=first_source_row + i) for i, r in enumerate(kept)]
    report.kept = len(kept)
    report.loss = {"scored": _stats(losses), "kept": _stats(losses[mask]),
                   "hard_final": _stats(np.asarray(hard_final_losses))}
    return kept, losses[mask], report
