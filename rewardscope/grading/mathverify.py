"""The math grading task: math-verify's parse and verify, run inside a DeadlinePool worker.

math-verify's own signal.alarm timeouts are switched off (parsing_timeout=None, timeout_seconds=None): the pool
enforces the deadline by killing the worker, which also stops computations stuck in C code.

On top of math-verify (see rewardscope/grading/normalize.py): two answers whose normalised strings are the same
are equal; a bare answer is read as LaTeX, like a bare gold; and when the answers as written do not verify,
their rewrites (plain text as LaTeX, an equation's value side, a percent without its sign) are tried pairwise.
Everything that can be slow (parsing, sympy) happens here, inside the worker.
"""

from __future__ import annotations

import logging
import re

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rewardscope.grading import normalize as norm

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


def _parse(text: str) -> list:
    return parse(text, EXTRACTION, parsing_timeout=None)


def _verify(gold_parsed: list, pred_parsed: list) -> bool:
    """math-verify's verdict, with an inequality equal to its interval (`x > 2` == `(2, \\infty)`), and two exact
    rationals equal only when they are the same number (math-verify rounds to 6 decimals: 2^-99 == 2^-98)."""
    if not (gold_parsed and pred_parsed):
        return False
    if not verify(gold_parsed, pred_parsed, timeout_seconds=None, allow_set_relation_comp=True):
        return False
    return not (_different_rationals(gold_parsed[0], pred_parsed[0]) or _set_and_interval(gold_parsed, pred_parsed))


def _set_and_interval(a: list, b: list) -> bool:
    """math-verify takes an interval for the set of its end points: `\\{1,2\\}` == `(1,2)`. Written in braces,
    a set is no interval."""
    def braced_set(p: list) -> bool:
        return isinstance(p[0], sympy.FiniteSet) and _shown(p).lstrip().startswith(("\\{", "{"))

    def interval(p: list) -> bool:
        return isinstance(p[0], (sympy.Interval, sympy.Union))

    return (braced_set(a) and interval(b)) or (interval(a) and braced_set(b))


def _different_rationals(a, b) -> bool:
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)) or a.atoms(sympy.Float) or b.atoms(sympy.Float):
        return False  # a decimal is an approximation: math-verify's rounding is what it is for
    a, b = a.doit(), b.doit()
    return a.is_Rational is True and b.is_Rational is True and a != b


def _identity(parsed: list) -> str:
    # A parse that failed in sympy is only its text: `2**10` (text) is not the number 2**10.
    if not parsed:
        return ""
    return sympy.srepr(parsed[0]) if isinstance(parsed[0], sympy.Basic) else "text:" + str(parsed[0])


class _Side:
    """One answer (gold or prediction): math-verify's parse of it as written, the answer strings a reader finds
    in it, and the parses of their rewrites."""

    def __init__(self, text: str, as_written: str | None):
        self.text = text
        self.parsed = _parse(as_written) if as_written is not None else []

    def strings(self) -> list[str]:
        found = norm.answer_strings(self.text)
        if self.parsed and not norm.is_bare(self.text):
            found.append(_shown(self.parsed))  # in a worked solution, what math-verify extracted is one too
        return [s for s in dict.fromkeys(found) if s]

    def is_equation(self) -> bool:
        return any(norm.is_equation(norm.normalize(s)) for s in self.strings())

    def rewrites(self, other_is_equation: bool) -> list[tuple[str, list]]:
        """(rewrite, its parse) for every rewrite that parses to something new (each costs a verify per pair)."""
        found, seen = [], {_identity(self.parsed)}
        rewritten = (v for s in self.strings() for v in norm.variants(s, other_is_equation=other_is_equation))
        for v in dict.fromkeys(rewritten):
            parsed = _parse("\\boxed{" + v + "}")
            if parsed and _identity(parsed) not in seen:
                seen.add(_identity(parsed))
                found.append((v, parsed))
        return found


def _same_string(pred: _Side, gold: _Side) -> str | None:
    """The prediction's answer string whose normalised string is one of the gold's: the same answer, whatever
    math-verify makes of it (it cannot parse `\\$\\$`, it finds `x \\mid y` unequal to `x\\mid y`)."""
    gold_keys = {norm.key(s) for s in gold.strings()}
    return next((s for s in pred.strings() if norm.key(s) in gold_keys), None)


def _rewrite_match(pred: _Side, gold: _Side) -> tuple[str | None, bool]:
    """(the prediction's rewrite that verifies against a rewrite of the gold, or None; whether the prediction has
    any readable answer at all). An equation is reduced to its value only against an answer that is none
    (`x = 3` vs `x = 4` stay equations)."""
    golds = [gold.parsed] + [p for _, p in gold.rewrites(other_is_equation=pred.is_equation())]
    preds = ([("", pred.parsed)] if pred.parsed else []) + pred.rewrites(other_is_equation=gold.is_equation())
    for i, g in enumerate(golds):
        for j, (text, p) in enumerate(preds):
            if (i, j) != (0, 0) or not pred.parsed:  # both as written: math-verify's own verdict, already False
                if _verify(g, p):
                    return text or _shown(pred.parsed), True
    return None, bool(preds)


def _readable(side: _Side) -> bool:
    try:
        return bool(side.parsed or side.rewrites(other_is_equation=False))
    except Exception:
        return bool(side.parsed)


def grade_math(pred: str, gold: str):
    """Pool task: yields what is known so far, so that a timeout still keeps the extracted answers.
    The normalisation layer only adds equalities: should it fail on some input, math-verify's verdict stands."""
    gold_side = _Side(gold, gold_text(gold))
    result = {"gold_extracted": _shown(gold_side.parsed) or (gold.strip() or None), "pred_extracted": None}
    unreadable_gold = {**result, "equal": False, "reason": "error: gold answer not parseable by math-verify"}
    if not pred.strip():
        yield unreadable_gold if not _readable(gold_side) else {**result, "equal": False, "reason": "empty"}
        return
    yield result
    # A bare prediction is read as LaTeX, as a bare gold is: boxed, after normalisation (in the rewrites).
    # math-verify's plain-expression reading of it is not used: it takes `1,5` for 1.5 and `4*y` for 4.
    bare = norm.is_bare(pred)
    pred_side = _Side(pred, None if bare else pred)
    result["pred_extracted"] = _shown(pred_side.parsed) or (pred.strip() if bare else None)
    yield result
    try:
        same = _same_string(pred_side, gold_side)
    except Exception:
        same = None
    if same is not None:
        yield {**result, "pred_extracted": same, "equal": True, "reason": "correct"}
        return
    if not _readable(gold_side):
        yield {**unreadable_gold, "pred_extracted": result["pred_extracted"]}
        return
    if _verify(gold_side.parsed, pred_side.parsed):
        yield {**result, "equal": True, "reason": "correct"}
        return
    try:
        matched, readable = _rewrite_match(pred_side, gold_side)
    except Exception:
        matched, readable = None, bool(pred_side.parsed)
    if matched is not None:
        yield {**result, "pred_extracted": matched, "equal": True, "reason": "correct"}
    else:
        yield {**result, "equal": False, "reason": "wrong" if readable else "no_answer"}
