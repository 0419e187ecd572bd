"""Generation-based evaluation on GSM8K/MATH-style test sets.

    rows, _ = read_validated(GSM8K_TEST)                       # lsb_jax.llm.data / mathdata
    generate_fn = model_generate_fn(model, tokenizer, PromptTemplate(), max_new_tokens=256)
    records, summary = evaluate_generation(rows, generate_fn, answer_format="gsm8k")
    markdown, table = comparison_table({"baseline": {"gsm8k": summary}, "upsample_hard": {...}})

Arm comparisons with intervals are the experiments' claims (`lsb_jax.claims`), not this module's.

A completion's answer is extracted by the first rule that matches (`extract_answer`): the GSM8K
marker "#### x", the last `\\boxed{...}` (balanced braces), the last "The answer is x", else the
last number in the text; a "####" or "answer is" span that is a number followed by words ("18
dollars") is that number. The gold answer is read from the reference by the set's
`answer_format`. A prediction is correct when both parse as numbers and agree to a relative
1e-6, else when `math_verify.verify(parse(gold), parse(prediction))` holds (both read as inline
math, $...$) (symbolic
equivalence: 1/2 = \\frac{1}{2} = 0.5), else when the normalized strings are equal.

Accuracy comes with a Wilson score interval: for k correct of n, p^ = k/n and z the normal
quantile of (1 + confidence) / 2, the interval is the set of p with |p^ - p| <= z sqrt(p(1-p)/n),

    (p^ + z^2/2n -+ z sqrt(p^(1-p^)/n + z^2/4n^2)) / (1 + z^2/n),

which, unlike the Wald interval, stays inside [0, 1] and is not empty at p^ = 0 or 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from lsb_jax.llm.arms import ordered
from lsb_jax.llm.data import PromptTemplate, Row, encode_prompt, end_of_turn_ids, pad_token_id

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"the (?:final )?answer is\s*:?\s*", re.IGNORECASE)
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")   # the rest of the marker's own line
# a number then words only, the first of 2+ letters ("18 dollars", "$1,200 in total"); "2 x",
# "2 sqrt(3)" or "5 cm^2" stay whole
_NUMBER_WITH_UNIT = re.compile(r"\$?\s*(" + _NUMBER.pattern + r")\s*\$?\s+[^\W\d_]{2,}[\w'-]*"
                               r"(?:\s+[^\W\d_][\w'-]*)*\s*[.!]?")


# ----------------------------------------------------------------------------- answers


@dataclasses.dataclass(frozen=True)
class Extraction:
    answer: str | None
    rule: str  # "gsm8k", "boxed", "answer_is", "last_number" or "none"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with balanced braces, else None."""
    for start in sorted((m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)), reverse=True):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def normalize_answer(answer: str) -> str:
    """Strip whitespace, surrounding $...$, a trailing period and thousands separators."""
    a = answer.strip()
    while len(a) >= 2 and a[0] == "$" and a[-1] == "$":
        a = a[1:-1].strip()
    a = a.rstrip(".").strip()
    if a.startswith("$") and _NUMBER.fullmatch(a[1:].replace(" ", "")):  # a dollar amount
        a = a[1:]
    if _NUMBER.fullmatch(a):
        a = a.replace(",", "")
    return a


def _drop_unit(answer: str) -> str:
    """"18 dollars", "$18 in total" -> "18": a number followed by words only is the number (lm-eval's
    flexible extract); anything else ("x + 1", "3/4", "2 sqrt(3)", "\\frac{1}{2}") is kept whole."""
    m = _NUMBER_WITH_UNIT.fullmatch(answer)
    return normalize_answer(m.group(1)) if m else answer


def extract_answer(text: str) -> Extraction:
    """The answer of a completion by the first matching rule (module docstring)."""
    hits = _GSM8K.findall(text)
    if hits and hits[-1].strip():
        return Extraction(_drop_unit(normalize_answer(hits[-1])), "gsm8k")
    boxed = last_boxed(text)
    if boxed:
        return Extraction(normalize_answer(boxed), "boxed")
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        rest = text[matches[-1].end():].split("\n")[0].strip()
        rest = re.split(r"\.(?:\s|$)", rest)[0]  # up to the sentence's end (not a decimal point)
        if rest.strip():
            return Extraction(_drop_unit(normalize_answer(rest)), "answer_is")
    numbers = _NUMBER.findall(text)
    if numbers:
        return Extraction(normalize_answer(numbers[-1]), "last_number")
    return Extraction(None, "none")


def gold_answer(reference: str, answer_format: str) -> str:
    """The gold answer of a reference solution: "gsm8k" (after the last "####"), "boxed" (last
    \\boxed{}), "raw" (the whole field) or "extract" (`extract_answer`)."""
    if answer_format == "raw":
        return normalize_answer(reference)
    if answer_format == "gsm8k":
        hits = _GSM8K.findall(reference)
        if not hits or not hits[-1].strip():
            raise ValueError(f"no '#### answer' in the reference: {reference[-80:]!r}")
        return normalize_answer(hits[-1])
    if answer_format == "boxed":
        boxed = last_boxed(reference)
        if boxed is None:
            raise ValueError(f"no \\boxed{{}} in the reference: {reference[-80:]!r}")
        return normalize_answer(boxed)
    if answer_format == "extract":
        got = extract_answer(reference).answer
        if got is None:
            raise ValueError(f"no answer found in the reference: {reference[-80:]!r}")
        return got
    raise ValueError(f"unknown answer_format {answer_format!r}")


def _as_number(a: str) -> float | None:
    """A plain number (thousands separators only where they group digits by three; "3,5" is not one)."""
    a = a.strip().removesuffix("%").strip()
    if _NUMBER.fullmatch(a):
        a = a.replace(",", "")
    elif "," in a:
        return None
    try:
        return float(a)
    except ValueError:
        return None


def answers_match(prediction: str | None, gold: str) -> bool:
    """Numeric equality (relative 1e-6; absolute 1e-12 near 0), else math-verify equivalence, else
    equal strings."""
    if prediction is None:
        return False
    p, g = _as_number(prediction), _as_number(gold)
    if p is not None and g is not None:
        return math.isclose(p, g, rel_tol=1e-6, abs_tol=1e-12)
    # math-verify's timeouts use signal.alarm, which only the main thread may set
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        from math_verify import parse, verify  # noqa: PLC0415

        def parse_math(a: str):  # bare LaTeX parses badly ("x + 1" -> 1): read it as inline math
            return parse(f"${a}$", parsing_timeout=timeout) or parse(a, parsing_timeout=timeout)

        parsed_g, parsed_p = parse_math(gold), parse_math(prediction)
        if parsed_g and parsed_p and verify(parsed_g, parsed_p, timeout_seconds=timeout):
            return True
    except Exception:  # noqa: BLE001 (a parser failure is a non-match, never a crash)
        pass
    return re.sub(r"\s+", "", prediction) == re.sub(r"\s+", "", gold)


# ----------------------------------------------------------------------------- accuracy


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k / n (module docstring; scipy's
    `binomtest(k, n).proportion_ci(method="wilson")`); (0, 1) if n = 0."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    ci = stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
    # the bounds are exactly 0 at k = 0 and 1 at k = n (the formula rounds to within 1e-16)
    return (0.0 if k == 0 else float(ci.low)), (1.0 if k == n else float(ci.high))


def accuracy_summary(correct: Sequence[bool], confidence: float = 0.95) -> dict:
    """{n, correct, accuracy, ci_low, ci_high, ci_method: "wilson", confidence}."""
    c = np.asarray(correct, bool)
    n, k = int(c.size), int(c.sum())
    lo, hi = wilson_interval(k, n, confidence)
    return {"n": n, "correct": k, "accuracy": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi,
            "ci_method": "wilson", "confidence": confidence}


# ----------------------------------------------------------------------------- generation


def evaluate_completions(rows: Sequence[Row], completions: Sequence[str], *, answer_format: str,
                         confidence: float = 0.95) -> tuple[list[dict], dict]:
    """Per-example records (example id = position in `rows`) and the accuracy summary."""
    if len(rows) != len(completions):
        raise ValueError(f"{len(rows)} rows but {len(completions)} completions")
    records = []
    for i, (row, completion) in enumerate(zip(rows, completions)):
        gold = gold_answer(row.response, answer_format)
        got = extract_answer(completion)
        records.append({"example_id": i, "source_row": row.source_row, "domain": row.domain,
                        "question": row.prompt, "gold": gold, "completion": completion,
                        "prediction": got.answer, "rule": got.rule,
                        "correct": answers_match(got.answer, gold)})
    summary = accuracy_summary([r["correct"] for r in records], confidence)
    summary["no_answer"] = sum(r["prediction"] is None for r in records)
    return records, summary


def evaluate_generation(rows: Sequence[Row], generate_fn: Callable[[list[str]], list[str]], *,
                        answer_format: str, confidence: float = 0.95) -> tuple[list[dict], dict]:
    """Generate a completion per question (`generate_fn(questions) -> completions`, e.g.
    `model_generate_fn`) and score it (`evaluate_completions`)."""
    completions = list(generate_fn([r.query for r in rows]))
    return evaluate_completions(rows, completions, answer_format=answer_format, confidence=confidence)


def model_generate_fn(model, tokenizer, template: PromptTemplate = PromptTemplate(), *, batch_size: int = 16,
                      max_new_tokens: int = 256, stop_strings: Sequence[str] = (),
                      stop_token_ids: Sequence[int] | None = None, **generate_kwargs
                      ) -> Callable[[list[str]], list[str]]:
    """`generate_fn` decoding with our `models.lm.generate` (greedy unless `generate_kwargs`
    sample). Questions are templated exactly as in training (`data.encode_prompt`), sorted by
    length and cut into batches of `batch_size` (the last padded with repeats, so one program
    per prompt-length bucket); rows stop at eos and at a chat template's end-of-turn token
    (`data.end_of_turn_ids`), or at `stop_token_ids` when given, then at `stop_strings`.
    Sampling (`key=` in `generate_kwargs`): question i draws with `fold_in(key, i)`, whatever its
    batch, so its completion does not depend on `batch_size` or on the other questions."""
    from lsb_jax.models.lm.generate import generate, truncate_at_stop_strings  # noqa: PLC0415

    pad_id = pad_token_id(tokenizer)
    if stop_token_ids is None:   # eos, and a chat template's end-of-turn token (often not eos)
        eos = () if tokenizer.eos_token_id is None else (int(tokenizer.eos_token_id),)
        stop_token_ids = tuple(dict.fromkeys(eos + end_of_turn_ids(tokenizer, template)))
    stops = stop_token_ids

    key = generate_kwargs.pop("key", None)

    def generate_fn(questions: list[str]) -> list[str]:
        ids = [encode_prompt(tokenizer, template, q) for q in questions]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out: list[str | None] = [None] * len(ids)
        for start in range(0, len(order), batch_size):
            chunk = list(order[start:start + batch_size])
            rows = chunk + [chunk[-1]] * (batch_size - len(chunk))
            P = max(len(ids[i]) for i in rows)
            prompt_BxP = np.array([[pad_id] * (P - len(ids[i])) + ids[i] for i in rows], np.int32)
            mask_BxP = np.array([[0] * (P - len(ids[i])) + [1] * len(ids[i]) for i in rows], np.int32)
            if key is not None:
                generate_kwargs["key"] = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(rows))
            tokens_BxN, lengths_B = generate(model, prompt_BxP, mask_BxP, max_new_tokens=max_new_tokens,
                                             stop_token_ids=stops, pad_id=pad_id, **generate_kwargs)
            tokens_BxN, lengths_B = np.asarray(tokens_BxN), np.asarray(lengths_B)
            for b, i in enumerate(chunk):
                text = tokenizer.decode(tokens_BxN[b, :lengths_B[b]], skip_special_tokens=True)
                out[i] = truncate_at_stop_strings(text, stop_strings)
        return out

    return generate_fn


def to_jsonl(records: Sequence[Mapping]) -> str:
    """Records as JSON lines (write with `lsb_jax.io.write_text` or the run context)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# ----------------------------------------------------------------------------- comparison


def comparison_table(results: Mapping[str, Mapping[str, Mapping]], *, baseline: str = "baseline",
                     arms: Sequence[str] | None = None, digits: int = 1) -> tuple[str, list[dict]]:
    """Markdown and JSON tables of accuracy over arms x test sets.

    results[arm][test_set] is an `accuracy_summary`. Arms are listed in `arms` order (default:
    `lsb_jax.llm.arms.ARMS` first, then the others as given). Each cell is "acc% [ci_low, ci_high]"; the
    delta columns are accuracy - baseline accuracy in points and the relative gain
    (acc / baseline - 1) in %. JSON rows: {arm, test_set, n, correct, accuracy, ci_low, ci_high,
    ci_method, delta, relative_gain} (delta fields None without a baseline)."""
    if arms is None:
        arms = ordered(results)
    sets: list[str] = []
    for arm in arms:
        sets += [s for s in results.get(arm, {}) if s not in sets]
    base = results.get(baseline, {})
    rows, header = [], ["arm"]
    for s in sets:
        header += [f"{s} acc % (95% CI)" if _conf(results, s) == 0.95 else f"{s} acc % (CI)", f"{s} Δ pts",
                   f"{s} Δ rel %"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    pct = lambda x: f"{100 * x:.{digits}f}"  # noqa: E731
    for arm in arms:
        cells = [arm]
        for s in sets:
            r = results.get(arm, {}).get(s)
            if r is None:
                cells += ["—", "—", "—"]
                continue
            b = base.get(s)
            delta = rel = None
            if b is not None and arm != baseline:
                delta = r["accuracy"] - b["accuracy"]
                rel = r["accuracy"] / b["accuracy"] - 1 if b["accuracy"] > 0 else None
            cells += [f"{pct(r['accuracy'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}] (n={r['n']})",
                      "—" if delta is None else f"{100 * delta:+.{digits}f}",
                      "—" if rel is None else f"{100 * rel:+.{digits}f}"]
            rows.append({"arm": arm, "test_set": s, "n": r["n"], "correct": r.get("correct"),
                         "accuracy": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                         "ci_method": r.get("ci_method"), "delta": delta, "relative_gain": rel})
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


def _conf(results, test_set) -> float | None:
    for per_set in results.values():
        if test_set in per_set:
            return per_set[test_set].get("confidence")
    return None
