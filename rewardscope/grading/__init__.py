"""Grading: is a model's final answer equal to the gold answer? Every verdict keeps the extracted strings.

    with Grader("math", timeout_s=5.0, workers=2) as grader:
        verdicts = grader.grade(responses, gold_answers)

A kind of answer of your own: `register_grader(kind, extract, equal, gold)` (rewardscope.grading.grader).

The names below are imported on first use (PEP 562): the grading workers import `rewardscope.grading.mathverify`
and `rewardscope.grading.pool`, which must not pull the Grader's imports (the recipe's config: yaml).
"""

from rewardscope.lazy import lazy_attributes

_LAZY = {
    "Grader": "rewardscope.grading.grader",
    "GraderSpec": "rewardscope.grading.grader",
    "Verdict": "rewardscope.grading.grader",
    "grade_file": "rewardscope.grading.grader",
    "grade_one": "rewardscope.grading.grader",
    "grader_kinds": "rewardscope.grading.grader",
    "register_grader": "rewardscope.grading.grader",
}
__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
