"""Agreement of a grader with labelled cases: how often it says what a person says.

Case files are JSONL; a first line without the case fields (a `header` object) describes the file and is
skipped. Two kinds, both used by the tests on tests/data/grading/ and usable on any labelled set:

    math pairs        {"pred", "gold", "equal": bool, "class", "split"}
    choice responses  {"response", "choices": [...] or null, "label": "B" or null, "split"}
                      (optionally "readings": [{"label", "note"}, ...], several people's blind readings, and
                      "adjudication": {"label", "rule", "note"} where they differ; "label" is then the agreed or
                      adjudicated one)

`split` ("heldout" / "tuning") says whether a case was written before the grader was tuned (see the files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rewardscope.grading.answers import choice_with_rule
from rewardscope.grading.grader import Grader


@dataclass
class Agreement:
    n: int
    agree: int
    misses: list = field(default_factory=list)  # (case, what the grader said)

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n else float("nan")

    def __str__(self) -> str:
        return f"{self.agree}/{self.n} = {self.rate:.1%}"


def read_cases(path: str | Path, fields: tuple[str, ...], split: str | None = None) -> list[dict]:
    """The cases of a file (those of one `split` if given); a row lacking `fields` must be a header."""
    from rewardscope.errors import RewardscopeError
    from rewardscope.io import read_jsonl

    cases = []
    for lineno, row in read_jsonl(path, with_lineno=True):
        if not all(f in row for f in fields):
            if "header" in row:
                continue
            raise RewardscopeError(f"{path}:{lineno}: a case needs the fields {', '.join(fields)}")
        if split is None or row.get("split") == split:
            cases.append(row)
    return cases


def cohen_kappa(first: list, second: list) -> float:
    """Cohen's kappa of two readings of the same cases: their agreement beyond what their label frequencies give
    by chance (1: always agree, 0: chance). Labels are any hashable values, None (no letter) among them."""
    if len(first) != len(second) or not first:
        raise ValueError(f"two readings of the same cases are needed, got {len(first)} and {len(second)} labels")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / n
    chance = sum(first.count(label) * second.count(label) for label in set(first) | set(second)) / n**2
    return 1.0 if chance == 1 else (observed - chance) / (1 - chance)


def choice_agreement(cases: list[dict], choice_fallback: bool = True) -> Agreement:
    """How often the letter extractor reads the `label` of each response (null: no letter)."""
    result = Agreement(len(cases), 0)
    for case in cases:
        choices = tuple(case["choices"]) if case.get("choices") else None
        letter, rule = choice_with_rule(case["response"], choices, fallback=choice_fallback)
        if letter == case["label"]:
            result.agree += 1
        else:
            result.misses.append((case, (letter, rule)))
    return result


def math_agreement(cases: list[dict], grader: Grader) -> Agreement:
    """How often a math Grader's verdict is the expected `equal` of each pair."""
    verdicts = grader.grade([c["pred"] for c in cases], [c["gold"] for c in cases])
    result = Agreement(len(cases), 0)
    for case, verdict in zip(cases, verdicts):
        if verdict.equal == case["equal"]:
            result.agree += 1
        else:
            result.misses.append((case, verdict))
    return result
