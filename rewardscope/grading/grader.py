"""Grade model answers against gold answers, keeping what was extracted so that every verdict can be audited.

Kinds: math (math-verify, in worker processes under a deadline) and choice (A-E or numeric labels, with the
option texts) are built in; every other kind is a `GraderSpec` in the registry: number (GSM8K) is registered
here, organism (the demo task's answer line) by rewardscope.organism, and any package can add its own with
`register_grader`. See docs/grading.md for what each accepts.

A kind another package provides is declared in GRADER_ENTRY_POINTS as "module:function": the function (which
calls register_grader) is imported the first time the kind is asked for, so grading never imports that package
up front and no import cycle can form.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm import tqdm

from rewardscope.config import GradeConfig
from rewardscope.errors import RewardscopeError
from rewardscope.grading.answers import choice_with_rule, extract_number, gold_choice, same_number
from rewardscope.grading.pool import DeadlinePool

MATH_TASK = "rewardscope.grading.mathverify:grade_math"
MATH_PRELOAD = ("math_verify",)  # imported once by the forkserver (it starts no threads), so workers start fast
FILE_CHUNK = 256  # rows per progress-bar update in grade_file; big enough to keep every worker busy
_DEFAULTS = GradeConfig()  # the one home of the grading defaults (timeout_s, workers): the recipe's


def _stripped(gold: str) -> str | None:
    return gold.strip() or None


@dataclass(frozen=True)
class GraderSpec:
    """How one kind of answer is graded, in the calling process (no deadline: extraction must be fast).

    extract(response) -> the answer in normal form, or None when the response holds none;
    gold(gold) -> the gold answer in normal form, or None when it is unusable (verdict "error: ...");
    equal(extracted, gold normal form) -> whether they are the same answer."""

    extract: Callable[[str], str | None]
    equal: Callable[[str, str], bool] = str.__eq__
    gold: Callable[[str], str | None] = _stripped


_BUILTIN = ("math", "number", "choice")  # math and choice are graded by the Grader itself (options, workers)
_GRADERS: dict[str, GraderSpec] = {"number": GraderSpec(extract_number, same_number, extract_number)}
# Kinds registered by another package, on first use: kind -> "module:function" (the function registers it).
GRADER_ENTRY_POINTS: dict[str, str] = {"organism": "rewardscope.organism:add_grader"}


def register_grader(kind: str, extract: Callable[[str], str | None], equal: Callable[[str, str], bool] = str.__eq__,
                    gold: Callable[[str], str | None] = _stripped, *, replace: bool = False) -> None:
    """Make `kind` gradable: Grader(kind), grade.kind, data.kind and Problem.kind accept it from now on.

    `extract`, `equal` and `gold` are those of GraderSpec (gold's default: the gold text stripped). A kind
    already registered is refused unless `replace`; the built-in math and choice kinds cannot be replaced."""
    if not isinstance(kind, str) or not kind or kind != kind.strip():
        raise RewardscopeError(f"register_grader: kind {kind!r} must be a non-empty name without outer spaces")
    if kind in ("math", "choice"):
        raise RewardscopeError(f"register_grader: {kind!r} is built in and cannot be replaced")
    if kind in _GRADERS and not replace:
        raise RewardscopeError(f"register_grader: kind {kind!r} is already registered (pass replace=True)")
    for name, fn in (("extract", extract), ("equal", equal), ("gold", gold)):
        if not callable(fn):
            raise RewardscopeError(f"register_grader({kind!r}): {name} must be callable, got {fn!r}")
    _GRADERS[kind] = GraderSpec(extract, equal, gold)


def grader_kinds() -> tuple[str, ...]:
    """Every kind that can be graded: built in, registered, or declared in GRADER_ENTRY_POINTS (not imported)."""
    return tuple(dict.fromkeys([*_BUILTIN, *_GRADERS, *GRADER_ENTRY_POINTS]))


# Bumped when a kind's rules change what it reads from a response: the version joins the keys of the stages that
# grade (rewardscope.stages), so rewards cached under older rules are graded again. Unlisted kinds are at 1,
# which adds nothing to any key.
RULES_VERSIONS = {"choice": 4}  # 2: conclusions, no-option answers, quotations (2026-12-01); 3: closing lines, texts,
# denials, quoted letters; 4: the last answer statement wins (2026-12-02)


def rules_versions(kind: str | None) -> dict[str, int]:
    """The rules version of `kind` where it is above 1 ({} otherwise); None (each row names its own kind): every
    such version."""
    return {k: v for k, v in RULES_VERSIONS.items() if kind in (None, k) and v != 1}


def grader_spec(kind: str) -> GraderSpec | None:
    """The registered spec of `kind` (importing its entry point on first use); None for math and choice.
    An unknown kind is a RewardscopeError naming the known ones."""
    if kind in ("math", "choice"):
        return None
    if kind not in _GRADERS and kind in GRADER_ENTRY_POINTS:
        _load_entry_point(kind)
    if kind not in _GRADERS:
        raise RewardscopeError(f"grade.kind: unknown grader {kind!r} (known: {', '.join(grader_kinds())})")
    return _GRADERS[kind]


def _load_entry_point(kind: str) -> None:
    entry = GRADER_ENTRY_POINTS[kind]
    module, _, name = entry.partition(":")
    getattr(importlib.import_module(module), name)()
    if kind not in _GRADERS:
        raise RewardscopeError(f"grader entry point {entry} did not register kind {kind!r}")


@dataclass(frozen=True)
class Verdict:
    extracted: str | None  # answer string extracted from the prediction (auditable)
    gold_extracted: str | None  # normal form of the gold answer
    equal: bool
    # "correct" | "wrong" | "correct (fallback)" | "wrong (fallback)" (choice: the last-resort letter rule) |
    # "empty" | "no_answer" | "ambiguous" (choice: answer statements naming different options) | "timeout" |
    # "error: <msg>" (docs/grading.md)
    reason: str


ERROR_CHARS = 300  # an error message in a graded row: long enough to debug, short enough to read


class Grader:
    """Grades batches of predictions of one kind. Math answers are parsed and verified by math-verify in
    `workers` processes; one that takes longer than `timeout_s` is killed (verdict False, reason "timeout").
    Reuse one Grader for many batches (a worker costs about a second to start) and close it when done.
    `choice_fallback`: whether a response whose letter only the last-resort rule finds (the last standalone
    option letter) is graded; its reason then says "(fallback)". A choice response whose answer statements name
    different options gets no letter and reason "ambiguous" (fallback or not). A row that makes a grader fail
    gets reward 0 and reason "error: ...", never stops the batch."""

    def __init__(self, kind: str, timeout_s: float = _DEFAULTS.timeout_s, workers: int = _DEFAULTS.workers,
                 choice_fallback: bool = _DEFAULTS.choice_fallback):
        self._spec = grader_spec(kind)  # an unknown kind fails here, before any work
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
        if self.kind == "choice":
            choices = tuple(choices) if choices else None
            pred_norm, rule = choice_with_rule(pred, choices, fallback=self.choice_fallback)
            gold_norm, same = gold_choice(gold), str.__eq__
        else:
            gold_norm, pred_norm, same = self._spec.gold(gold), self._spec.extract(pred), self._spec.equal
        if gold_norm is None:
            return Verdict(pred_norm, None, False, f"error: no {self.kind} answer in gold {gold[:80]!r}")
        if not pred.strip():
            return Verdict(None, gold_norm, False, "empty")
        if pred_norm is None:
            return Verdict(None, gold_norm, False, "ambiguous" if rule == "ambiguous" else "no_answer")
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
              timeout_s: float = _DEFAULTS.timeout_s, choice_fallback: bool = True) -> Verdict:
    """One answer. For many, use a Grader: a math grade_one starts (and stops) a worker process."""
    with Grader(kind, timeout_s, workers=1, choice_fallback=choice_fallback) as grader:
        return grader.grade([pred], [gold], [choices])[0]


def grade_file(input: str, out: str, kind: str = "math", timeout_s: float = _DEFAULTS.timeout_s,
               workers: int = _DEFAULTS.workers, choice_fallback: bool = _DEFAULTS.choice_fallback) -> dict:
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
