"""Answer extraction for the kinds graded without sympy: GSM8K-style numbers and multiple-choice letters.

Each extractor returns the answer in its normal form (a plain number string, a capital letter) or None.
The regexes are linear-time: extraction runs in the caller's process, with no deadline.
"""

from __future__ import annotations

import re
from fractions import Fraction

from rewardscope.data.record import CHOICE_LETTERS

# An answer announced in words: "The answer is", "Final answer:", "answer = ".
_ANSWER_MARK = re.compile(r"answer\s*(?:is\s*:?|:|=)", re.IGNORECASE)

# ---- numbers ---------------------------------------------------------------------------------------------

# A number not glued to a word or another number: optional minus and currency sign, thousands separated by
# commas ("1,000"), optional decimals, optional "/denominator" (3/4, also what \frac{3}{4} is rewritten to).
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>-)?[$€£]?(?P<int>\d{1,3}(?:,\d{3}(?!\d))+|\d+)?(?P<dec>\.\d+)?(?:/(?P<den>\d+))?"
)
_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?[\d.,]+)\s*\}\{\s*(\d+)\s*\}")
_TEX_SPACE = re.compile(r"(?<=\d)(?:\{,\}|\\[,!;:]|\\ )(?=\d)")  # 1{,}000 and 1\,000 group thousands


def _numbers(text: str) -> list[str]:
    found = []
    for m in _NUMBER.finditer(text):
        if m["int"] is None and m["dec"] is None:
            continue
        number = (m["sign"] or "") + (m["int"] or "0").replace(",", "") + (m["dec"] or "")
        found.append(number + (f"/{m['den']}" if m["den"] and int(m["den"]) else ""))
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces matched; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]  # unclosed (a truncated response): take the rest


def _after_answer_mark(text: str) -> str | None:
    marks = list(_ANSWER_MARK.finditer(text))
    return text[marks[-1].end():].split("\n", 1)[0] if marks else None


def extract_number(text: str) -> str | None:
    """The answer number of a GSM8K-style response, first rule that finds a number wins:
    after the last `####`; the last number in the last \\boxed{}; the first number after the last
    "answer is" / "answer:"; else the last number in the text (lm-eval's flexible-extract)."""
    text = _TEX_SPACE.sub("", text.replace("\u2212", "-").replace("\\$", "$").replace("\\%", "%"))
    text = _FRAC.sub(r"\1/\2", text)
    segments = [
        (text.rsplit("####", 1)[1] if "####" in text else None, 0),
        (last_boxed(text), -1),
        (_after_answer_mark(text), 0),
        (text, -1),
    ]
    for segment, which in segments:
        numbers = _numbers(segment) if segment is not None else []
        if numbers:
            return numbers[which]
    return None


def same_number(a: str, b: str) -> bool:
    """Numeric equality of two extracted numbers: 18 == 18.0 == 18.00, 0.75 == 3/4."""
    return _value(a) == _value(b)


def _value(number: str) -> Fraction:
    numerator, _, denominator = number.partition("/")
    return Fraction(numerator) / Fraction(denominator or 1)


# ---- multiple choice -------------------------------------------------------------------------------------

_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")


def _labels(choices: tuple[str, ...] | None) -> tuple[str, str]:
    """Letters and numeric labels a prediction may use: as many as there are choices (A-E when unknown)."""
    n = len(choices) if choices else 5
    return CHOICE_LETTERS[:n], "123456789"[:n]


def _label_to_letter(label: str) -> str:
    return CHOICE_LETTERS[int(label) - 1] if label.isdigit() else label.upper()


def _option_text(text: str) -> str:
    return re.sub(r"[\s*_.:;,!?\"'`()$]+", " ", text).strip().lower()


def extract_choice(text: str, choices: tuple[str, ...] | None = None) -> str | None:
    """The letter a response chooses, first rule that finds one wins: the last \\boxed{}; after the last
    "answer is" / "answer:" (optionally "option"/"choice", parentheses); a label opening the response ("(B) Paris",
    "B) ...", "B. ...", "B: ...") or being all of it ("B"); with `choices`, a response (or the text after the
    answer mark) that is exactly one option's text. Numeric labels (ARC's 1-4) map to letters (1 -> A).
    A marked digit that is itself an option's text ("answer is 2" with options 1, 2, 3, 4) means that option."""
    letters, digits = _labels(choices)
    label = rf"[{letters}{digits}]"
    # Markdown bold, math mode and \text{} around the letter: "**B**", "$\textbf{(B)}$".
    text = _TEXT_WRAP.sub(r"\1", text.replace("*", "").replace("$", ""))
    boxed = last_boxed(text)
    if boxed is not None:
        m = re.match(rf"\s*\(?({label})\)?(?:[\s.):]|$)", boxed.upper())
        if m:
            return _resolve_label(m[1], choices)
    marked = _after_answer_mark(text)
    if marked is not None:
        m = re.match(rf"\s*(?:(?:option|choice)\s+)?\(?({label})\)?(?![\w])(?!\.\d)", marked, re.IGNORECASE)
        if m and (m[1].isupper() or m[1].isdigit()):  # "the answer is a ..." is an article, not option A
            return _resolve_label(m[1], choices)
    m = re.match(rf"\s*(?:\(({label})\)|({label})(?:[.):]|\s*$))", text)
    if m:
        return _resolve_label(m[1] or m[2], choices)
    if choices:
        options = [_option_text(c) for c in choices]
        for candidate in (marked, text):
            if candidate is not None and options.count(_option_text(candidate)) == 1:
                return CHOICE_LETTERS[options.index(_option_text(candidate))]
    return None


def _resolve_label(label: str, choices: tuple[str, ...] | None) -> str:
    if label.isdigit() and choices:
        options = [c.strip() for c in choices]
        if options.count(label) == 1:
            return CHOICE_LETTERS[options.index(label)]
    return _label_to_letter(label)


def gold_choice(gold: str) -> str | None:
    """A gold label in normal form: a letter ("B", "(B)") or a numeric label as ARC publishes them ("2" -> B)."""
    m = re.fullmatch(rf"\(?([{CHOICE_LETTERS}]|[1-9])\)?", gold.strip().upper())
    return _label_to_letter(m[1]) if m else extract_choice(gold)
