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


def offline_specs(folder) -> tuple[DatasetSpec, DatasetSpec]:
    """(train, test) specs of `write_offline_math`'s files: the real sets' fields and formats."""
    folder = Path(folder)
    train = dataclasses.replace(MATHINSTRUCT, path=str(folder / TRAIN_FILE))
    test = dataclasses.replace(GSM8K_TEST, path=str(folder / TEST_FILE), config=None)
    return train, test
