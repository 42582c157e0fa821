"""The one record every dataset is normalised to."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardscope.grading.answers import CHOICE_LETTERS  # noqa: F401 (its home: the choice grader reads them)

GraderKind = str  # a kind of rewardscope.grading.grader_kinds(): math, number, choice, organism, or registered


@dataclass(frozen=True)
class Problem:
    """One problem. `answer` is the gold answer in the grader's normal form:

    - math: a LaTeX expression without `$` (MATH500's `answer`),
    - number: a plain number string, commas removed (GSM8K's `####` value),
    - choice: a letter A-E; the original label (e.g. ARC's "3") is kept in `metadata["label"]`,
    - organism: the final digit of the synthetic chain;
    - a registered kind: the text its grader's `gold` reads (docs/datasets.md, "Registering a dataset").
    `choices` holds the option texts in order for multiple-choice data (shown as A, B, C, ...), else None.
    """

    id: str
    question: str
    answer: str
    kind: GraderKind
    choices: tuple[str, ...] | None = None
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
