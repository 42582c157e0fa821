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


_OPTION_PUNCT = re.compile(r"[\s*_.:;,!?\"'`()$]+")


def _option_text(text: str) -> str:
    return _OPTION_PUNCT.sub(" ", text).strip().lower()


# Words an option's text may be given without: "Coral reef" is the option "on a coral reef".
_FUNCTION_WORDS = frozenset("a an the on in at of to for by with from into onto".split())


def _content_words(text: str) -> str:
    return " ".join(w for w in _option_text(text).split() if w not in _FUNCTION_WORDS)


# Words between an answer phrase and its letter that do not change it: "the answer is definitely (C)". At most
# three, so that a run of them ("so so so ...") costs each match a bounded look-ahead: extraction stays linear.
_FILLER = (r"(?:(?:definitely|actually|indeed|clearly|probably|likely|most\s+likely|certainly|surely|obviously|"
           r"undoubtedly|therefore|thus|hence|then|so|just|simply|option|choice|letter|answer)[\s,:]{1,3}){0,3}")
# An answer announced: "the answer is", "answer:", "the correct option is", "my final choice:", "answer must be",
# "the answer (D)", "the correct answer D";
# and, with at most 60 characters of the same sentence between, "the answer to this question is", "the most
# suitable option to use here is".
_COPULA = r"(?:is|was|would\s+be|should\s+be|must\s+be|will\s+be)"
_CHOICE_MARK = re.compile(rf"\b(?:answer|option|choice|response)\s*(?:{_COPULA}|[:=\-])\s*:?\s*|\banswer\s+(?=\(\w\))|"
                          r"\b(?:correct|right|final)\s+(?:answer|option|choice)\s+(?=[(\[]?[A-J](?![\w'’]))"
                          r"(?-i:(?![AI]\s+(?!(?:is|or|and)\b)[a-z]))|"
                          rf"\b(?:answer|option|choice)\s+(?:to|for|of|in|that|which|we|I|you)\b[^.!?\n]{{0,60}}?"
                          rf"\s{_COPULA}\s+", re.IGNORECASE)
# A letter stated as chosen: "C is the correct option", "it's A", "I'd pick (B)", "so C.", "is option D".
_BEFORE = (r"(?:\b(?:it\s+is|it's|it’s|it\s+must\s+be|it\s+has\s+to\s+be|it\s+should\s+be|it\s+would\s+be|"
           r"(?:I|we)(?:'ll|'d|\s+will|\s+would)?\s+(?:say|pick|choose|select|go\s+with|answer)|"
           r"(?:so|thus|hence|therefore)[,:]?|(?:is|matches|gives|means)\s+(?:option|choice))|"
           r"(?:^|(?<=[.!?:\n]))[ \t]*(?:let's\s+|let\s+us\s+)?(?:select|choose|pick)\s+(?:answer|option|choice))\s+")
_AFTER = (r"(?:,?\s+which)?\s+(?:is|seems|must\s+be|would\s+be)\s+(?:the\s+)?(?:correct|right|best|answer|true|"
          r"only\s+(?:answer|option|choice))")
# "option A" alone is a statement only where the sentence or clause ends with it ("Paris, option A, is the
# answer"), not where it names an option being discussed ("option B (ability to ...) only has D").
_OPTION_NAMED = r"\b(?:option|choice)\s+"
# An option's text stated as the answer: "A bar graph is the most suitable answer", "Paris is correct".
_ADJECTIVE = (r"(?:(?:most|more|very)\s+)?(?:correct|right|best|true|only|final|suitable|appropriate|likely|accurate|"
              r"reasonable|direct|plausible|logical)")
_ADJECTIVES = rf"{_ADJECTIVE}(?:\s+and\s+{_ADJECTIVE})?\s+"  # "the most direct and accurate option"
# "an option" alone is no pick ("Rome is an option"): "a" or "an" only before an adjective ("a correct option").
_TEXT_STATED = re.compile(rf"\s+(?:is|seems\s+to\s+be|must\s+be|would\s+be)\s+(?:(?:the\s+)?(?:{_ADJECTIVES})?|"
                          rf"an?\s+{_ADJECTIVES})(?:answer|option|choice)\b|\s+is\s+(?:correct|right)\b", re.IGNORECASE)
# The question restated with its answer: "The main function of chloroplasts is to produce glucose." A plain fact
# is not one ("The capital of Germany is Berlin."): only a subject that asks for the main, best or correct thing.
_PREDICATE = re.compile(r"(?:^|(?<=[.!?\n]))[ \t]*(?:(?:so|thus|therefore|hence),?[ \t]+)?the[ \t]+(?:main|major|"
                        r"primary|chief|principal|best|only|correct|right|most[ \t]+\w+)\b[^.!?\n]{0,120}?[ \t]"
                        r"(?:is|are)[ \t]+",
                        re.IGNORECASE)
_CONTRAST = re.compile(r"\b(?:but|however|whereas|while|instead)\b", re.IGNORECASE)  # "(C), but the correct answer (E)"
# An answer phrase right after an opening quote is quoted, a mention: 'in place of "the answer is (D)," ...'.
_QUOTED = re.compile(r"[\"“'‘](?:the\s+)?\Z", re.IGNORECASE)  # searched in the 6 characters before the phrase
# What may follow an option's text given as the answer: the end, punctuation, or an explanation.
_TEXT_END = re.compile(r"\s*(?:$|[.,;:!()\]\n]|[-–—]\s)|\s+(?:because|since|as|which|who|that|so|for|this|it|"
                       r"given|due)\b", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)  # "A bar graph": option "bar graph"
_PLACEHOLDER = re.compile(r"\s*(?:\(X\)|X(?![\w'’]))\s*(?:[=:\-]|is\b)?\s*")  # the instruction's "(X)": "(X) = 1"
# An answer phrase followed by no option: "not an option" (or not listed, given, valid ...), a number, or one word
# ending its sentence ("The correct answer is: Four"). Not a phrase that goes on ("the answer is the one that").
_NO_OPTION = re.compile(r"[ \t]*(?:not\s+(?:an?\s+(?:valid\s+)?(?:option|choice)|one\s+of|among|listed|given|"
                        r"available|applicable|valid|provided|in\s+the)\b|-?\d[\d.,]*(?![\w)\]])|"
                        r"(?!(?:the|a|an|this|that|one|to|in|of|correct|not)\b)[A-Za-z]{2,}\s*(?:[.!]|$))",
                        re.IGNORECASE)
_DENIES = re.compile(r"\b(?:(?:is|was|are)\s+(?:not|wrong|incorrect|false)\b|(?:isn't|wasn't|aren't)\b|"
                     r"(?:cannot|can't|can\s+not)\s+be\b)", re.IGNORECASE)
_DENIED_AFTER = re.compile(rf"\s*(?:{_DENIES.pattern})", re.IGNORECASE)  # "(A) is wrong" right after a letter
_LINE_OPENING = re.compile(r"[ \t]*(?:(?:the|my|final|correct|best|right)[ \t]+)*", re.IGNORECASE)
_SENTENCE_END = ".!?\n"
_TERMINAL = ".!?)]}\"'”’*`"  # a response ending otherwise ends mid-sentence: it may have been cut off


class _Statement:
    """An answer statement: where it starts and ends, the option(s) it names, and by which rule."""
    __slots__ = ("start", "end", "letters", "rule")

    def __init__(self, start: int, end: int, letters: frozenset, rule: str):
        self.start, self.end, self.letters, self.rule = start, end, letters, rule


_RULE_ORDER = ("boxed", "marked", "stated", "text")


def extract_choice(text: str, choices: tuple[str, ...] | None = None) -> str | None:
    """The letter a response chooses (see choice_with_rule), the last-resort fallback included."""
    return choice_with_rule(text, choices)[0]


def choice_with_rule(text: str, choices: tuple[str, ...] | None = None,
                     fallback: bool = True) -> tuple[str | None, str | None]:
    """(letter, rule) of the answer a response chooses, or (None, None), or (None, "ambiguous").

    The response's *answer statements* are collected first:
    boxed      \\boxed{B}
    marked     "answer is (B)" / "Answer: B" / "the correct option is B" / "the answer to this question is B" /
               "the answer (B)" / "the correct answer B", words like "definitely", "actually", "indeed" may
               stand between; the placeholder "(X)" is none, nor is a letter denied ("the answer (A) is wrong")
    stated     a letter stated as chosen: "C is the correct option", "so I think it's A", "I'll say C",
               "(B), which is the answer", "letter e.", "Select answer E", "C is the only answer"
    text       an option's text as the answer, after an answer phrase ("the answer is Rome, because ...") or
               before one ("Rome is the correct answer", "The city of Rome is a correct option"), or after a
               subject asking for the answer ("The main function of chloroplasts is to produce glucose.")
    A statement followed by "?" is a question, and one in quotes a mention, not one. An answer phrase followed
    by no option ("the answer is: Four", "7", "not an option") is a statement naming none: if it is the last,
    there is no letter ("no answer is (B)" is none either). The **last** statement is the answer: an earlier
    one naming another option is a change of mind ("The answer is (A). ... Wait, so the answer is (C)": C), as
    a person reads it (tests/data/grading/README.md, rule 2). The statements of the last one's sentence count
    with it ("(D) ..., making choice (B) the correct option" names two), except those before a "but" ("(C),
    but the exact answer (E)": E); a letter among them wins over an option's text (the rule: the first of
    boxed, marked, stated, text among them). It is `ambiguous` (no letter) when it names several options ("(A)
    or (C)", "either B or D", "either a predator or ..."), when a statement naming another option stands right
    before it ("The answer is (A). So the answer is (C).": two answers, no change of mind), or when the
    response ends mid-sentence (cut off) after naming another option's label later than it.
    Without a statement:
    opening    a label opening the response ("(B) Paris", "B) ...", "B. ...", "[B]") or being all of it ("B");
               a digit only when it is all of it (a numbered list "1. First, ..." is not option A); not when the
               response lists options (two lines opening with different labels), the first sentence denies
               it ("(C) ... is not ...") or another label follows at once; "A:" opening a response is the
               answer prefix "Answer:", not option A ("A(B)" is B)
    text       with `choices`, the response is, or opens with, exactly one option's text followed by its end,
               punctuation or an explanation ("Paris.", "Earth's rotation. As the Earth spins, ...")
    fallback   (when `fallback`) the last standalone option letter ("... matches (B)."), only in a response that
               names no other option letter (never in a list of options or a comparison), not one denied ("A
               is incorrect"): the rule a person would hesitate over, recorded so that it can be audited or
               switched off
    Numeric labels (ARC's 1-4) map to letters (1 -> A) after an answer phrase. Letters are capitals, but a
    parenthesised "(b)" is B; an "A" or "I" before a lowercase word is an article or a pronoun."""
    letters, digits = _labels(choices)
    # Markdown bold, math mode and \text{} around the letter: "**B**", "$\textbf{(B)}$"; a quoted letter is
    # a label too: 'you can answer "B", which is the correct answer' (not in single quotes: "the letter 'D'").
    text = _TEXT_WRAP.sub(r"\1", text.replace("*", "").replace("$", ""))
    text = re.sub(rf"[\"“]([{letters}])[\"”]", r"(\1)", text)
    # This model family's answer prefix: "A: The correct answer is (C)" is C, "A:" alone is no answer, and
    # "A(B) milling" is the prefix run into the label (B).
    text = re.sub(r"^\s*A(?::(?=\s|$)|(?=\([B-J]\)))", "", text)
    # A capital letter not glued to a word, or a parenthesised one in any case. Outside an answer phrase an "A"
    # or "I" before a lowercase word is an article or a pronoun ("A cat", "I think"), unless it is "A is ...".
    enclosed, bare = rf"\(([{letters}{letters.lower()}])\)|\[([{letters}])\]", rf"([{letters}])(?![\w'’]|\.\d)"
    marked_letter = rf"(?:{enclosed}|{bare})"
    letter = rf"(?:{enclosed}|(?![AI]\s+(?!(?:is|or|and|seems|must|would)\b)[a-z]){bare})"
    options = _Options(choices) if choices else None

    statements = []

    def add(start: int, end: int, named: frozenset, rule: str) -> None:
        if re.match(r"\s*\?", text[end:end + 8]):
            return  # "So B? No, it's D.": a question, not an answer
        statements.append(_Statement(start, end, named, rule))

    for m in re.finditer(r"\\(?:boxed|fbox)\{", text):
        found = re.match(rf"\s*\(?([{letters}{digits}{letters.lower()}])\)?(?:[\s.):}}]|$)", text[m.end():m.end() + 20])
        if found:
            add(m.start(), m.end() + found.end(), frozenset(_resolve_label(found[1].upper(), choices)), "boxed")
    # A second option right after the first: "(A) or (C)", "B or D", "(C) B) see other people", "D is (C)".
    # Not one that follows denied: "the answer is A, B is wrong".
    several = (rf"(?:\s*(?:,|/|&|\bor\b|\band\b|\bvs\.?)\s*(?:\(([{letters}X])\)|\[([{letters}X])\]|"
               rf"([{letters}X])(?![\w'’]))|\s*(?:\(([{letters}X])\)|\[([{letters}X])\]|([{letters}X])\))|"
               rf"\s+(?:is|=)\s+\(([{letters}])\))"
               rf"(?!\s+(?:is|was|are)\s+(?:not|wrong|incorrect|false)\b)")
    marks = list(_CHOICE_MARK.finditer(text))
    for m in marks:
        if _QUOTED.search(text, max(m.start() - 6, 0), m.start()):
            continue  # a quotation mentions an answer, it gives none
        if re.search(r"\bno\s+\Z", text[max(m.start() - 4, 0):m.start()], re.IGNORECASE):
            continue  # "no answer is (B)": a denial
        rest = text[m.end():m.end() + 300]  # bounded: a copy of the whole rest per mark would be quadratic
        line_start = text.rfind("\n", 0, m.start()) + 1
        if "\n" in m[0] and not _LINE_OPENING.fullmatch(text, line_start, m.start()):
            continue  # "each option:\n\nOption A: ..." introduces a list: an answer on the next line needs "Answer:"
        found = re.match(rf"({_FILLER})(either\s+)?(?:{marked_letter}|\(?([{digits}])\)?(?![\w.]))", rest,
                         re.IGNORECASE)
        if found and (label := _first_of(found)) and (label.isdigit() or found[5] is None or found[5].isupper()):
            if _DENIED_AFTER.match(rest, found.end()):
                continue  # "the answer (E) is not correct", "which is the answer - (A) isn't listed": a denial
            named = {_resolve_label(label.upper(), choices)}
            if found[5] and options is not None:  # "The correct answer is A teratogen": an option's text, not A
                picked = options.opening(rest[found.start(5):found.start(5) + options.limit])
                if picked and options.raw[CHOICE_LETTERS.index(picked)].lower().startswith(f"{found[5].lower()} "):
                    add(m.start(), m.end() + found.end(), frozenset(picked), "text")
                    continue
            other = re.match(several, rest[found.end():found.end() + 40])
            if other:
                named.add(_first(other).upper())
            if found[2]:  # "either ... or ...": several options whatever follows
                named.add("X")
            add(m.start(), m.end() + found.end(), frozenset(named), "marked")
        elif re.match(rf"{_FILLER}either\b", rest, re.IGNORECASE):
            add(m.start(), m.end(), frozenset("X?"), "marked")  # "either (X) or D", "either a predator or ...": several
        else:
            tail = rest[:options.limit] if options is not None else rest
            placeholder = _PLACEHOLDER.match(tail)
            picked = options.opening(tail[placeholder.end():] if placeholder else tail) if options else None
            if picked:
                add(m.start(), m.end(), frozenset(picked), "text")
            elif not placeholder and _NO_OPTION.match(tail):
                add(m.start(), m.end(), frozenset(), "none")  # "the correct answer is: Four", "... not an option"
    stated = [*re.finditer(rf"{_BEFORE}{_FILLER}{letter}", text, re.IGNORECASE),
              *re.finditer(rf"(?<![\w'’]){letter}(?:\s*\([^()\n]{{1,160}}\))?{_AFTER}", text),
              *re.finditer(rf"{_OPTION_NAMED}{letter}(?=\s*(?:[,.;!]|$))", text, re.IGNORECASE),
              *re.finditer(rf"{_OPTION_NAMED}{letter}\s+the\s+(?:correct|right|best)\s+(?:answer|option|choice)", text,
                           re.IGNORECASE)]  # "making choice (B) the correct option"
    for m in stated:
        if m[3] is None or m[3].isupper():  # case-blind phrases, case-exact letters
            named = {_first(m).upper()}
            if other := re.match(several, text[m.end():m.end() + 40]):
                named.add(_first(other).upper())  # "Thus, (A) (B) and (C)": several
            add(m.start(), m.end(), frozenset(named), "stated")
    # Named as a letter, in either case, where its clause ends: "I am assuming letter e.", "the letter (B)."
    for m in re.finditer(rf"\bletter\s+\(?([{letters}{letters.lower()}])\)?(?![\w'’])(?=\s*(?:[,.;!]|$))", text):
        add(m.start(), m.end(), frozenset(m[1].upper()), "stated")
    if options is not None:
        for m in re.finditer(_BEFORE, text, re.IGNORECASE):
            picked = options.opening(text[m.end():m.end() + options.limit])
            if picked:
                add(m.start(), m.end(), frozenset(picked), "text")
        for m in _PREDICATE.finditer(text):
            picked = options.opening(text[m.end():m.end() + options.limit])
            if picked:
                add(m.start(), m.end(), frozenset(picked), "text")
        for m in _TEXT_STATED.finditer(text):
            lo = max(m.start() - options.limit, 0)
            start = max(lo, *(text.rfind(c, lo, m.start()) + 1 for c in _SENTENCE_END))
            subject = re.sub(r"^\s*(?:(?:so|thus|hence|therefore|then)\b,?\s*)?", "", text[start:m.start()])
            picked = options.ending(subject)
            if picked:
                add(start, m.end(), frozenset(picked), "text")

    if statements:
        statements.sort(key=lambda s: s.end)
        if not statements[-1].letters:
            return None, None  # the last answer given is no option: it supersedes any earlier one and the opening
        statements = [s for s in statements if s.letters]
        # The last statement, with those of its sentence short of a "but" (one phrase may match two rules: "(B),
        # which is the answer"), is the answer; an earlier different one is a change of mind unless right before.
        last = statements[-1]
        sentence = max(last.start - 300, 0, *(text.rfind(c, 0, last.start) + 1 for c in _SENTENCE_END))
        group = [s for s in statements if s.end > last.start
                 or (s.start >= sentence and not _CONTRAST.search(text, s.end, last.start))]
        lettered = [s for s in group if s.rule != "text"]
        named = frozenset().union(*(s.letters for s in (lettered or group)))
        if len(named) != 1:
            return None, "ambiguous"
        before = [s for s in statements if s not in group]
        first = min(group, key=lambda s: s.start)
        if before and before[-1].letters != named and _back_to_back(text, before[-1], first, options):
            return None, "ambiguous"
        picked, = named
        if _contradicted_after(text, last.end, picked, letters):
            return None, "ambiguous"
        return picked, min((s.rule for s in (lettered or group)), key=_RULE_ORDER.index)

    # A list of options, not a pick: two lines opening with different labels, or three labels in one line; not
    # lines that deny them ("(D)\n(A), (B) and (C) are incorrect." is D).
    lines = [line for line in text.split("\n") if not _DENIES.search(line)]
    opener = re.compile(rf"[ \t]*(?:[-•][ \t]*|\d+[.)][ \t]+)?(?:\(([{letters}])\)|\[([{letters}])\]|"
                        rf"([{letters}])[.):])")
    openers = {_first(m) for line in lines if (m := opener.match(line))}
    listed = len(openers) >= 2 or any(
        len({_first_of_tuple(t) for t in re.findall(rf"\(([{letters}])\)|(?<![\w'’])([{letters}])\)", line)}) >= 3
        for line in lines)
    m = re.match(rf"\s*(?:\(([{letters}{digits}])\)|\[([{letters}])\]|([{letters}])(?:[.):]|\s*$)|([{digits}])\s*$)",
                 text)
    denied = 0  # where a denied opening label ends: "(C) ... is not a detail" is no pick, nor a fallback letter
    # An opening label followed at once by another ("(A) Choice (C) refers to ...") names two: no pick.
    if m and not listed and not re.match(rf"[ \t:,\-]*(?:(?:option|choice)\s+)?(?:\([{letters}]\)|[{letters}]\))",
                                         text[m.end():m.end() + 20], re.IGNORECASE):
        first_sentence = re.match(r"[^.!?\n]{0,300}", text[m.end():])[0]
        if _DENIES.search(first_sentence):
            denied = m.end()
        else:
            picked = _resolve_label(_first(m), choices)
            if _contradicted_after(text, m.end(), picked, letters):
                return None, "ambiguous"
            return picked, "opening"
    if options is not None and not listed:
        picked = options.opening(text)
        if picked:
            return picked, "text"
    if fallback:
        # Not a letter denied ("Option A is incorrect"), nor an "A" or "I" before a capitalised word ("A Verber").
        candidates = re.compile(rf"(?<![\w'’])(?![AI]\s+[A-Z][a-z]){letter}").finditer(text, denied)
        found = [_first(m).upper() for m in candidates if not _DENIED_AFTER.match(text, m.end())]
        if found and len(set(found)) == 1:
            return found[-1], "fallback"
    return None, None


_NOT_ALONE = frozenset("or and nor neither either not isn't than except besides but without unlike".split())


class _Options:
    """The option texts of a question, to read an answer given as an option's text rather than its label."""

    def __init__(self, choices: tuple[str, ...]):
        self.raw = [c.strip().rstrip(".").strip() for c in choices]
        self.normal = [_option_text(c) for c in choices]
        self.content = [_content_words(c) for c in choices]
        self.limit = 2 * max(map(len, choices)) + 20  # a longer text is no option's: never read further

    def whole(self, candidate: str) -> str | None:
        """The letter of the one option `candidate` is (an article before it aside, or short of its articles and
        prepositions: "Coral reef" is "on a coral reef"), else None."""
        for text in (candidate, _ARTICLE.sub("", candidate.lstrip(), count=1)):
            if self.normal.count(_option_text(text)) == 1:
                return CHOICE_LETTERS[self.normal.index(_option_text(text))]
        content = _content_words(candidate)
        if content and self.content.count(content) == 1:
            return CHOICE_LETTERS[self.content.index(content)]
        return None

    def ending(self, subject: str) -> str | None:
        """The letter of the one option `subject` is or ends with ("The method using bar graph" is "bar graph"),
        the longest; not after a word that joins or excludes ("Paris or Rome", "other than Rome")."""
        words = subject.split()
        for i in range(len(words)):
            if i and words[i - 1].lower().strip(",;:") in _NOT_ALONE:
                continue
            picked = self.whole(" ".join(words[i:]))
            if picked:
                return picked
        return None

    def opening(self, candidate: str) -> str | None:
        """The letter of the one option `candidate` is, or opens with before its end, punctuation or an
        explanation ("Earth's rotation, because ..."); the longest such option; None if none or a tie."""
        line = candidate.split("\n", 1)[0]
        whole = self.whole(line)
        if whole:
            return whole
        stripped = line.lstrip()
        found = {}
        for start in {stripped, _ARTICLE.sub("", stripped, count=1)}:
            low = start.lower()
            for i, option in enumerate(self.raw):
                if option and low.startswith(option.lower()) and _TEXT_END.match(start, len(option)):
                    after = start[len(option):].lstrip(" ,;:")
                    if any(o and o != option and after.lower().startswith(o.lower()) for o in self.raw):
                        continue  # "London, Paris and Rome": a list of options, not one
                    found[i] = len(option)
        if not found:
            return None
        longest = max(found.values())
        best = [i for i, n in found.items() if n == longest]
        return CHOICE_LETTERS[best[0]] if len(best) == 1 else None


# What may stand between two answer statements that are one right after the other: punctuation, a list marker,
# a line's opening words ("The correct answer is ...").
_BETWEEN = re.compile(r"[\s.,;:!)\]\-–—/]*(?:(?:\d+[.)]|[-•]|step\s+\d+:?)\s*)?(?:(?:the|my|final|correct|so|thus|"
                      r"therefore|hence|and|but)\b[\s,]*)*", re.IGNORECASE)


_RESTATES = re.compile(r"^[\s,:\-–—]*(?:(?:which|that)\s+is\s+|i\.e\.,?\s*)?", re.IGNORECASE)  # before an option's text


def _back_to_back(text: str, before: "_Statement", after: "_Statement", options: "_Options | None") -> bool:
    """Whether only punctuation, a list marker, opening words or the earlier option's text stand between."""
    between = text[before.end:after.start]
    if options is not None and len(before.letters) == 1:
        option = options.raw[CHOICE_LETTERS.index(next(iter(before.letters)))]
        stripped = _RESTATES.sub("", between, count=1)
        if option and stripped[:len(option)].lower() == option.lower():
            between = stripped[len(option):]  # "The answer is (C) Rome. The answer is (D).", "A, which is Paris."
    return _BETWEEN.fullmatch(between) is not None


def _contradicted_after(text: str, end: int, picked: str, letters: str) -> bool:
    """Whether a response that ends mid-sentence (cut off) names another option's label after `end`: it went
    back to weighing options, so its last answer statement is not its final answer."""
    tail = text.rstrip()
    if not tail or tail[-1] in _TERMINAL or re.search(rf"(?<![\w'’(])[{letters}]$", tail):
        return False
    others = letters.replace(picked, "")
    return bool(others) and re.search(rf"\([{others}](?:\)|$)|\[[{others}]\]|(?<![\w'’])[{others}]\)|"
                                      rf"\b(?i:option|choice)\s+[{others}](?![\w'’])", text[end:]) is not None


def _first_of(m: re.Match) -> str | None:
    """The first group that matched, from group 3 on (groups 1-2 are the filler and "either")."""
    return next((g for g in m.groups()[2:] if g), None)


def _first_of_tuple(groups: tuple) -> str:
    return next(g for g in groups if g)


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
