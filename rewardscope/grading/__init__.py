"""Grading: is a model's final answer equal to the gold answer? Every verdict keeps the extracted strings.

    with Grader("math", timeout_s=5.0, workers=2) as grader:
        verdicts = grader.grade(responses, gold_answers)
"""

from rewardscope.grading.grader import KINDS, Grader, Verdict, grade_file, grade_one

__all__ = ["KINDS", "Grader", "Verdict", "grade_file", "grade_one"]
