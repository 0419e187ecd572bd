"""Math instruction data: the real datasets' specs and offline look-alikes from reasoning-gym.

    MATHINSTRUCT, GSM8K_TEST, MATH_TEST                       # hub specs (GPU users, network)
    paths = write_offline_math("data/offline_math", OfflineMathConfig(seed=0))
    train_spec, test_spec = offline_specs("data/offline_math")  # same fields as the real sets

The offline train set mimics TIGER-Lab/MathInstruct: rows {"instruction", "output", "source"},
outputs a short worked solution ending "The answer is x." (MathInstruct's chain-of-thought
style), `source` the generator (the domain column). The offline test set mimics openai/gsm8k:
rows {"question", "answer"} with the answer a worked solution ending "#### x". Generators are
reasoning-gym's procedural ones that work offline: `gsm_symbolic` (GSM8K-style word problems
with a step-by-step solution), `basic_arithmetic`, `chain_sum`, `simple_equations` (easier
items, so the hard/easy split of the proxy losses has something to find). Each generator gets
its own seed derived from (seed, generator index); test questions never appear in the train set.

The planted family (`PlantedMathConfig`, `write_planted_math`) knows each row's difficulty: sums
of one-digit terms joined by + or -, each row of a level with that level's number of terms
(default: "easy" 2 terms, "hard" 3), the level written in the row's `level` column. The
response is only "The answer is x." (no worked line): a per-example loss is the mean over
response tokens, so a worked line that repeats the expression would dilute the answer's loss by
a length that grows with the number of terms, and the difficulty the proxy should find would be
partly hidden by the length. Train and test rows are independent draws of the same family (each
level's rows its share of the size to within one row), so a test question may also be a train question
(2 one-digit terms have only 200 problems): the upsample report gives the fraction per level.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from lsb_jax import io
from lsb_jax.llm.data import DatasetSpec

MATHINSTRUCT = DatasetSpec("TIGER-Lab/MathInstruct", split="train", prompt_field="instruction",
                           response_field="output", domain_field="source")
GSM8K_TEST = DatasetSpec("openai/gsm8k", config="main", split="test", prompt_field="question",
                         response_field="answer", answer_format="gsm8k")
MATH_TEST = DatasetSpec("HuggingFaceH4/MATH-500", split="test", prompt_field="problem", response_field="answer",
                        domain_field="subject", answer_format="raw")  # the 500-problem MATH test subset

TRAIN_FILE, TEST_FILE = "train.jsonl", "test.jsonl"


@dataclasses.dataclass(frozen=True)
class OfflineMathConfig:
    """train: (reasoning-gym generator, number of rows) pairs; test: one generator and size."""

    train: tuple[tuple[str, int], ...] = (("gsm_symbolic", 400), ("basic_arithmetic", 200),
                                          ("chain_sum", 200), ("simple_equations", 200))
    test_generator: str = "gsm_symbolic"
    test_size: int = 200
    seed: int = 0

    def __post_init__(self):
        if not self.train or any(n < 1 for _, n in self.train) or self.test_size < 1:
            raise ValueError("OfflineMathConfig: every size must be >= 1")


def _seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _items(name: str, size: int, seed: int) -> list[dict]:
    import reasoning_gym  # noqa: PLC0415

    ds = reasoning_gym.create_dataset(name, size=size, seed=seed)
    return [ds[i] for i in range(size)]


def worked_solution(item: dict) -> tuple[str, str]:
    """(steps, answer) of a reasoning-gym item: gsm_symbolic's chain of thought without its
    "#### x" line, or one line built from the item's expression / equation."""
    answer, meta = str(item["answer"]).strip(), item.get("metadata", {})
    if "answer_cot" in meta:
        steps = re.sub(r"\n?####[^\n]*\s*$", "", meta["answer_cot"].strip()).strip()
    elif "equation" in meta and "variable" in meta:
        steps = f"Solving {meta['equation']} for {meta['variable']} gives {meta['variable']} = {answer}."
    elif "expression" in meta:
        steps = f"{str(meta['expression']).strip().rstrip('=').strip()} = {answer}."
    else:
        steps = ""
    return steps, answer


def instruct_rows(cfg: OfflineMathConfig, exclude: set[str] = frozenset()) -> list[dict]:
    """MathInstruct-like rows, generators in order, questions in `exclude` dropped."""
    rows = []
    for j, (name, size) in enumerate(cfg.train):
        for item in _items(name, size, _seed(cfg.seed, j)):
            if item["question"] in exclude:
                continue
            steps, answer = worked_solution(item)
            output = (steps + "\n" if steps else "") + f"The answer is {answer}."
            rows.append({"instruction": item["question"], "output": output, "source": f"rg_{name}"})
    return rows


def gsm_rows(cfg: OfflineMathConfig) -> list[dict]:
    """GSM8K-like rows: {"question", "answer": steps + "\\n#### x"}."""
    rows = []
    for item in _items(cfg.test_generator, cfg.test_size, _seed(cfg.seed, 10_000)):
        steps, answer = worked_solution(item)
        rows.append({"question": item["question"], "answer": (steps + "\n" if steps else "") + f"#### {answer}"})
    return rows


def write_offline_math(folder, cfg: OfflineMathConfig = OfflineMathConfig()) -> dict[str, Path]:
    """Write train.jsonl and test.jsonl (atomically) into `folder`; returns their paths."""
    folder = Path(folder)
    test = gsm_rows(cfg)
    train = instruct_rows(cfg, exclude={r["question"] for r in test})
    paths = {}
    for name, file, rows in (("train", TRAIN_FILE, train), ("test", TEST_FILE, test)):
        paths[name] = io.write_text(folder / file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return paths


@dataclasses.dataclass(frozen=True)
class PlantedMathConfig:
    """levels: (name, number of terms, share) from easiest to hardest (shares sum to 1); sizes of
    the train and test sets; terms are 0..max_digit."""

    levels: tuple[tuple[str, int, float], ...] = (("easy", 2, 0.5), ("hard", 3, 0.5))
    train_size: int = 800
    test_size: int = 1000
    max_digit: int = 9
    seed: int = 0

    def __post_init__(self):
        names = [name for name, _, _ in self.levels]
        if not self.levels or len(set(names)) != len(names):
            raise ValueError(f"PlantedMathConfig.levels: need distinct level names, got {names}")
        if any(terms < 1 or share <= 0 for _, terms, share in self.levels):
            raise ValueError("PlantedMathConfig.levels: every level needs >= 1 terms and a share > 0")
        if abs(sum(share for _, _, share in self.levels) - 1.0) > 1e-9:
            raise ValueError("PlantedMathConfig.levels: the shares must sum to 1")
        if min(self.train_size, self.test_size, self.max_digit) < 1:
            raise ValueError("PlantedMathConfig: train_size, test_size and max_digit must be >= 1")

    @property
    def hardest(self) -> str:
        return self.levels[-1][0]


PLANTED_SOURCE = "planted_sum"


def level_sizes(levels, size: int) -> list[int]:
    """Rows per level, summing to `size`, by largest remainder: floor(share * size) each, and the
    rows left over go one each to the levels with the largest fractional parts (ties to the first
    level), so every level is within one row of its share."""
    shares = np.array([share for _, _, share in levels], np.float64)
    quota = size * shares / shares.sum()
    sizes = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - sizes), kind="stable")
    sizes[order[:size - int(sizes.sum())]] += 1
    return [int(n) for n in sizes]


def planted_items(cfg: PlantedMathConfig, size: int, stream: int) -> list[tuple[str, str, int]]:
    """(level, expression, value) of `size` problems in a seeded random order, each level exactly
    `level_sizes` of them."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, stream]))
    levels = [i for i, n in enumerate(level_sizes(cfg.levels, size)) for _ in range(n)]
    out = []
    for i in rng.permutation(levels):
        name, terms, _ = cfg.levels[i]
        digits = rng.integers(0, cfg.max_digit + 1, terms)
        signs = rng.integers(0, 2, terms - 1)
        expr = str(digits[0]) + "".join(f" {'-' if s else '+'} {d}" for s, d in zip(signs, digits[1:]))
        value = int(digits[0] + np.sum(np.where(signs, -1, 1) * digits[1:]))
        out.append((name, expr, value))
    return out


def planted_rows(cfg: PlantedMathConfig) -> tuple[list[dict], list[dict]]:
    """(train rows {"instruction", "output", "source", "level"}, test rows {"question", "answer":
    "#### x", "level"}): MathInstruct- and GSM8K-shaped, the planted level in `level`."""
    train = [{"instruction": f"What is {e}?", "output": f"The answer is {v}.", "source": PLANTED_SOURCE,
              "level": lvl} for lvl, e, v in planted_items(cfg, cfg.train_size, 0)]
    test = [{"question": f"What is {e}?", "answer": f"#### {v}", "level": lvl}
            for lvl, e, v in planted_items(cfg, cfg.test_size, 10_000)]
    return train, test


def write_planted_math(folder, cfg: PlantedMathConfig = PlantedMathConfig()) -> dict[str, Path]:
    """`planted_rows` written (atomically) as train.jsonl and test.jsonl into `folder`."""
    folder = Path(folder)
    train, test = planted_rows(cfg)
    return {name: io.write_text(folder / file, "".join(json.dumps(r) + "\n" for r in rows))
            for name, file, rows in (("train", TRAIN_FILE, train), ("test", TEST_FILE, test))}


def offline_specs(folder) -> tuple[DatasetSpec, DatasetSpec]:
    """(train, test) specs of `write_offline_math`'s files: the real sets' fields and formats."""
    folder = Path(folder)
    train = dataclasses.replace(MATHINSTRUCT, path=str(folder / TRAIN_FILE))
    test = dataclasses.replace(GSM8K_TEST, path=str(folder / TEST_FILE), config=None)
    return train, test
