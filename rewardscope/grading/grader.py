"""Grade model answers against gold answers, keeping what was extracted so that every verdict can be audited.

Kinds: math (math-verify, in worker processes under a deadline), number (GSM8K), choice (A-E or numeric labels),
organism (the demo task's answer line). See docs/grading.md for what each accepts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from tqdm import tqdm

from rewardscope.errors import RewardscopeError
from rewardscope.grading.extract import choice_with_rule, extract_number, gold_choice, same_number
from rewardscope.grading.pool import DeadlinePool

KINDS = ("math", "number", "choice", "organism")
MATH_TASK = "rewardscope.grading.mathverify:grade_math"
MATH_PRELOAD = ("math_verify",)  # imported once by the forkserver (it starts no threads), so workers start fast
FILE_CHUNK = 256  # rows per progress-bar update in grade_file; big enough to keep every worker busy


@dataclass(frozen=True)
class Verdict:
    extracted: str | None  # answer string extracted from the prediction (auditable)
    gold_extracted: str | None  # normal form of the gold answer
    equal: bool
    # "correct" | "wrong" | "correct (fallback)" | "wrong (fallback)" (choice: the last-resort letter rule) |
    # "empty" | "no_answer" | "timeout" | "error: <msg>" (docs/grading.md)
    reason: str


ERROR_CHARS = 300  # an error message in a graded row: long enough to debug, short enough to read


class Grader:
    """Grades batches of predictions of one kind. Math answers are parsed and verified by math-verify in
    `workers` processes; one that takes longer than `timeout_s` is killed (verdict False, reason "timeout").
    Reuse one Grader for many batches (a worker costs about a second to start) and close it when done.
    `choice_fallback`: whether a response whose letter only the last-resort rule finds (the last standalone
    option letter) is graded; its reason then says "(fallback)". A row that makes a grader fail gets reward 0
    and reason "error: ...", never stops the batch."""

    def __init__(self, kind: str, timeout_s: float = 5.0, workers: int = 2, choice_fallback: bool = True):
        if kind not in KINDS:
            raise RewardscopeError(f"grade.kind: unknown grader {kind!r} (known: {', '.join(KINDS)})")
        self.kind, self.timeout_s, self.workers, self.choice_fallback = kind, timeout_s, workers, choice_fallback
        self._pool: DeadlinePool | None = None  # started on the first math batch

    def grade(self, preds: Sequence[str], golds: Sequence[str],
              choices: Sequence[tuple[str, ...] | None] | None = None) -> list[Verdict]:
        if len(preds) != len(golds) or (choices is not None and len(choices) != len(preds)):
            raise ValueError(f"grade: {len(preds)} preds, {len(golds)} golds"
                             + ("" if choices is None else f", {len(choices)} choice lists"))
        if self.kind == "math":
            return self._grade_math(preds, golds)
        choices = choices if choices is not None else [None] * len(preds)
        return [self._grade_safely(p, g, c) for p, g, c in zip(preds, golds, choices)]

    def _grade_safely(self, pred: str, gold: str, choices: tuple[str, ...] | None) -> Verdict:
        # One bad row (a type nobody expected, an extractor bug) costs that row, not the run: a shard's rows are
        # fixed by its seed, so an exception here would stop every resume at the same row.
        try:
            return self._grade_here(pred, gold, choices)
        except Exception as e:
            return Verdict(None, None, False, f"error: {type(e).__name__}: {e}"[:ERROR_CHARS])

    def _grade_math(self, preds: Sequence[str], golds: Sequence[str]) -> list[Verdict]:
        if not preds:
            return []
        if self._pool is None:
            self._pool = DeadlinePool(MATH_TASK, self.workers, self.timeout_s, preload=MATH_PRELOAD)
        verdicts = []
        for outcome in self._pool.map(list(zip(preds, golds))):
            value = outcome.value or {}
            if outcome.status == "ok":
                reason = value["reason"]
            else:
                reason = "timeout" if outcome.status == "timeout" else f"error: {outcome.error}"
            verdicts.append(Verdict(value.get("pred_extracted"), value.get("gold_extracted"),
                                    outcome.status == "ok" and value["equal"], reason))
        return verdicts

    def _grade_here(self, pred: str, gold: str, choices: tuple[str, ...] | None) -> Verdict:
        rule = None
        if self.kind == "number":
            gold_norm, pred_norm, same = extract_number(gold), extract_number(pred), same_number
        elif self.kind == "choice":
            choices = tuple(choices) if choices else None
            pred_norm, rule = choice_with_rule(pred, choices, fallback=self.choice_fallback)
            gold_norm, same = gold_choice(gold), str.__eq__
        else:  # organism: imported here, only this kind needs the organism package
            from rewardscope.organism.task import extract_answer

            gold_norm, pred_norm, same = gold.strip() or None, extract_answer(pred), str.__eq__
        if gold_norm is None:
            return Verdict(pred_norm, None, False, f"error: no {self.kind} answer in gold {gold[:80]!r}")
        if not pred.strip():
            return Verdict(None, gold_norm, False, "empty")
        if pred_norm is None:
            return Verdict(None, gold_norm, False, "no_answer")
        equal = same(pred_norm, gold_norm)
        reason = "correct" if equal else "wrong"
        return Verdict(pred_norm, gold_norm, equal, f"{reason} (fallback)" if rule == "fallback" else reason)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def grade_one(pred: str, gold: str, kind: str, choices: tuple[str, ...] | None = None,
              timeout_s: float = 5.0, choice_fallback: bool = True) -> Verdict:
    """One answer. For many, use a Grader: a math grade_one starts (and stops) a worker process."""
    with Grader(kind, timeout_s, workers=1, choice_fallback=choice_fallback) as grader:
        return grader.grade([pred], [gold], [choices])[0]


def grade_file(input: str, out: str, kind: str = "math", timeout_s: float = 5.0, workers: int = 2,
               choice_fallback: bool = True) -> dict:
    """Grade a JSONL file of rows with `pred`, `gold` (and optionally `choices`); write every row back with
    `pred_extracted`, `gold_extracted`, `equal` and `reason`. Returns counts, accuracy, reasons, and how many
    rows held text UTF-8 cannot encode (`escaped_rows`: written with \\u escapes, see io.write_jsonl)."""
    from rewardscope.io import read_jsonl, write_jsonl  # pyarrow: not needed by the worker processes

    numbered = list(read_jsonl(input, required=("pred", "gold"), with_lineno=True))
    if not numbered:
        raise RewardscopeError(f"{input}: no rows to grade")
    rows = [row for _, row in numbered]
    for n, row in numbered:
        for field in ("pred", "gold"):
            if not isinstance(row[field], str):
                raise RewardscopeError(f"{input}:{n}: field {field!r} must be a string, "
                                       f"got {type(row[field]).__name__}")
        choices = row.get("choices")
        if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
            raise RewardscopeError(f"{input}:{n}: field 'choices' must be a list of strings")
    verdicts: list[Verdict] = []
    with Grader(kind, timeout_s, workers, choice_fallback) as grader, \
            tqdm(total=len(rows), desc=f"grading ({kind})") as bar:
        for start in range(0, len(rows), FILE_CHUNK):
            chunk = rows[start:start + FILE_CHUNK]
            verdicts += grader.grade([r["pred"] for r in chunk], [r["gold"] for r in chunk],
                                     [r.get("choices") for r in chunk])
            bar.update(len(chunk))
    escaped = write_jsonl(out, ({**row, "pred_extracted": v.extracted, "gold_extracted": v.gold_extracted,
                       "equal": v.equal, "reason": v.reason} for row, v in zip(rows, verdicts)))
    equal = sum(v.equal for v in verdicts)
    return {"rows": len(rows), "equal": equal, "accuracy": equal / len(rows),
            # "error: <message>" rows are counted together under "error"
            "reasons": dict(Counter(v.reason.split(":")[0] for v in verdicts)), "escaped_rows": escaped,
            "out": str(out)}
