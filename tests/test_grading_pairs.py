"""The math grader and the letter extractor against labelled cases (tests/data/grading/), with plain math-verify
measured on the same pairs. Rows marked split "heldout" were written before the code they measure."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from rewardscope.grading import Grader, grade_one
from rewardscope.grading.audit import choice_agreement, cohen_kappa, math_agreement, read_cases
from rewardscope.grading.answers import choice_with_rule, extract_choice
from rewardscope.grading.pool import DeadlinePool

DATA = Path(__file__).parent / "data" / "grading"
MATH_FIELDS, CHOICE_FIELDS = ("pred", "gold", "equal"), ("response", "label")
TARGET_MATH, TARGET_CHOICE = 0.92, 0.90


def plain_math_verify(pred, gold):
    """Pool task: math-verify 0.9 as its README calls it (default extraction, its own timeouts)."""
    from math_verify import parse, verify

    yield {"equal": bool(verify(parse(gold), parse(pred)))}


@pytest.fixture(scope="module")
def math_grader():
    with Grader("math", timeout_s=20.0, workers=2) as grader:  # generous: a loaded machine is slow, not wrong
        yield grader


def _by_split(cases, agrees):
    out = {}
    for split in ("heldout", "tuning", None):
        picked = [a for c, a in zip(cases, agrees) if split is None or c["split"] == split]
        out[split or "all"] = (sum(picked), len(picked))
    return out


def test_math_pairs_agreement(math_grader):
    cases = read_cases(DATA / "math_pairs.jsonl", MATH_FIELDS)
    ours = math_agreement(cases, math_grader)
    missed = {id(c) for c, _ in ours.misses}
    ours_ok = [id(c) not in missed for c in cases]
    with DeadlinePool(f"{__name__}:plain_math_verify", workers=2, timeout_s=20.0, preload=("math_verify",)) as pool:
        outcomes = pool.map([(c["pred"], c["gold"]) for c in cases])
    plain_ok = [(o.status == "ok" and o.value["equal"]) == c["equal"] for o, c in zip(outcomes, cases)]
    print()
    for name, flags in (("rewardscope", ours_ok), ("plain math-verify", plain_ok)):
        print(f"{name:18}", "  ".join(f"{k} {a}/{n} = {a / n:.1%}" for k, (a, n) in _by_split(cases, flags).items()))
    classes = Counter(c["class"] for c in cases)
    for cls in sorted(classes):
        print(f"  {cls:20} rewardscope {sum(o for c, o in zip(cases, ours_ok) if c['class'] == cls)}/{classes[cls]}"
              f"  plain {sum(o for c, o in zip(cases, plain_ok) if c['class'] == cls)}/{classes[cls]}")
    for case, verdict in ours.misses:
        print("  disagrees:", case["split"], case["pred"], "|", case["gold"], "expected", case["equal"], verdict)
    heldout = _by_split(cases, ours_ok)["heldout"]
    assert heldout[1] >= 60 and ours.rate >= TARGET_MATH and heldout[0] / heldout[1] >= TARGET_MATH


@pytest.mark.parametrize("pred, gold, equal", [
    # The blind spots of issue 7, one of each, and pairs that must stay unequal.
    (r"\frac {3}{4}", "0.75", True), (r"\dfrac{2}{5}", r"\frac{2}{5}", True),
    ("sqrt(2)/2", r"\frac{\sqrt{2}}{2}", True),
    ("3**(1/3)", r"\sqrt[3]{3}", True), ("4*y", "4y", True), ("(3,-1)", "(3,-1)", True), ("{2,4,6}", "{2,4,6}", True),
    ("[0,5]", "[0,5]", True), (r"x \mid y", r"x\mid y", True), (r"\$\$", r"\$\$", True), (r"\tfrac52", "2.5", True),
    (r"\frac12 i", r"\frac{i}{2}", True),
    (r"\left[ 0, 1 \right]", "[0,1]", True), (r"5\,280", "5280", True), (r"\mathrm{B}", "B", True),
    (r"\textbf{C}", "C", True), (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{bmatrix}1\\2\end{bmatrix}", True),
    (r"\$25", "25", True), ("60°", r"60^\circ", True), ("12\\", "12", True), ("y=3", "3=y", True),
    ("3", "3 = t", True), ("t = 2t^2+1", "1+2t^2", True), (r"\sqrt{2} \approx 1.41", r"\sqrt{2}", True),
    (r"12.5\%", "0.125", True), (r"12.5\%", "12.5", True), (r"\frac{1}{8}\text{ percent}", "0.125", True),
    ("x = 2+3 = 5 = 7", "7", True), ("1,5", "1.5", False), ("1-1/e", "1+1/e", False),
    (r"1 - \frac{1}{\mathrm{e}}", r"1 + \frac{1}{\mathrm{e}}", False), ("(3,-1)", "(-1,3)", False),
    (r"\{2,4,6\}", r"\{2,4,7\}", False), ("x=3", "x=4", False), ("a=3", "b=3", False), ("0.125", "12.5", False),
    (r"\frac{1}{2^{99}}", r"\frac{1}{2^{98}}", False), ("[0,5]", "(0,5)", False), ("2", "3", False),
])
def test_math_blind_spots(math_grader, pred, gold, equal):
    verdict = math_grader.grade([pred], [gold])[0]
    assert verdict.equal is equal, verdict
    assert verdict.reason == ("correct" if equal else "wrong")


def test_math_verdict_shows_what_was_compared(math_grader):
    bare, prose, nothing = math_grader.grade([r"\frac {3}{4}", "Answer: sqrt(2)/2", "I do not know."],
                                             ["0.75", r"\frac{\sqrt{2}}{2}", "1"])
    assert (bare.extracted, bare.reason) == (r"\frac{3}{4}", "correct")  # the rewrite that verified
    assert prose.equal and prose.extracted == "sqrt(2)/2"
    assert (nothing.extracted, nothing.reason) == (None, "no_answer")


# ---- multiple choice -------------------------------------------------------------------------------------

def test_choice_responses_agreement():
    cases = read_cases(DATA / "choice_responses.jsonl", CHOICE_FIELDS)
    heldout = [c for c in cases if c["split"] == "heldout"]
    on, off = choice_agreement(heldout), choice_agreement(heldout, choice_fallback=False)
    everything = choice_agreement(cases)
    print(f"\nletter extractor, held out: {on} (without the fallback rule: {off}); all cases: {everything}")
    # Round 2: written before the extractor learned ambiguity, option lists and option texts with explanations.
    for split in ("heldout", "tuning"):
        for round_ in (1, 2):
            picked = [c for c in cases if c["split"] == split and c.get("round", 1) == round_]
            print(f"  {split} round {round_}: {choice_agreement(picked)} "
                  f"(without the fallback rule: {choice_agreement(picked, choice_fallback=False)})")
    for case, said in everything.misses:
        print("  disagrees:", case["split"], repr(case["response"]), "label", case["label"], "read", said)
    second = [c for c in heldout if c.get("round") == 2]
    assert len(heldout) >= 90 and len(second) >= 40
    assert on.rate >= TARGET_CHOICE and everything.rate >= TARGET_CHOICE
    assert choice_agreement(second).rate >= TARGET_CHOICE


def test_cohen_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    first = ["A", "B", None, "C", None, "A", "D", None, "B", "A"]
    second = ["A", "B", "C", "C", None, None, "D", None, "A", "A"]
    reference = cohen_kappa_score([str(x) for x in first], [str(x) for x in second])
    assert cohen_kappa(first, second) == pytest.approx(reference, abs=1e-12)
    assert cohen_kappa(first, first) == 1.0 and cohen_kappa(["A"] * 3, ["A"] * 3) == 1.0
    with pytest.raises(ValueError, match="same cases"):
        cohen_kappa(first, second[:-1])


OPTIONS = ("Paris", "London", "Rome", "Berlin")


@pytest.mark.parametrize("text, letter, rule", [
    ("the answer is definitely C", "C", "marked"),
    ("so I think it's A", "A", "stated"),
    ("the correct option is (D)", "D", "marked"),
    ("C is the correct option", "C", "stated"),
    ("the answer is actually B)", "B", "marked"),
    ("the answer is indeed (D)", "D", "marked"),
    ("Rome, so the answer is (B). The answer is (X)", "B", "marked"),  # the instruction's placeholder echoed
    ("The answer is (X)", None, None),
    ("1. First, Paris is in France.\n2. Then we compare.", None, None),  # a numbered list, not option A
    ("1. First, Paris is French.\n2. So the answer is C.", "C", "marked"),
    ("Step 1: 3 * 5 = 15, which matches (B).", "B", "fallback"),
    ("A bird can fly.", None, None),
    ("I think B.", "B", "fallback"),
    # Answer statements naming different options: the last is a change of mind (README rule 2, as two blind
    # readers and an adjudicator read SmolLM2's responses); no answer a person can tell when they stand one right
    # after the other or one names several.
    ("The answer is (B). London is in England. The answer is (D).", "D", "marked"),
    ("The correct option is (B) Paris, the capital of France.\n\nThe correct answer is (A) Paris.", "A", "marked"),
    ("1. The answer is (A) Paris, a big city.\n2. The answer is (B) London.", "B", "marked"),
    ("1. The answer is (A) Paris.\n2. The answer is (B) London.", None, "ambiguous"),  # only a list marker between
    ("1. The correct option is A, which is Paris.\n2. The correct option is D.", None, "ambiguous"),  # text restated
    ("The answer is (A) or (C).", None, "ambiguous"),
    ("The answer is either B or D.", None, "ambiguous"),
    ("The answer is either (X) or D.", None, "ambiguous"),
    ("The answer is (C) B) London", None, "ambiguous"),
    ("It is B. It is C.", None, "ambiguous"),
    ("\\boxed{A}\n\nThe answer is (C).", None, "ambiguous"),
    ("Paris is the correct answer. The answer is (C).", None, "ambiguous"),
    # ... unless the later one corrects the earlier; a question is no statement; a denial names no option.
    ("The answer is (B). Wait, no: the answer is (C).", "C", "marked"),
    ("I think the answer is (A). Actually, the answer is (D).", "D", "marked"),
    ("So A? No, it's C.", "C", "stated"),
    ("The answer is (C) Rome, not (A) Paris.", "C", "marked"),
    ("The answer is A, B is wrong.", "A", "marked"),
    ("The answer is (B). The answer is (B).", "B", "marked"),
    # A conclusion supersedes what came before it, unless it follows another answer at once; conclusions that
    # disagree are ambiguous; a quoted answer is a mention, not an answer.
    ("The answer is (A). Paris is big, London is old. Based on this, the answer is (C).", "C", "marked"),
    ("(B) London\n\n1. London is old.\n2. So, in this case, it's Rome.", "C", "text"),
    ("The answer is (A). So the answer is (C).", None, "ambiguous"),
    ("The answer is (D). Therefore, the answer is (B). Therefore, the answer is (C).", None, "ambiguous"),
    ('The answer is (C). Some say "the answer is (B)", which is wrong.', "C", "marked"),
    # The last answer names no option (a word, a number, "not an option"): no letter, whatever came before.
    ("(A) Paris\n\nThe correct answer is: Four", None, None),
    ("A) Paris. The answer is not an option.", None, None),
    ("The answer is (B). The answer is 7.", None, None),
    ("(D) Berlin\n\nThis answer is the answer to the question.", "D", "opening"),  # a phrase that goes on
    ("The answer must be either Paris or Rome", None, "ambiguous"),
    ('Option C ("Rome is in Italy") is the correct answer.', "C", "stated"),
    # An opening option line is superseded by a later statement.
    ("A) Paris\n\nThe correct answer is (C) Rome.", "C", "marked"),
    # Cut off (ends mid-sentence): weighing another option again after the answer, or only explaining it.
    ("The answer is (C) Rome. Rome is old, but (A) Paris is also", None, "ambiguous"),
    ("The answer is (C) Rome. Rome has been the capital since", "C", "marked"),
    ("The answer is (C) Rome. Rome is old. Direction (A", None, "ambiguous"),  # cut inside a label
    # A list of options is no pick: no opening, no fallback.
    ("A) Paris\nB) London\nC) Rome\nD) Berlin", None, None),
    ("(A) Paris (B) London (C) Rome: which one?", None, None),
    ("Options:\n(A) Paris\n(B) London\nWhich is it, A or B?", None, None),
    ("(B) London is not the capital of France.", None, None),
    ("(B) London is the capital of England.", "B", "opening"),
    ("A:", None, None),  # the answer prefix "Answer:", not option A
    ("A: The answer is (D).", "D", "marked"),
    # An option's text, with punctuation or an explanation after it, or stated as the answer.
    ("The answer is Rome, because it is in Italy.", "C", "text"),
    ("Rome. It is in Italy.", "C", "text"),
    ("The answer is (X) = Rome", "C", "text"),
    ("Berlin is the most suitable answer.", "D", "text"),
    ("The answer is Rome or Berlin.", None, None),
    ("Rome, Berlin and Paris are capitals.", None, None),
    # Forms read in SmolLM2's responses (the rules of tests/data/grading/README.md, third change).
    ("A(B) London", "B", "opening"),  # the answer prefix "A" run into the label
    ("I am assuming letter c.", "C", "stated"),
    ("I looked at the options, and (B), which is the answer, is London.", "B", "stated"),
    ("The answer is (B); the answer (A) is not right.", "B", "marked"),  # a denied letter is no statement
    ("The answer (C), and the others are wrong.", "C", "marked"),
    ("The answer is (A). Paris is big. However, C is the correct answer.", "C", "stated"),  # "however" corrects
    ("Rome is a correct option.", "C", "text"),
    ("Rome is an option.", None, None),
    ("The city of Rome is the most direct and accurate option.", "C", "text"),  # a subject ending with the text
    ("Paris or Rome is the correct answer.", None, None),
    ("The main city of Italy is Rome.", "C", "text"),  # the question restated with its answer
    ("The capital of Italy is Rome.", None, None),  # a plain fact
    ("(D)\n(A), (B) and (C) are incorrect.", "D", "opening"),  # denied labels are no list
    ("(A) Choice (C) is about Rome.", None, None),  # two labels at once: no opening pick
    ("The correct answer D is (C).", None, "ambiguous"),
    ("So the correct answer D.", "D", "marked"),
    ("A possible answer: (D) Berlin, making choice (B) the correct option.", None, "ambiguous"),
    ("We have 2 choices for the answer (A), but the exact correct answer (C) is here.", "C", "marked"),
    ("The answer is (C). No answer is (B), as none fits.", "C", "marked"),  # "no answer is" denies
    # A closing line opening with the formula is the final answer, unless another answer stands right before it.
    ("The answer is (A).\nParis is big.\nThe answer is (C).", "C", "marked"),
    ("The answer is (A).\nThe answer is (C).", None, "ambiguous"),
    # Fourth change: general phrasings missed on the third held-out set (its misses read after it was measured).
    ("The answer is (B). Paris is big. Ultimately, I think the answer is (D).", "D", "marked"),
    ("Earlier I said A. The answer was C) Rome.", "C", "marked"),
    ("Step 3: Select answer D", "D", "stated"),
    ("Let's choose option B.", "B", "stated"),
    ("(C) Rome.\nOption C is the only answer.", "C", "stated"),
    ('You can answer "B", which is the correct answer.', "B", "marked"),
    ("(D) cannot be answered from the text.", None, None),
    ("Thus, (A) (B) and (C) (D)", None, "ambiguous"),
    ("Option A is incorrect because it is big.", None, None),  # a denied letter is no fallback letter
    ("A: A Verber 32", None, None),
    ("The answer is (C) Rome. Then Option A is", None, "ambiguous"),  # cut off weighing, "Option" capitalised
    ("The answer is Rome (the capital).", "C", "text"),
])
def test_choice_reads_what_a_person_reads(text, letter, rule):
    assert choice_with_rule(text, OPTIONS) == (letter, rule)


def test_choice_text_answer_needs_one_option():
    assert choice_with_rule("A bar graph is the best answer.", ("bar graph", "line graph")) == ("A", "text")
    assert choice_with_rule("The answer is (X) = 1", ("3", "2", "1", "4")) == ("C", "text")
    assert choice_with_rule("The answer is red apple, since", ("red", "red apple")) == ("B", "text")  # the longest
    # An option's text short of its articles and prepositions; a text beginning with "A" is not the letter A.
    reef = ("in a volcano", "on a forest floor", "on a coral reef", "at the bottom of a river")
    assert choice_with_rule("Coral reef", reef) == ("C", "text")
    teratogen = ("An Apgar", "A teratogen", "A drug")
    assert choice_with_rule("The correct answer is A teratogen.", teratogen) == ("B", "text")
    assert choice_with_rule("The correct answer I think is B", tuple("abcdefghij")) == ("B", "marked")


def test_choice_ambiguous_is_its_own_reason():
    texts = ["The answer is (B). The answer is (D).", "The answer is (B) or (D).", "The answer is (B)."]
    for fallback in (True, False):
        verdicts = Grader("choice", choice_fallback=fallback).grade(texts, ["B"] * 3, [OPTIONS] * 3)
        assert [(v.extracted, v.reason) for v in verdicts] == [(None, "ambiguous"), (None, "ambiguous"),
                                                               ("B", "correct")]


def test_choice_fallback_is_recorded_and_can_be_switched_off():
    text = "Step 1: 3 * 5 = 15, which matches (B)."
    assert Grader("choice").grade([text, text], ["B", "C"]) == [
        grade_one(text, "B", "choice"), grade_one(text, "C", "choice")]
    on = Grader("choice").grade([text, text, "The answer is (B)"], ["B", "C", "B"])
    assert [v.reason for v in on] == ["correct (fallback)", "wrong (fallback)", "correct"]
    off = Grader("choice", choice_fallback=False).grade([text, "The answer is (B)"], ["B", "B"])
    assert [(v.extracted, v.reason) for v in off] == [(None, "no_answer"), ("B", "correct")]
    assert extract_choice(text) == "B"


@pytest.mark.parametrize("text", ["so " * 7000, "the answer is " * 2000, "option " * 3000, "it is definitely " * 1500,
                                  "I would say " * 2000, "answer: " * 3000, "A " * 10000, "answer to the " * 3000,
                                  "the answer to this question is " * 1500, "(A) or " * 5000, "A) x\n" * 8000,
                                  "Paris is the correct answer " * 1500, "\\boxed{" * 8000, "the answer is (X) " * 3000,
                                  "So B? " * 5000, "wait, " * 8000, "Paris, " * 6000, "x" * 60000])
def test_choice_extraction_stays_linear_on_long_responses(text):
    # It runs in the caller's process with no deadline: a quadratic regex would stall a rollout for minutes
    # (these took 1.5-25 s before the look-aheads were bounded, 0.05-0.15 s after).
    start = time.monotonic()
    choice_with_rule(text, OPTIONS)
    assert time.monotonic() - start < 3.0
