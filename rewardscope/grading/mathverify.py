"""The math grading task: math-verify's parse and verify, run inside a DeadlinePool worker.

math-verify's own signal.alarm timeouts are switched off (parsing_timeout=None, timeout_seconds=None): the pool
enforces the deadline by killing the worker, which also stops computations stuck in C code.
"""

from __future__ import annotations

import logging
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# With its timeouts off math-verify warns once per process that the caller must enforce one; the pool does.
logging.getLogger("math_verify").setLevel(logging.ERROR)

# The prompt asks for \boxed{}: a boxed answer wins over other anchors ("final answer is ..."). Without any
# anchor math-verify falls back to the last LaTeX expression or number of the text (see docs/grading.md).
EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def gold_text(gold: str) -> str:
    """A bare LaTeX answer (MATH500's `answer`) is boxed so that it parses whole; a text with \\boxed{} or $...$
    (a worked solution) is left for math-verify to find its final answer in."""
    if "\\boxed" in gold or _UNESCAPED_DOLLAR.search(gold):
        return gold
    return "\\boxed{" + gold + "}"


def _shown(parsed: list) -> str | None:
    # parse() returns [sympy object, the extracted text]; keep the text math-verify actually read.
    texts = [p for p in parsed if isinstance(p, str)]
    return texts[0] if texts else (str(parsed[0]) if parsed else None)


def grade_math(pred: str, gold: str):
    """Pool task: yields what is known so far, so that a timeout still keeps the extracted answers."""
    gold_parsed = parse(gold_text(gold), EXTRACTION, parsing_timeout=None)
    result = {"gold_extracted": _shown(gold_parsed), "pred_extracted": None}
    if not gold_parsed:
        yield {**result, "equal": False, "reason": "error: gold answer not parseable by math-verify"}
        return
    if not pred.strip():
        yield {**result, "equal": False, "reason": "empty"}
        return
    yield result
    pred_parsed = parse(pred, EXTRACTION, parsing_timeout=None)
    result["pred_extracted"] = _shown(pred_parsed)
    if not pred_parsed:
        yield {**result, "equal": False, "reason": "no_answer"}
        return
    yield result
    equal = verify(gold_parsed, pred_parsed, timeout_seconds=None)
    yield {**result, "equal": equal, "reason": "correct" if equal else "wrong"}
