"""Reading answers out of text, for the kinds graded without sympy: GSM8K-style numbers and multiple-choice
letters (and `last_boxed`, which the math grader's normalisation uses too).

Each extractor returns the answer in its normal form (a plain number string, a capital letter) or None.
The regexes are linear-time: extraction runs in the caller's process, with no deadline. This module imports
nothing but the standard library: the grading workers import it (through normalize.py).
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, Decimal, Inexact, localcontext

CHOICE_LETTERS = "ABCDEFGHIJ"  # option letters, in order: prompts show them, the choice grader reads them

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
        found.append(number + (f"/{m['den']}" if m["den"] and m["den"].strip("0") else ""))
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


def whole_number(text: str) -> str | None:
    """The number a text is, read as the number grader reads one ("1,000" -> "1000", "-$5.50", "3/4"); None
    unless the text is that one number and nothing else ("1e3" and "1_000" are not numbers here)."""
    text = _TEX_SPACE.sub("", text.strip().replace("\u2212", "-")).removesuffix(".")
    m = _NUMBER.fullmatch(text)
    numbers = _numbers(text) if m else []
    return numbers[0] if len(numbers) == 1 else None


def same_number(a: str, b: str) -> bool:
    """Numeric equality of two extracted numbers: 18 == 18.0 == 18.00, 0.75 == 3/4. Exact at any length:
    decimal arithmetic, since int() and Fraction() refuse strings over 4300 digits."""
    (an, ad), (bn, bd) = _value(a), _value(b)
    digits = sum(len(x.as_tuple().digits) for x in (an, ad, bn, bd))
    with localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = digits + 10, MAX_EMAX, MIN_EMIN
        ctx.traps[Inexact] = True  # the products below are exact, or this comparison would be wrong
        return an * bd == bn * ad


def _value(number: str) -> tuple[Decimal, Decimal]:
    numerator, _, denominator = number.partition("/")
    return Decimal(numerator), Decimal(denominator or 1)


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


# Words between an answer phrase and its letter that do not change it: "the answer is definitely (C)". At most
# three, so that a run of them ("so so so ...") costs each match a bounded look-ahead: extraction stays linear.
_FILLER = (r"(?:(?:definitely|actually|indeed|clearly|probably|likely|most\s+likely|certainly|surely|obviously|"
           r"undoubtedly|therefore|thus|hence|then|so|just|simply|option|choice|letter|answer)[\s,:]{1,3}){0,3}")
# An answer announced: "the answer is", "answer:", "the correct option is", "my final choice:", "answer must be".
_CHOICE_MARK = re.compile(r"\b(?:answer|option|choice|response)\s*(?:is|would\s+be|should\s+be|must\s+be|will\s+be|"
                          r"[:=\-])\s*:?\s*", re.IGNORECASE)
# A letter stated as chosen: "C is the correct option", "it's A", "I'd pick (B)", "so C.", "option D is correct".
_BEFORE = (r"(?:\b(?:it\s+is|it's|it’s|it\s+must\s+be|it\s+has\s+to\s+be|it\s+should\s+be|it\s+would\s+be|"
           r"(?:I|we)(?:'ll|'d|\s+will|\s+would)?\s+(?:say|pick|choose|select|go\s+with|answer)|"
           r"(?:so|thus|hence|therefore)[,:]?|(?:is|matches|gives|means)\s+(?:option|choice)|"
           r"(?:option|choice)))\s+")
_AFTER = r"\s+(?:is|seems|must\s+be|would\s+be)\s+(?:the\s+)?(?:correct|right|best|answer|true)"


def extract_choice(text: str, choices: tuple[str, ...] | None = None) -> str | None:
    """The letter a response chooses (see choice_with_rule), the last-resort fallback included."""
    return choice_with_rule(text, choices)[0]


def choice_with_rule(text: str, choices: tuple[str, ...] | None = None,
                     fallback: bool = True) -> tuple[str | None, str | None]:
    """(letter, rule) of the answer a response chooses; the first rule that finds a valid label wins:

    boxed      the last \\boxed{B}
    marked     the last "answer is (B)" / "Answer: B" / "the correct option is B" with a valid label (so the
               instruction's placeholder echoed after a real answer, "The answer is (X)", does not erase it);
               words like "definitely", "actually", "indeed" may stand between
    stated     the last letter stated as chosen: "C is the correct option", "so I think it's A", "I'll say C"
    opening    a label opening the response ("(B) Paris", "B) ...", "B. ...", "[B]") or being all of it ("B");
               a digit only when it is all of it (a numbered list "1. First, ..." is not option A)
    text       with `choices`, the response, or what follows its answer phrase, is exactly one option's text
    fallback   (when `fallback`) the last standalone option letter ("... matches (B)."): the rule a person
               would hesitate over, recorded so that it can be audited or switched off
    Numeric labels (ARC's 1-4) map to letters (1 -> A) after an answer phrase. Letters are capitals, but a
    parenthesised "(b)" is B; an "A" or "I" before a lowercase word is an article or a pronoun."""
    letters, digits = _labels(choices)
    # Markdown bold, math mode and \text{} around the letter: "**B**", "$\textbf{(B)}$".
    text = _TEXT_WRAP.sub(r"\1", text.replace("*", "").replace("$", ""))
    boxed = last_boxed(text)
    if boxed is not None:
        m = re.match(rf"\s*\(?([{letters}{digits}])\)?(?:[\s.):]|$)", boxed.upper())
        if m:
            return _resolve_label(m[1], choices), "boxed"
    # A capital letter not glued to a word, or a parenthesised one in any case. Outside an answer phrase an "A"
    # or "I" before a lowercase word is an article or a pronoun ("A cat", "I think"), unless it is "A is ...".
    enclosed, bare = rf"\(([{letters}{letters.lower()}])\)|\[([{letters}])\]", rf"([{letters}])(?![\w'’]|\.\d)"
    marked_letter = rf"(?:{enclosed}|{bare})"
    letter = rf"(?:{enclosed}|(?![AI]\s+(?!(?:is|or|and|seems|must|would)\b)[a-z]){bare})"
    marks = list(_CHOICE_MARK.finditer(text))
    for m in reversed(marks):
        found = re.match(rf"{_FILLER}(?:{marked_letter}|\(?([{digits}])\)?(?![\w.]))", text[m.end():], re.IGNORECASE)
        if found and (label := _first(found)) and (label.isdigit() or found[3] is None or found[3].isupper()):
            return _resolve_label(label.upper(), choices), "marked"
    stated = [*re.finditer(rf"{_BEFORE}{_FILLER}{letter}", text, re.IGNORECASE),
              *re.finditer(rf"(?<![\w'’]){letter}{_AFTER}", text)]
    stated = [m for m in stated if m[3] is None or m[3].isupper()]  # case-blind phrases, case-exact letters
    if stated:
        return _first(max(stated, key=lambda m: m.end())).upper(), "stated"
    m = re.match(rf"\s*(?:\(([{letters}{digits}])\)|\[([{letters}])\]|([{letters}])(?:[.):]|\s*$)|([{digits}])\s*$)",
                 text)
    if m:
        return _resolve_label(_first(m), choices), "opening"
    if choices:
        options = [_option_text(c) for c in choices]
        limit = 2 * max(map(len, choices)) + 20  # a longer rest of line is no option's text: never read further
        phrases = [*reversed(marks), *reversed(list(re.finditer(_BEFORE, text, re.IGNORECASE)))]
        tails = [text[m.end():m.end() + limit].split("\n", 1)[0] for m in phrases]
        for candidate in (*tails, text):
            if options.count(_option_text(candidate)) == 1:
                return CHOICE_LETTERS[options.index(_option_text(candidate))], "text"
    if fallback:
        last = None
        for last in re.finditer(rf"(?<![\w'’]){letter}", text):
            pass
        if last is not None:
            return _first(last).upper(), "fallback"
    return None, None


def _first(m: re.Match) -> str | None:
    return next((g for g in m.groups() if g), None)


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
