"""No input breaks a grading run: huge numbers, rows that make a grader fail, a killed parent, text UTF-8 cannot
encode, files that are not UTF-8. Real graders, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rewardscope.errors import RewardscopeError
from rewardscope.grading import Grader, grade_file
from rewardscope.grading.answers import extract_number, same_number
from rewardscope.io import read_jsonl, write_jsonl

HUGE = "7" * 5000  # past Python's 4300-digit limit of int() and Fraction()


# ---- a. numbers of any length; a row that makes a grader fail ---------------------------------------------

def test_number_of_5000_digits_is_graded():
    assert extract_number(f"so the answer is {HUGE}.") == HUGE and same_number(HUGE, HUGE + ".0")
    assert not same_number(HUGE, HUGE + "1") and same_number(f"{HUGE}/7", "1" * 5000)
    verdicts = Grader("number").grade([f"The answer is {HUGE}", f"#### {HUGE}1", f"{HUGE}/{HUGE}"],
                                      [f"Work.\n#### {HUGE}", HUGE, "1"])
    assert [v.reason for v in verdicts] == ["correct", "wrong", "correct"]
    assert verdicts[0].extracted == HUGE


def test_math_number_of_5000_digits_is_graded():
    with Grader("math", timeout_s=30.0, workers=1) as grader:
        same, other = grader.grade([HUGE, rf"\boxed{{{HUGE}}}"], [HUGE, "7"])
    assert same.reason == "correct" and other.reason == "wrong"


@pytest.mark.parametrize("kind, good_pred, gold", [("number", "#### 18", "18"), ("choice", "The answer is (B)", "B"),
                                                   ("organism", "S1 3+4=7\nA7Y", "7"), ("math", r"\boxed{18}", "18")])
def test_a_failing_row_is_an_error_verdict_and_the_batch_goes_on(kind, good_pred, gold):
    # None is no text: every extractor fails on it (the rows a shard's fixed seed would replay on resume)
    with Grader(kind, timeout_s=30.0, workers=1) as grader:
        verdicts = grader.grade([good_pred, None, good_pred], [gold, gold, gold])
    assert [v.reason for v in verdicts][::2] == ["correct", "correct"]
    assert verdicts[1].reason.startswith("error: ") and "NoneType" in verdicts[1].reason
    assert not verdicts[1].equal


def test_math_row_that_cannot_be_sent_to_a_worker_is_an_error():
    with Grader("math", timeout_s=30.0, workers=1) as grader:
        verdicts = grader.grade([r"\boxed{1}", {"not": object()}, r"\boxed{2}"], ["1", "1", "2"])
    assert [v.reason for v in verdicts][::2] == ["correct", "correct"]
    assert verdicts[1].reason.startswith("error: cannot send the arguments: TypeError")


# ---- c. workers die with their parent, even on SIGKILL ----------------------------------------------------

PARENT = r"""
import json, sys
from multiprocessing import forkserver
from rewardscope.grading import Grader

if __name__ == "__main__":
    grader = Grader("math", timeout_s=600.0, workers=2)
    grader.grade([r"\boxed{1}", r"\boxed{2}"], ["1", "2"])  # both workers up
    pids = [w.process.pid for w in grader._pool._workers]
    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    print(json.dumps({"workers": pids, "server": server}), flush=True)
    grader.grade([r"\boxed{9^{9^{9^{9}}}}", r"\boxed{9^{9^{9^{9}}}}"], ["2", "3"])  # minutes of sympy, in C
"""


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: in a container nobody may reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_and_forkserver_die_with_a_sigkilled_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(parent.stdout.readline())
        children = info["workers"] + ([info["server"]] if info["server"] else [])
        deadline = time.monotonic() + 60.0
        while not all(_cpu_seconds(w) > 1.0 for w in info["workers"]):  # both deep in the hanging verify
            assert time.monotonic() < deadline, "workers never got busy"
            time.sleep(0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10.0  # generous for a loaded machine; today they would run for minutes
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [pid for pid in children if _alive(pid)]
    finally:
        parent.kill()
        for pid in children if "children" in locals() else []:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outlived their SIGKILLed parent: {survivors}"


# ---- d. text UTF-8 cannot encode is written, escaped ------------------------------------------------------

def test_write_jsonl_escapes_a_lone_surrogate_and_reads_it_back(tmp_path):
    rows = [{"pred": "fine"}, {"pred": "cut \ud800 here", "n": 1}, {"pred": "café"}]
    assert write_jsonl(tmp_path / "x.jsonl", rows) == 1
    assert list(read_jsonl(tmp_path / "x.jsonl")) == rows
    text = (tmp_path / "x.jsonl").read_text(encoding="utf-8")  # valid UTF-8, the surrogate as a JSON escape
    assert "\\ud800" in text and "café" in text


@pytest.mark.parametrize("kind", ["choice", "math"])
def test_grade_file_keeps_every_row_when_a_prediction_holds_a_lone_surrogate(tmp_path, kind):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    # json.dumps escapes the surrogate, as any JSON writer would: the file is valid, its text is not
    src.write_text(json.dumps({"pred": "The answer is (B) \ud800", "gold": "B"}) + "\n"
                   + json.dumps({"pred": r"\boxed{B}", "gold": "B"}) + "\n", encoding="utf-8")
    summary = grade_file(str(src), str(out), kind=kind, workers=1)
    assert summary["rows"] == 2 and summary["escaped_rows"] == 1
    graded = list(read_jsonl(out))
    assert graded[0]["pred"] == "The answer is (B) \ud800" and graded[0]["reason"] in ("correct", "wrong")
    assert len(graded) == 2


# ---- e. files that are not UTF-8, lines JSON cannot hold --------------------------------------------------

def test_read_jsonl_names_line_and_byte_offset_of_a_non_utf8_byte(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(RewardscopeError, match=rf"{path}:2: not UTF-8 \(byte 0xe9 at byte offset 19 of the file\)"):
        list(read_jsonl(path))


def test_read_jsonl_names_the_line_of_a_number_too_long_for_python(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"answer": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(RewardscopeError, match=rf"{path}:2: unreadable JSON \(ValueError"):
        list(read_jsonl(path))


def test_read_jsonl_skips_a_byte_order_mark(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert list(read_jsonl(path)) == [{"a": 1}]
