"""Grading: extraction edge cases per kind, the deadline pool's kill and crash paths, grade_file, real datasets."""

from __future__ import annotations

import json
import os
import time

import pytest

from rewardscope.errors import RewardscopeError
from rewardscope.grading import Grader, Verdict, grade_file, grade_one, grader_kinds
from rewardscope.grading.answers import extract_choice, extract_number, gold_choice, same_number
from rewardscope.grading.pool import DeadlinePool

HANGS_SYMPY = r"The answer is \boxed{9^{9^{9^{9}}}}"  # verify() runs for minutes on this


def flaky_echo(text):
    """Pool task for these tests (workers import it from this module): hangs, crashes or raises on request."""
    yield {"seen": text, "pid": os.getpid()}
    if text == "hang":
        time.sleep(600)
    if text == "crash":
        os._exit(3)
    if text == "raise":
        raise ValueError("bad input")
    yield {"echo": text, "pid": os.getpid()}


# Deadlines in these tests are far from what they guard (minutes of sympy), so that a loaded 2-core machine, where
# a worker may wait seconds for a core, passes them: a correct answer must never time out here.
SLACK_S = 15.0


@pytest.fixture(scope="module")
def math_grader():
    with Grader("math", timeout_s=10.0, workers=2) as grader:
        yield grader


# ---- number ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, number", [
    ("#### 18", "18"),
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
    ("The answer is 18.", "18"),
    ("The answer is: $1,000.", "1000"),
    ("So she pays \\boxed{\\$1{,}250.50} in total", "1250.50"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
    ("\\boxed{2 \\times 9 = 18}", "18"),
    ("\\boxed{\\frac{3}{4}}", "3/4"),
    ("It drops to -5 degrees", "-5"),
    ("It costs -$7 net", "-7"),
    ("16-3-4=9 eggs", "9"),
    ("Final answer: 0.5 kg", "0.5"),
    ("temperature \u22123", "-3"),
    ("1,000 people came and 1,2,3 left; 12", "12"),
    ("#### 1,234.5 is what is left", "1234.5"),
    ("#### seven\nThe answer is 7", "7"),  # a marker without a number gives way to the next rule
    ("no digits here", None),
    ("x2 and y3", None),
])
def test_extract_number(text, number):
    assert extract_number(text) == number


@pytest.mark.parametrize("a, b, equal", [
    ("18", "18.0", True), ("18", "18.00", True), ("1000", "1000", True), ("0.75", "3/4", True),
    ("-5", "5", False), ("18", "18.5", False), ("1.5/2", "0.75", True),
])
def test_same_number(a, b, equal):
    assert same_number(a, b) is equal


def test_number_verdicts_keep_strings_and_reasons():
    grader = Grader("number")
    verdicts = grader.grade(["The answer is $18.00.", "I think 17", "   ", "I cannot tell", "x"],
                            ["Janet ... $<<9*2=18>>18\n#### 18", "18", "18", "18", "no number"])
    assert verdicts[0] == Verdict("18.00", "18", True, "correct")
    assert verdicts[1] == Verdict("17", "18", False, "wrong")
    assert verdicts[2] == Verdict(None, "18", False, "empty")
    assert verdicts[3] == Verdict(None, "18", False, "no_answer")
    assert not verdicts[4].equal and verdicts[4].reason.startswith("error: no number answer in gold")


# ---- choice ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, letter", [
    ("The answer is (B)", "B"),
    ("Answer: B", "B"),
    ("so the correct answer is **C**.", "C"),
    ("The answer is option D because ...", "D"),
    ("\\boxed{B}", "B"),
    ("Thus $\\boxed{\\text{(E)}}$", "E"),
    ("\\boxed{b}", "B"),
    ("The answer is $\\textbf{(B)}$", "B"),
    ("Final answer: **(C) Rome**", "C"),
    ("(B) Paris", "B"),
    ("C) Paris is the capital", "C"),
    ("B", "B"),
    ("D.", "D"),
    ("The answer is (3)", "C"),  # ARC's numeric labels
    ("The answer is A.", "A"),
    ("A bird can fly.", None),  # an article, not option A
    ("The answer is a bird", None),
    ("The answer is Bank", None),
    ("I am not sure", None),
    ("The answer is F", None),  # not one of A-E
])
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


def test_extract_choice_with_options():
    options = ("London", "Paris", "Rome")
    assert extract_choice("Paris.", options) == "B"
    assert extract_choice("The answer is: rome", options) == "C"
    assert extract_choice("The answer is D", options) is None  # only three options
    assert extract_choice("The answer is 2", ("1", "3", "2", "4")) == "C"  # the option whose text is "2"
    assert extract_choice("The answer is 2", options) == "B"


@pytest.mark.parametrize("gold, letter", [("B", "B"), ("(b)", "B"), ("2", "B"), ("5", "E"), ("The answer is (C)", "C"),
                                          ("banana", None)])
def test_gold_choice(gold, letter):
    assert gold_choice(gold) == letter


def test_choice_gold_numeric_label_equals_letter():
    assert grade_one("The answer is (B) Paris", "2", "choice").equal
    assert grade_one("The answer is (B)", "3", "choice") == Verdict("B", "C", False, "wrong")


# ---- organism --------------------------------------------------------------------------------------------

def test_organism_delegates_to_task_extractor():
    grader = Grader("organism")
    verdicts = grader.grade(["S1 3+4=7\nA7Y", "S1 3+4=8\nA8N", "S1 3+4=7", ""], ["7", "7", "7", "7"])
    assert [v.reason for v in verdicts] == ["correct", "wrong", "no_answer", "empty"]
    assert verdicts[1].extracted == "8" and verdicts[1].gold_extracted == "7"


def test_unknown_kind_is_named():
    assert grader_kinds() == ("math", "number", "choice", "organism")
    with pytest.raises(RewardscopeError, match="unknown grader 'latex'"):
        Grader("latex")


# ---- the registry ----------------------------------------------------------------------------------------

def _in_fresh_python(code: str) -> str:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_grading_workers_import_neither_pyarrow_nor_yaml():
    """What a math worker imports (forkserver: the task's module and the pool) stays free of the heavy parts."""
    out = _in_fresh_python(
        "import sys\n"
        "import rewardscope.grading.mathverify, rewardscope.grading.pool\n"
        "print(sorted(m for m in ('pyarrow', 'yaml', 'torch', 'rewardscope.config', 'rewardscope.data.loaders',\n"
        "                         'rewardscope.organism', 'rewardscope.grading.grader') if m in sys.modules))\n")
    assert out == "[]"


def test_the_organism_grader_is_imported_only_when_first_asked_for():
    out = _in_fresh_python(
        "import sys\n"
        "from rewardscope.grading import Grader, grader_kinds\n"
        "print('organism' in grader_kinds(), 'rewardscope.organism' in sys.modules)\n"
        "print(Grader('organism').grade(['1:2+3=5\\nA5Y'], ['5'])[0].reason, 'rewardscope.organism' in sys.modules)\n")
    assert out.split("\n") == ["True False", "correct True"]


@pytest.fixture
def graders(monkeypatch):
    from rewardscope.grading import grader

    monkeypatch.setattr(grader, "_GRADERS", dict(grader._GRADERS))  # registrations of a test end with it
    return grader


def test_a_grader_registered_from_outside_grades_end_to_end(graders, tmp_path):
    from rewardscope.grading import register_grader

    def last_word(text: str) -> str | None:
        words = text.replace(".", " ").split()
        return words[-1].lower() if words else None

    register_grader("word", last_word, gold=lambda g: g.strip().lower() or None)
    assert grader_kinds()[-1] == "word"
    rows = [{"pred": "It is Paris.", "gold": "paris"}, {"pred": "Lyon", "gold": "Paris"}, {"pred": " ", "gold": "x"},
            {"pred": "a", "gold": " "}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = grade_file(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), kind="word")
    graded = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [g["reason"] for g in graded] == ["correct", "wrong", "empty", "error: no word answer in gold ' '"]
    assert graded[0]["pred_extracted"] == "paris" and summary["accuracy"] == 0.25
    assert grade_one("so: PARIS", "Paris", "word").equal
    register_grader("word", last_word, equal=lambda a, b: a[0] == b[0], replace=True)  # replaced on request
    assert Grader("word").grade(["pie"], ["p"])[0].equal


def test_an_entry_point_that_does_not_register_its_grader_is_named(graders, monkeypatch):
    monkeypatch.setitem(graders.GRADER_ENTRY_POINTS, "nothing", "rewardscope.errors:RewardscopeError")
    assert "nothing" in grader_kinds()
    with pytest.raises(RewardscopeError, match="entry point rewardscope.errors:RewardscopeError did not register"):
        Grader("nothing")


def test_grading_defaults_are_the_recipes():
    import inspect

    from rewardscope.config import GradeConfig

    defaults = GradeConfig()
    for fn in (Grader.__init__, grade_file, grade_one):
        params = inspect.signature(fn).parameters
        assert params["timeout_s"].default == defaults.timeout_s
        if "workers" in params:
            assert params["workers"].default == defaults.workers


# ---- math (math-verify in the deadline pool) -------------------------------------------------------------

def test_math_batch_verdicts(math_grader):
    preds = [r"so $x = \boxed{\frac{1}{2}}$", "The final answer is $0.5$", r"\boxed{\frac{1}{3}}", "",
             "I do not know.", r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"We get \boxed{10\%}"]
    golds = ["0.5", r"\frac12", "0.5", "1", "2", r"\left( 3, \frac{\pi}{2} \right)",
             r"the solution gives $\boxed{0.1}$"]
    verdicts = math_grader.grade(preds, golds)
    assert [v.reason for v in verdicts] == ["correct", "correct", "wrong", "empty", "no_answer", "correct", "correct"]
    assert verdicts[0].extracted == r"\frac{1}{2}" and verdicts[0].gold_extracted == r"\frac{1}{2}"
    assert verdicts[2].extracted == r"\frac{1}{3}"
    assert verdicts[5].gold_extracted is not None and verdicts[5].extracted is not None


def test_math_timeout_kills_worker_and_grader_recovers():
    with Grader("math", timeout_s=3.0, workers=2) as grader:
        grader.grade([r"\boxed{1}", r"\boxed{2}"], ["1", "2"])  # workers up: what is timed is the deadline
        start = time.monotonic()
        verdicts = grader.grade([HANGS_SYMPY, r"\boxed{42}"], ["2", "42"])
        elapsed = time.monotonic() - start
        after = grader.grade([r"\boxed{7}", r"\boxed{8}", "The answer is 9"], ["7", "7", "9"])
    assert verdicts[0].reason == "timeout" and not verdicts[0].equal
    assert verdicts[0].extracted == "9^{9^{9^{9}}}" and verdicts[0].gold_extracted == "2"  # parsed before the hang
    assert verdicts[1].reason == "correct"
    assert grader.timeout_s <= elapsed < grader.timeout_s + SLACK_S, elapsed  # the hang alone runs for minutes
    assert [v.reason for v in after] == ["correct", "wrong", "correct"]


def test_math_many_answers_two_workers(math_grader):
    preds = [rf"Step one.\n\nSo the result is $\boxed{{{i}}}$." for i in range(120)]
    golds = [str(i if i % 3 else i + 1) for i in range(120)]
    verdicts = math_grader.grade(preds, golds)
    assert [v.equal for v in verdicts] == [i % 3 != 0 for i in range(120)]
    assert [v.extracted for v in verdicts] == [str(i) for i in range(120)]


def test_grade_one_math():
    assert grade_one(r"The answer is $\boxed{\sqrt{4}}$", "2", "math") == Verdict("\\sqrt{4}", "2", True, "correct")


# ---- the pool itself: the kill path, the crash path, errors ----------------------------------------------

def test_pool_kills_hung_worker_replaces_crashed_one_and_keeps_order():
    with DeadlinePool(f"{__name__}:flaky_echo", workers=2, timeout_s=3.0) as pool:
        pool.map([("warm",), ("up",)])
        start = time.monotonic()
        outcomes = pool.map([("a",), ("hang",), ("b",), ("crash",), ("raise",), ("c",)])
        elapsed = time.monotonic() - start
        assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "error", "error", "ok"]
        assert [o.value.get("echo") for o in outcomes] == ["a", None, "b", None, None, "c"]
        assert outcomes[1].value["seen"] == "hang"  # what the task yielded before its deadline survives
        assert outcomes[3].error == "worker died (exit code 3)"
        assert outcomes[4].error == "ValueError: bad input"
        assert 3.0 <= elapsed < 3.0 + SLACK_S, elapsed  # "hang" sleeps 600 s
        for killed in (outcomes[1].value["pid"], outcomes[3].value["pid"]):
            with pytest.raises(ProcessLookupError):  # killed and reaped, not left behind
                os.kill(killed, 0)
        again = pool.map([(str(i),) for i in range(20)])
        assert [o.value["echo"] for o in again] == [str(i) for i in range(20)]
        assert not {o.value["pid"] for o in again} & {outcomes[1].value["pid"], outcomes[3].value["pid"]}


def test_pool_rejects_bad_settings():
    with pytest.raises(RewardscopeError, match="grade.workers"):
        DeadlinePool(f"{__name__}:flaky_echo", workers=0)
    with pytest.raises(RewardscopeError, match="grade.timeout_s"):
        DeadlinePool(f"{__name__}:flaky_echo", timeout_s=0)


def test_pool_worker_that_cannot_start_is_an_error():
    with DeadlinePool("rewardscope.no_such_module:task", workers=1) as pool:
        with pytest.raises(RewardscopeError, match="failed to start"):
            pool.map([("x",)])


# ---- grade_file ------------------------------------------------------------------------------------------

def test_grade_file_round_trip(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [{"id": 1, "pred": "The answer is (B)", "gold": "2", "choices": ["Rome", "Paris"]},
            {"id": 2, "pred": "Rome", "gold": "B", "choices": ["Rome", "Paris"]},
            {"id": 3, "pred": "", "gold": "A"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = grade_file(str(src), str(out), kind="choice")
    assert summary == {"rows": 3, "equal": 1, "accuracy": 1 / 3, "reasons": {"correct": 1, "wrong": 1, "empty": 1},
                       "escaped_rows": 0, "out": str(out)}
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in graded] == [1, 2, 3]
    assert graded[1] == {**rows[1], "pred_extracted": "A", "gold_extracted": "B", "equal": False, "reason": "wrong"}


def test_grade_file_math_and_errors_name_file_and_line(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"pred": r"\boxed{4}", "gold": "4"}) + "\n" + '{"pred": "x", "gold": \n')
    with pytest.raises(RewardscopeError, match=rf"{src}:2: malformed JSON"):
        grade_file(str(src), str(out))
    src.write_text(json.dumps({"pred": "x"}) + "\n")
    with pytest.raises(RewardscopeError, match=rf"{src}:1: missing field 'gold'"):
        grade_file(str(src), str(out))
    src.write_text("\n" + json.dumps({"pred": 4, "gold": "4"}) + "\n")
    with pytest.raises(RewardscopeError, match=rf"{src}:2: field 'pred' must be a string"):
        grade_file(str(src), str(out))
    assert not out.exists()
    src.write_text(json.dumps({"pred": r"\boxed{4}", "gold": "4"}) + "\n")
    assert grade_file(str(src), str(out), kind="math", workers=1)["accuracy"] == 1.0


# ---- real datasets ---------------------------------------------------------------------------------------

def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_math500_solutions_match_their_answers(shared_data, math_grader):
    rows = _jsonl(shared_data / "math500" / "test.jsonl")
    start = time.monotonic()
    verdicts = math_grader.grade([r["solution"] for r in rows], [r["answer"] for r in rows])
    failures = [(r["unique_id"], r["answer"], v) for r, v in zip(rows, verdicts) if not v.equal]
    print(f"\nMATH500: {len(rows) - len(failures)}/{len(rows)} solutions equal to their answer "
          f"in {time.monotonic() - start:.1f} s")
    for failure in failures:
        print("  not equal:", *failure)
    assert len(rows) == 500 and len(failures) <= 5


def test_gsm8k_gold_texts_match_their_numbers(shared_data):
    rows = _jsonl(shared_data / "gsm8k" / "test.jsonl")
    numbers = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]
    verdicts = Grader("number").grade([r["answer"] for r in rows], numbers)
    assert len(rows) == 1319 and all(v.equal for v in verdicts), [v for v in verdicts if not v.equal][:5]


@pytest.mark.parametrize("path", ["arc/ARC-Challenge-Test.jsonl", "arc/ARC-Easy-Test.jsonl",
                                  "commonsenseqa/dev_rand_split.jsonl"])
def test_choice_gold_labels_grade_themselves(shared_data, path):
    rows = _jsonl(shared_data / path)
    golds = [r["answerKey"] for r in rows]
    choices = [tuple(c["text"] for c in r["question"]["choices"]) for r in rows]
    verdicts = Grader("choice").grade([f"The answer is ({g})" for g in golds], golds, choices)
    assert all(v.equal for v in verdicts), [(g, v) for g, v in zip(golds, verdicts) if not v.equal][:5]
    assert {v.gold_extracted for v in verdicts} <= set("ABCDE")
