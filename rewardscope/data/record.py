"""The one record every dataset is normalised to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GraderKind = Literal["math", "number", "choice", "organism"]

CHOICE_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Problem:
    """One problem. `answer` is the gold answer in the grader's normal form:

    - math: a LaTeX expression without `$` (MATH500's `answer`),
    - number: a plain number string, commas removed (GSM8K's `####` value),
    - choice: a letter A-E; the original label (e.g. ARC's "3") is kept in `metadata["label"]`,
    - organism: the final digit of the synthetic chain.
    `choices` holds the option texts in order for multiple-choice data (shown as A, B, C, ...), else None.
    """

    id: str
    question: str
    answer: str
    kind: GraderKind
    choices: tuple[str, ...] | None = None
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
