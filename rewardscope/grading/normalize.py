"""Answer strings for the math grader: what a reader takes as the answer, in forms math-verify parses.

math-verify reads LaTeX inside `$...$` or `\\boxed{}` and a few plain expressions; a bare answer (`\\frac {3}{4}`,
`sqrt(2)/2`, `y = 3`) is mostly lost on it. This module rewrites an answer string, without judging it:

  key(s)        a canonical string: two answers with the same key are equal, whatever sympy makes of them
  variants(s)   LaTeX rewrites of s (normalised, plain text translated, one side of an equation, percent
                sign dropped) for the worker to parse and verify pairwise

Everything here is string work (what could grow quadratic is applied to short answers only); it still runs inside
the grading worker (rewardscope/grading/mathverify.py), under the pool's deadline. The choices it makes for ambiguous
answers (percent, decimal comma, chained equations) are documented in docs/grading.md.
"""

from __future__ import annotations

import re
from fractions import Fraction

from rewardscope.grading.answers import last_boxed

# ---- bare answers and answers inside a response ----------------------------------------------------------

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_TEXT_ARG = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{[^{}]*\}")
# Two words in a row (not LaTeX commands): prose, not an answer ("I do not know", "the answer is 5").
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}[\s,;:]+[A-Za-z]{2,}(?![A-Za-z])")
_ANSWER_MARK = re.compile(r"answer\s*(?:is\s*:?|:|=)", re.IGNORECASE)
SHORTHAND_MAX_CHARS = 1_000  # \frac52 and 0.\overline{6} are rewritten in answers up to this length
BARE_MAX_CHARS = 10_000  # one line of math, no prose: a matrix or a 5000-digit number is still an answer


def is_bare(text: str) -> bool:
    """An answer written on its own (`\\frac {3}{4}`, `sqrt(2)/2`, `x = 3`), not a response around one."""
    text = text.strip()
    return (0 < len(text) <= BARE_MAX_CHARS and "\\boxed" not in text and "\\fbox" not in text
            and not _UNESCAPED_DOLLAR.search(text) and "\n" not in text
            and not _PROSE.search(_TEXT_ARG.sub(" ", text)))


def answer_strings(text: str) -> list[str]:
    """Where a reader finds the answer of a response: the last \\boxed{}; the rest of the line after the last
    "answer is" / "answer:"; the whole text when it is a bare answer. Most certain first, duplicates removed."""
    found = []
    boxed = last_boxed(text)
    if boxed is not None:
        found.append(boxed)
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        rest = text[marks[-1].end():].split("\n", 1)[0].strip().rstrip(".").strip()
        rest = rest[1:-1].strip() if len(rest) > 1 and rest[0] == rest[-1] == "$" else rest
        if rest and is_bare(rest):
            found.append(rest)
    if is_bare(text):
        found.append(text.strip())
    return list(dict.fromkeys(found))


# ---- normalisation ---------------------------------------------------------------------------------------

def _group(s: str, i: int) -> tuple[str, int] | None:
    """The argument of a LaTeX command starting at s[i] (spaces skipped): `{...}` (braces matched), a command
    (`\\pi`) or one character; returns (its text without braces, index after it), or None at the end."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s) or s[i] in "}^_":
        return None
    if s[i] == "{":
        depth = 0
        for j in range(i, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1:j], j + 1
        return None
    if s[i] == "\\":
        m = re.match(r"\\(?:[A-Za-z]+|.)", s[i:])
        return m[0], i + len(m[0])
    return s[i], i + 1


def _brace_arguments(s: str, command: str, count: int) -> str:
    """`\\frac52` -> `\\frac{5}{2}`, `\\sqrt2` -> `\\sqrt{2}`: every argument of `command` in braces."""
    out, i = [], 0
    pattern = re.compile(re.escape(command) + r"(?![A-Za-z])")
    while (m := pattern.search(s, i)) is not None:
        out.append(s[i:m.end()])
        j, args = m.end(), []
        if command == "\\sqrt" and s[j:j + 1] == "[":  # \sqrt[3]{x}: the index stays as written
            close = s.find("]", j)
            if close < 0:
                break
            out.append(s[j:close + 1])
            j = close + 1
        for _ in range(count):
            arg = _group(s, j)
            if arg is None:
                break
            args.append(arg[0])
            j = arg[1]
        if len(args) < count:  # malformed: leave the rest as it is
            i = m.end()
            continue
        out.append("".join("{" + a + "}" for a in args))
        i = j
    out.append(s[i:])
    return "".join(out)


_UNICODE = {"\u2212": "-", "\u2013": "-", "π": "\\pi ", "∞": "\\infty ", "×": "\\times ", "·": "\\cdot ",
            "÷": "\\div ", "≤": "\\leq ", "≥": "\\geq ", "≠": "\\neq ", "²": "^{2}", "³": "^{3}",
            "\u00a0": " "}
_REWRITES = [  # (pattern, replacement), applied in order
    (re.compile("|".join(map(re.escape, _UNICODE))), lambda m: _UNICODE[m[0]]),
    (re.compile(r"√\s*(\d+(?:\.\d+)?|[A-Za-z])"), r"\\sqrt{\1}"),
    (re.compile(r"√"), "sqrt"),  # √(x + 1): plain_to_latex reads the call
    (re.compile(r"\\(?:displaystyle|textstyle|scriptstyle)(?![A-Za-z])"), ""),
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\left\s*\.|\\right\s*\."), ""),  # invisible delimiters
    (re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\s*"), ""),
    (re.compile(r"\\!"), ""),
    # Thin spaces (and {,}) that group thousands: 5\,280, 1{,}000{,}000.
    (re.compile(r"(?<=\d)(?:\\[,;:]|\\ |~|\{,\})(?=\d{3}(?!\d))"), ","),
    (re.compile(r"\\[,;:]|\\quad|\\qquad|~|\\ "), " "),
    (re.compile(r"\\\$|(?<!\\)\$"), ""),  # a currency sign, or a stray math delimiter
    # Degrees: 60^\circ == 60 (as math-verify reads it).
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|°|\\degree(?![A-Za-z])"), ""),
    (re.compile(r"\\text\s*\{\s*percent\s*\}|\s*\bpercent\b|(?<!\\)%"), r"\\%"),
    (re.compile(r"\\text\s*\{\s*\\%\s*\}"), r"\\%"),
    (re.compile(r"(?:\\approx|≈).*$"), ""),  # "\sqrt{2} \approx 1.41": the exact answer comes first
    (re.compile(r"\{(?:p|b|B|v|V|small)?matrix\}"), "{bmatrix}"),
    (re.compile(r"^\s*[A-Za-z]\s*\\in(?![A-Za-z])\s*"), ""),  # x \in [1, 2]: the set is the answer
    # math-verify reads \mathrm{e} as a cut-off expression (see docs/grading.md); Euler's number is e.
    (re.compile(r"\\mathrm\s*\{\s*e\s*\}"), "e"),
    # Bold, roman, italic are all \text{} to math-verify (which drops units written so: 5\text{ cm} is 5).
    (re.compile(r"\\(?:textbf|textit|textrm|textsf|mathrm|mathbf|mathit|mathsf|mbox|boldsymbol)\s*\{"), r"\\text{"),
    (re.compile(r"^\\text\s*\{([^{}]*)\}$"), r"\1"),  # an answer that is all text: "\text{even}", "\text{(B)}"
    (re.compile(r"^\(([A-Z])\)$"), r"\1"),  # an option letter: (B) is B
    (re.compile(r"(?<![\d.])\.(?=\d)"), "0."),  # .5 -> 0.5
]


_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\s*\{(\d{1,40})\}")


def _repeating_to_fraction(m: re.Match) -> str:
    """0.\\overline{6} -> \\frac{2}{3}, 1.2\\overline{34} -> \\frac{611}{495}: a repeating decimal is that fraction."""
    sign, whole, fixed, period = m[1], m[2] or "0", m[3], m[4]
    value = Fraction(int(whole)) + (Fraction(int(fixed or "0")) + Fraction(int(period), 10 ** len(period) - 1)) \
        / 10 ** len(fixed)
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


def normalize(s: str) -> str:
    """A LaTeX answer with its spelling variants removed (see the module docstring); spaces collapsed."""
    s = re.sub(r"\s+", " ", s).strip()  # first: no regex below then meets a long run of spaces
    if len(s) > 1 and s[0] == s[-1] == "$":
        s = s.strip("$")
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s.strip())
    for pattern, replacement in _REWRITES:
        s = pattern.sub(replacement, s)
    if len(s) <= SHORTHAND_MAX_CHARS:  # quadratic at worst (unclosed braces): short answers only, where it is used
        s = _brace_arguments(_brace_arguments(s, "\\frac", 2), "\\sqrt", 1)
        s = _REPEATING.sub(_repeating_to_fraction, s)
    s = s.rstrip(" .,\\")  # a full stop, a stray \ or \\ ("12\\"), what a thin space leaves ("5\\,")
    return re.sub(r"\s+", " ", s).strip()


_NUMBER_WITH_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_WORDS = re.compile(r"[A-Za-z][A-Za-z ]*[A-Za-z]")


def key(s: str) -> str:
    """The normalised string without spaces (kept only where they separate a command from a letter):
    answers with the same key are equal. Words compare without case (`Yes` == `\\text{yes}`), a lone
    letter keeps it; `(B)` is `B`; `1,000` is `1000`; an equation is written `var=value`."""
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", normalize(s))
    if _WORDS.fullmatch(s) and len(s) > 1:
        s = s.lower()
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\0", s)  # `\pi r` keeps its space, nothing else does
    s = re.sub(r"\s+", "", s).replace("\0", " ")
    s = s.replace("\\{", "{").replace("\\}", "}")
    if _NUMBER_WITH_THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    sides = split_equation(s)
    if len(sides) == 2 and _is_name(sides[1]) and not _is_name(sides[0]):
        s = f"{sides[1]}={sides[0]}"
    return s


# ---- plain-text math -------------------------------------------------------------------------------------

_CALLS = {"sqrt": ("\\sqrt{", "}"), "cbrt": ("\\sqrt[3]{", "}"), "exp": ("e^{", "}"), "abs": ("\\left|", "\\right|"),
          **{f: (f"\\{f}(", ")") for f in ("ln", "log", "sin", "cos", "tan", "arcsin", "arccos", "arctan")}}
_CALL = re.compile(r"(?<![\\A-Za-z])(" + "|".join(sorted(_CALLS, key=len, reverse=True)) + r")\s*\(")


def _matching_paren(s: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(s)):
        depth += {"(": 1, ")": -1}.get(s[j], 0)
        if depth == 0:
            return j
    return -1


def _calls_to_latex(s: str) -> str:
    out, i = [], 0
    while (m := _CALL.search(s, i)) is not None:
        close = _matching_paren(s, m.end() - 1)
        if close < 0:
            break
        opening, closing = _CALLS[m[1]]
        out += [s[i:m.start()], opening, _calls_to_latex(s[m.end():close]), closing]
        i = close + 1
    out.append(s[i:])
    return "".join(out)


def _exponents_to_latex(s: str) -> str:
    """`^(1/3)` -> `^{(1/3)}` and `^10` -> `^{10}` (LaTeX would read `2^10` as 2^1 * 0)."""
    out, i = [], 0
    while (j := s.find("^", i)) >= 0:
        out.append(s[i:j + 1])
        if s[j + 1:j + 2] == "(" and (close := _matching_paren(s, j + 1)) > 0:
            out.append("{" + s[j + 1:close + 1] + "}")
            i = close + 1
        elif m := re.match(r"-?\d+(?:\.\d+)?", s[j + 1:]):
            out.append("{" + m[0] + "}")
            i = j + 1 + len(m[0])
        else:
            i = j + 1
    out.append(s[i:])
    return "".join(out)


def plain_to_latex(s: str) -> str:
    """Plain-text math as a calculator or Python writes it, in LaTeX: sqrt(2)/2, 3**(1/3), 4*y, pi/4, 1e3."""
    if m := re.fullmatch(r"(-?\d+(?:\.\d+)?)[eE]([-+]?\d+)", s.strip()):  # scientific notation
        return f"{m[1]}\\times10^{{{int(m[2])}}}"
    s = _calls_to_latex(s.replace("**", "^"))
    s = _exponents_to_latex(s)
    s = re.sub(r"(?<![\\A-Za-z])pi(?![A-Za-z])", r"\\pi", s)
    s = re.sub(r"(?<![\\A-Za-z])(?:infinity|inf|oo)(?![A-Za-z])", r"\\infty", s)
    s = s.replace(">=", "\\geq ").replace("<=", "\\leq ").replace("!=", "\\neq ")
    return re.sub(r"\s*\*\s*", " \\\\cdot ", s)


# ---- equations -------------------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?'*|\\[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?|[A-Za-z]\([A-Za-z]\)")


def _is_name(s: str) -> bool:
    """A variable (`x`, `x_1`, `\\theta`, `f(x)`), the side of `x = 3` that is not the answer."""
    return bool(_NAME.fullmatch(s.strip())) and s.strip() not in ("\\infty", "\\pi", "e", "i")


def _top_level(s: str, sep: str) -> list[str]:
    """s split at `sep` outside brackets and braces."""
    parts, depth, start = [], 0, 0
    for j, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0 and s[j - 1:j] != "\\":
            parts.append(s[start:j])
            start = j + 1
    return [p.strip() for p in [*parts, s[start:]]]


def split_equation(s: str) -> list[str]:
    """The sides of `a = b = c` (one side: not an equation). `<=`, `\\leq`, `!=`, `==` are no equals signs."""
    if "=" not in s or re.search(r"[<>!]=|==", s):
        return [s]
    sides = _top_level(s, "=")
    return sides if all(sides) else [s]


def equation_value(s: str) -> str | None:
    """What an equation gives as the answer, when the other answer is not an equation: the value side of
    `x = 3` or `3 = x`, the last side of a chain (`x = 2+3 = 5` gives 5), the values of `a = 2, b = 3` as
    the tuple `(2, 3)` (of `x = 1, x = 2`: the list `1, 2`). None when s is no equation, or when neither
    side is a variable (`x + y = 3`: math-verify still matches it with its right side)."""
    assignments = _top_level(s, ",")
    if len(assignments) > 1:
        sides = [split_equation(a) for a in assignments]
        if all(len(x) == 2 and _is_name(x[0]) for x in sides):
            values = ", ".join(x[1] for x in sides)
            # x = 1, x = 2: the solutions, a set (math-verify reads a bare list as one); a = 2, b = 3: a tuple.
            return values if len({x[0] for x in sides}) == 1 else f"({values})"
        return None
    sides = split_equation(s)
    if len(sides) > 2:
        return sides[-1]
    if len(sides) == 2:
        if _is_name(sides[0]):
            return sides[1]
        if _is_name(sides[1]):
            return sides[0]
    return None


def is_equation(s: str) -> bool:
    return len(split_equation(s)) > 1 or any(len(split_equation(a)) > 1 for a in _top_level(s, ","))


_NUMBER_THEN_WORDS = re.compile(r"([-+]?[\d.,/]*\d) ([A-Za-z]{2,}(?:\.? [A-Za-z]{2,})*\.?)(?:\^\{?\d\}?)?")


def variants(s: str, *, other_is_equation: bool) -> list[str]:
    """LaTeX rewrites of one answer string, most faithful first. An equation is reduced to its value only when
    the answer it is compared with is not an equation (`x = 3` vs `x = 4` stay equations)."""
    base = normalize(s)
    found = [base, plain_to_latex(base)]
    if "*" in base:  # 2*i: math-verify takes the i of `2i` for the imaginary unit, not that of `2 \\cdot i`
        juxtaposed = re.sub(r"(?<=\d)\s*\*\s*(?=[A-Za-z(\\])", "", base.replace("**", "^"))  # 2*i -> 2i
        found.append(plain_to_latex(re.sub(r"(?<!\d)\s*\*\s*|\s*\*\s*(?!\d)", " ", juxtaposed)))
    if m := _NUMBER_THEN_WORDS.fullmatch(base):  # 5 dollars, 12 square units
        found.append(m[1])
    sides = split_equation(base)
    if len(sides) == 2 and _is_name(sides[1]) and not _is_name(sides[0]):
        found.append(f"{sides[1]} = {sides[0]}")  # 3 = t -> t = 3 (math-verify reads only `name = value`)
    elif len(sides) > 2 and _is_name(sides[0]):
        found.append(f"{sides[0]} = {sides[-1]}")  # x = 2+3 = 5: x = 5
    if not other_is_equation and (value := equation_value(base)) is not None:
        found += [value, plain_to_latex(value)]
    if "\\%" in base:  # the documented percent choice: 12.5\% is 0.125 (math-verify) and also 12.5
        found += [v.replace("\\%", "") for v in found]
    return [v for v in dict.fromkeys(found) if v]
