"""The LLM experiments' arm table: one place that says what each arm name means.

An arm changes the target's fine-tuning data and/or its optimizer:

    selection  which proxy-scored examples get `factor` copies (`tracking.clustering.SELECTIONS`,
               computed by `tracking.clustering.selection_counts`)
    sam        the target's optimizer gets SAM (radius: the experiment's `sam_rho`)
    synth      the arm's data also holds the kept synthesized variants of the hard examples

`PAPER_ARMS` are seed 001's five (its Table 1 order) and its ablation that clusters the final loss
alone instead of the trajectories; `ARMS` adds hard upsampling with synthesized variants. Reports
list arms in `ARMS` order.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from lsb_jax.tracking.clustering import SELECTIONS


@dataclasses.dataclass(frozen=True)
class LLMArm:
    selection: str
    sam: bool = False
    synth: bool = False

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise ValueError(f"LLMArm: unknown selection {self.selection!r}; expected one of {SELECTIONS}")


ARMS: dict[str, LLMArm] = {
    "baseline": LLMArm("uniform"),
    "upsample_hard": LLMArm("hard"),
    "upsample_easy": LLMArm("easy"),
    "random": LLMArm("random"),
    "sam": LLMArm("uniform", sam=True),
    "upsample_final_loss": LLMArm("final_loss"),
    "upsample_hard+synth": LLMArm("hard", synth=True),
}
PAPER_ARMS: tuple[str, ...] = ("baseline", "upsample_hard", "upsample_easy", "random", "sam", "upsample_final_loss")


def check_arms(names: Sequence[str], field: str = "arms") -> tuple[str, ...]:
    """The names, validated against `ARMS` (a one-line error naming the field)."""
    unknown = [a for a in names if a not in ARMS]
    if unknown or not names:
        raise ValueError(f"{field}: unknown {unknown}; expected some of {tuple(ARMS)}")
    return tuple(names)


def ordered(names) -> list[str]:
    """`names` in the table's order, then any others as given (report rows)."""
    names = list(names)
    return [a for a in ARMS if a in names] + [a for a in names if a not in ARMS]


__all__ = ["ARMS", "LLMArm", "PAPER_ARMS", "check_arms", "ordered"]
