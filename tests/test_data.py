"""Datasets: the real files in their original formats, hub-format rows, custom JSONL, bad input, shuffle/limit."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardscope.config import DataConfig
from rewardscope.data import DATASETS, Problem, load_problems
from rewardscope.data.record import CHOICE_LETTERS
from rewardscope.errors import RewardscopeError

ROWS = {"gsm8k": 1319, "math500": 500, "arc-challenge": 1172, "arc-easy": 2376, "commonsenseqa": 1221, "mmlu": 14042}


def _load(dataset: str, path, **kw) -> list[Problem]:
    return load_problems(DataConfig(dataset=dataset, path=str(path), **kw))


def _write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------------------------------------
# The real datasets (original formats, ../shared/data beside the repository)


@pytest.fixture(scope="module")
def real(shared_data) -> dict[str, list[Problem]]:
    return {name: _load(name, shared_data) for name in ROWS}


@pytest.mark.parametrize("name", ROWS)
def test_real_dataset_row_counts_and_usable_golds(real, name):
    problems = real[name]
    assert len(problems) == ROWS[name]
    assert len({p.id for p in problems}) == len(problems)
    for p in problems:
        assert p.kind == DATASETS[name].kind and p.question.strip()
        if p.kind == "choice":
            assert 2 <= len(p.choices) <= 5 and all(isinstance(c, str) for c in p.choices)
            assert p.answer in CHOICE_LETTERS[: len(p.choices)] and "label" in p.metadata
        elif p.kind == "number":
            assert math.isfinite(float(p.answer)) and "," not in p.answer
        else:
            assert p.answer.strip() and not p.answer.startswith("$")


def test_real_gold_distributions_match_source_notes(real):
    # Figures from each SOURCE.md: an independent check that labels were mapped to the right letters.
    assert Counter(p.answer for p in real["commonsenseqa"]) == {"A": 239, "B": 255, "C": 241, "D": 251, "E": 235}
    assert Counter(p.answer for p in real["mmlu"]) == {"A": 3222, "B": 3462, "C": 3582, "D": 3776}
    assert len({p.metadata["subject"] for p in real["mmlu"]}) == 57
    math500 = real["math500"]
    assert Counter(p.metadata["level"] for p in math500) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}
    assert Counter(p.metadata["subject"] for p in math500)["Counting & Probability"] == 38
    arc = real["arc-challenge"]
    assert Counter(len(p.choices) for p in arc) == {4: 1165, 3: 4, 5: 3}
    assert sum(p.metadata["label"].isdigit() for p in arc) == 22  # 21 with labels 1-4, 1 with 1-3
    assert Counter(len(p.choices) for p in real["arc-easy"]) == {4: 2365, 3: 7, 5: 4}


def test_real_numeric_arc_label_maps_to_its_position(real, shared_data):
    with open(shared_data / "arc" / "ARC-Easy-Test.jsonl", encoding="utf-8") as f:
        raw = {r["id"]: r for r in map(json.loads, f)}
    numeric = [p for p in real["arc-easy"] if p.metadata["label"].isdigit()]
    assert len(numeric) == 97
    for p in numeric:
        labels = [c["label"] for c in raw[p.id]["question"]["choices"]]
        gold_text = raw[p.id]["question"]["choices"][labels.index(raw[p.id]["answerKey"])]["text"]
        assert p.choices[CHOICE_LETTERS.index(p.answer)] == gold_text


def test_real_gsm8k_and_math500_records(real):
    first = real["gsm8k"][0]
    assert (first.id, first.answer) == ("gsm8k-0", "18") and first.metadata["solution"].endswith("#### 18")
    assert {p.answer for p in real["gsm8k"]} >= {"2125", "1450000"}  # "#### 2,125" loses its comma
    m = real["math500"][0]
    assert m.id == "test/precalculus/807.json" and m.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert "\\$18.90" in {p.answer for p in real["math500"]}  # an escaped dollar is part of the answer


def test_real_paths_file_folder_and_root_agree(real, shared_data):
    assert _load("gsm8k", shared_data / "gsm8k" / "test.jsonl") == real["gsm8k"]
    assert _load("arc-easy", shared_data / "arc") == real["arc-easy"]
    assert _load("mmlu", shared_data / "mmlu" / "test") == real["mmlu"]
    one = _load("mmlu", shared_data / "mmlu" / "test" / "virology_test.csv")
    assert one == [p for p in real["mmlu"] if p.metadata["subject"] == "virology"]
    assert one[0].id == "mmlu-virology-0" and one[-1].id == f"mmlu-virology-{len(one) - 1}"
    dev = _load("mmlu", shared_data / "mmlu" / "dev")
    assert len(dev) == 285 and dev[0].id == "mmlu-abstract_algebra-0"


# ----------------------------------------------------------------------------------------------------------
# Hub row formats (hand-written rows, as the `datasets` library yields them)

HUB_ROWS = {
    "gsm8k": [{"question": "2+2?", "answer": "Add.\n#### 1,004"}],
    "math500": [{"problem": "x?", "solution": "\\boxed{3}", "answer": "3", "subject": "Algebra", "level": 1,
                 "unique_id": "test/algebra/1.json"}],
    "arc-challenge": [{"id": "Mercury_1", "question": "Which?", "answerKey": "4",
                       "choices": {"text": ["w", "x", "y", "z", "v"], "label": ["1", "2", "3", "4", "5"]}}],
    "commonsenseqa": [{"id": "abc", "question": "Where?", "question_concept": "door", "answerKey": "E",
                       "choices": {"label": list("ABCDE"), "text": ["a", "b", "c", "d", "e"]}}],
    "mmlu": [{"question": "q0", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 3},
             {"question": "q1", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 0},
             {"question": "q2", "subject": "virology", "choices": ["a", "b", "c", "d"], "answer": 1}],
}
EXPECTED = {
    "gsm8k": [Problem("gsm8k-0", "2+2?", "1004", "number")],
    "math500": [Problem("test/algebra/1.json", "x?", "3", "math")],
    "arc-challenge": [Problem("Mercury_1", "Which?", "D", "choice", ("w", "x", "y", "z", "v"))],
    "commonsenseqa": [Problem("abc", "Where?", "E", "choice", ("a", "b", "c", "d", "e"))],
    "mmlu": [Problem("mmlu-anatomy-0", "q0", "D", "choice", ("a", "b", "c", "d")),
             Problem("mmlu-anatomy-1", "q1", "A", "choice", ("a", "b", "c", "d")),
             Problem("mmlu-virology-0", "q2", "B", "choice", ("a", "b", "c", "d"))],
}


@pytest.mark.parametrize("name", HUB_ROWS)
def test_hub_rows_from_a_parquet_file(tmp_path, name):
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(HUB_ROWS[name]), path)
    problems = _load(name, path)
    assert problems == EXPECTED[name]  # Problem equality ignores metadata
    meta = problems[0].metadata
    expected_meta = {"gsm8k": {"solution": "Add.\n#### 1,004"},
                     "math500": {"subject": "Algebra", "level": 1, "solution": "\\boxed{3}"},
                     "arc-challenge": {"label": "4"}, "commonsenseqa": {"label": "E", "question_concept": "door"},
                     "mmlu": {"subject": "anatomy", "label": "D"}}[name]
    assert meta == expected_meta


def test_local_and_hub_formats_give_identical_records(tmp_path):
    local = {"id": "Mercury_1", "answerKey": "4", "question": {"stem": "Which?", "choices": [
        {"text": t, "label": lab} for t, lab in zip(["w", "x", "y", "z", "v"], "12345")]}}
    from_local = _load("arc-challenge", _write_jsonl(tmp_path / "arc.jsonl", [local]))
    assert from_local == EXPECTED["arc-challenge"] and from_local[0].metadata == {"label": "4"}
    csv = tmp_path / "anatomy_test.csv"
    csv.write_text('q0,a,b,c,d,D\n"q1",a,b,c,d,A\n', encoding="utf-8")
    assert _load("mmlu", csv) == EXPECTED["mmlu"][:2]


@pytest.fixture
def stand_in_datasets(monkeypatch):
    """A stand-in for the `datasets` package (not installed here, and the hub is unreachable)."""
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "offline/id":
            raise ConnectionError("Couldn't reach the Hugging Face Hub")
        return HUB_ROWS["gsm8k"]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_loading_passes_id_config_and_split(stand_in_datasets):
    assert load_problems(DataConfig(dataset="gsm8k")) == EXPECTED["gsm8k"]
    load_problems(DataConfig(dataset="gsm8k", split="train"))
    assert stand_in_datasets == [("openai/gsm8k", "main", "test"), ("openai/gsm8k", "main", "train")]
    assert (DATASETS["commonsenseqa"].split, DATASETS["mmlu"].hf_config) == ("validation", "all")
    assert DATASETS["arc-easy"].hf_id == "allenai/ai2_arc" and DATASETS["arc-easy"].hf_config == "ARC-Easy"


def test_hub_unreachable_says_how_to_pass_a_local_file(stand_in_datasets):
    with pytest.raises(RewardscopeError, match=r"offline/id.*ConnectionError.*--data\.path=/path/to/test\.jsonl"):
        load_problems(DataConfig(dataset="gsm8k", hf_id="offline/id"))


def test_without_datasets_package_the_error_says_what_to_do():
    if importlib.util.find_spec("datasets"):
        pytest.skip("the `datasets` package is installed here")
    with pytest.raises(RewardscopeError, match=r"rewardscope\[hub\].*--data\.path=/path/to/ARC-Easy-Test\.jsonl"):
        load_problems(DataConfig(dataset="arc-easy"))


# ----------------------------------------------------------------------------------------------------------
# Custom JSONL with a field mapping


def test_custom_jsonl_number_with_field_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "1+1?", "target": 2, "src": "x"},
                                                   {"prompt": "big?", "target": "1,000"}])
    problems = _load("jsonl", path, fields={"question": "prompt", "answer": "target"}, kind="number")
    assert problems == [Problem("jsonl-0", "1+1?", "2", "number"), Problem("jsonl-1", "big?", "1000", "number")]
    assert problems[0].metadata == {"src": "x"}


def test_custom_jsonl_choice_letters_and_indices_with_own_ids(tmp_path):
    rows = [{"uid": "q1", "question": "Pick", "options": ["a", "b", "c"], "answer": "C"},
            {"uid": "q2", "question": "Pick", "options": ["a", "b", "c", "d", "e"], "answer": 4}]
    path = _write_jsonl(tmp_path / "mc.jsonl", rows)
    problems = _load("jsonl", path, fields={"id": "uid", "choices": "options"}, kind="choice")
    assert problems == [Problem("q1", "Pick", "C", "choice", ("a", "b", "c")),
                        Problem("q2", "Pick", "E", "choice", ("a", "b", "c", "d", "e"))]
    assert problems[1].metadata == {"label": 4}


def test_custom_parquet_math(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": 7, "question": "x?", "answer": "$\\frac{1}{2}$"}]), path)
    assert _load("jsonl", path, kind="math") == [Problem("7", "x?", "\\frac{1}{2}", "math")]


# ----------------------------------------------------------------------------------------------------------
# Bad input: every error names the file, line and field (or the setting) to fix


@pytest.mark.parametrize("lines, dataset, kw, message", [
    (['{"question": "a", "answer": "#### 1"}', "", '{"question": "b", "answer": '], "gsm8k", {},
     r"x\.jsonl:3: malformed JSON"),
    (['{"question": "a", "answer": "#### 1"}', "", '{"question": "b"}'], "gsm8k", {},
     r"x\.jsonl:3: missing field 'answer'"),
    (['{"question": "a", "answer": "It is 5."}'], "gsm8k", {}, r"x\.jsonl:1: field 'answer': no final '####"),
    (['{"question": "a", "answer": "#### five"}'], "gsm8k", {}, r"x\.jsonl:1: field 'answer'.*not a number"),
    (['{"problem": "a", "answer": "", "unique_id": "u"}'], "math500", {}, r"x\.jsonl:1: field 'answer': empty"),
    (['{"id": "i", "answerKey": "E", "question": {"stem": "s", "choices": [{"text": "t", "label": "A"}, '
      '{"text": "u", "label": "B"}]}}'], "arc-easy", {}, r"x\.jsonl:1: field 'answerKey': 'E' is not among"),
    (['{"id": "i", "answerKey": "A", "question": {"stem": "s", "choices": ["t", "u"]}}'], "commonsenseqa", {},
     r"x\.jsonl:1: field 'question\.choices'"),
    (['{"q": "a", "a": 1, "id": "d"}', '{"q": "b", "a": 2, "id": "d"}'], "jsonl",
     {"fields": {"question": "q", "answer": "a"}, "kind": "number"}, r"x\.jsonl:2: duplicate id 'd' \(first at .*:1\)"),
    (['{"q": "a", "a": 1}'], "jsonl", {"fields": {"question": "q"}, "kind": "number"},
     r"x\.jsonl:1: missing field 'answer'"),
    (['{"question": "a", "choices": ["x", "y"], "answer": "C"}'], "jsonl", {"kind": "choice"},
     r"x\.jsonl:1: field 'answer': gold answer 'C' is neither a letter A-B"),
    (['{"question": "a", "choices": "xy", "answer": "A"}'], "jsonl", {"kind": "choice"},
     r"x\.jsonl:1: field 'choices': expected a list"),
    (['{"question": "a", "answer": 1}'], "jsonl", {}, r"data\.kind: None"),
    (['{"question": "a", "answer": 1}'], "jsonl", {"fields": {"solution": "s"}, "kind": "math"},
     r"data\.fields: unknown record field 'solution'"),
    ([], "gsm8k", {}, r"x\.jsonl: no problems"),
])
def test_bad_jsonl_input_is_named(tmp_path, lines, dataset, kw, message):
    path = _write_jsonl(tmp_path / "x.jsonl", lines)
    with pytest.raises(RewardscopeError, match=message):
        _load(dataset, path, **kw)


@pytest.mark.parametrize("csv_text, message", [
    ("q,a,b,c,d,E\n", r"anatomy_test\.csv:1: field 'answer' \(column 6\): 'E'"),
    ('q,a,b,c,d,A\n"two\nlines",a,b,c,d\n', r"anatomy_test\.csv:2: expected 6 columns"),
    # a field over csv.field_size_limit() (128 KiB), as an unclosed quote makes one
    ('q,a,b,c,d,A\nq2,"' + "x" * 140_000 + '",b,c,d,B\n', r"anatomy_test\.csv:2: unreadable CSV row \(field larger"),
])
def test_bad_mmlu_csv_is_named(tmp_path, csv_text, message):
    path = tmp_path / "anatomy_test.csv"
    path.write_text(csv_text, encoding="utf-8")
    with pytest.raises(RewardscopeError, match=message):
        _load("mmlu", path)


def test_non_utf8_files_name_line_and_byte(tmp_path):
    csv = tmp_path / "anatomy_test.csv"
    csv.write_bytes(b"q,a,b,c,d,A\nq2,caf\xe9,b,c,d,B\n")  # Latin-1, as a spreadsheet may save it
    with pytest.raises(RewardscopeError, match=r"anatomy_test\.csv:2: not UTF-8 \(byte 0xe9 at byte offset 18\)"):
        _load("mmlu", csv)
    jsonl = tmp_path / "test.jsonl"
    raw = b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 2"}\n'
    jsonl.write_bytes(raw)
    offset = raw.index(b"\xe9")
    with pytest.raises(RewardscopeError, match=rf"test\.jsonl:2: not UTF-8 \(byte 0xe9 at byte offset {offset} "):
        _load("gsm8k", jsonl)


def test_lone_surrogate_in_a_question_is_refused_before_any_work(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"question": "ok", "answer": "#### 1"},
                                               '{"question": "cut \\ud800 here", "answer": "#### 2"}'])
    with pytest.raises(RewardscopeError, match=r"x\.jsonl:2: field 'question': character '\\ud800' at position 4"):
        _load("gsm8k", path)


# ----------------------------------------------------------------------------------------------------------
# Number golds are read by the parser that grades them


@pytest.mark.parametrize("gold", ["1e3", "1_000", "1 000", "0x10", "nan", "inf", "12 apples", "1,00", "", "--5"])
def test_number_gold_the_grader_cannot_read_is_refused_with_file_and_line(tmp_path, gold):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"question": "a", "answer": "#### 7"},
                                               {"question": "b", "answer": f"#### {gold}"}])
    with pytest.raises(RewardscopeError, match=r"x\.jsonl:2: field 'answer': gold answer .* is not a number the "
                                               r"number grader reads"):
        _load("gsm8k", path)
    custom = _write_jsonl(tmp_path / "c.jsonl", [{"question": "b", "answer": gold}])
    with pytest.raises(RewardscopeError, match=r"c\.jsonl:1: field 'answer'"):
        _load("jsonl", custom, kind="number")


@pytest.mark.parametrize("gold, normal", [("1,000", "1000"), ("-3.50", "-3.50"), ("$18", "18"), ("0.5", "0.5"),
                                          (7, "7"), (0.25, "0.25"), (1e-05, "0.00001"), ("3/4", "3/4"),
                                          ("1" * 5000, "1" * 5000)])
def test_number_gold_accepted_is_graded_as_that_number(tmp_path, gold, normal):
    from rewardscope.grading import Grader

    path = _write_jsonl(tmp_path / "c.jsonl", [{"question": "b", "answer": gold}])
    problem = _load("jsonl", path, kind="number")[0]
    assert problem.answer == normal
    # what the loader accepted is what the number grader reads: the gold grades itself, and not a neighbour
    right, wrong = Grader("number").grade([f"The answer is {normal}", f"The answer is {normal}1"],
                                          [problem.answer, problem.answer])
    assert (right.reason, wrong.reason) == ("correct", "wrong")


@pytest.mark.parametrize("cfg, message", [
    (DataConfig(dataset="gsm8k", path="/no/such/file.jsonl"), r"data\.path: /no/such/file\.jsonl not found"),
    (DataConfig(dataset="squad", path="/tmp"), r"data\.dataset: unknown dataset 'squad' \(known: gsm8k"),
    (DataConfig(dataset="gsm8k", path="/", split="train"), r"data\.split='train' is not used"),
    (DataConfig(dataset="gsm8k", kind="math"), r"data\.kind='math' is not used.*grade\.kind"),
    (DataConfig(dataset="organism", path="x.jsonl"), r"data\.path='x\.jsonl' is not used for dataset 'organism'"),
    (DataConfig(dataset="jsonl"), r"data\.path: required for dataset 'jsonl'"),
    (DataConfig(dataset="gsm8k", path="/", limit=0), r"data\.limit: 0"),
])
def test_bad_settings_are_named(cfg, message):
    with pytest.raises(RewardscopeError, match=message):
        load_problems(cfg)


def test_folder_without_the_dataset_file_is_named(tmp_path):
    with pytest.raises(RewardscopeError, match=r"no ARC-Easy-Test\.jsonl or arc/ARC-Easy-Test\.jsonl in folder"):
        _load("arc-easy", tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Shuffle and limit


def test_shuffle_and_limit_are_deterministic(tmp_path):
    path = _write_jsonl(tmp_path / "n.jsonl", [{"question": f"q{i}", "answer": i} for i in range(50)])

    def ids(**kw):
        return [p.id for p in _load("jsonl", path, kind="number", **kw)]

    in_order = ids()
    assert in_order == [f"jsonl-{i}" for i in range(50)] and ids(limit=5) == in_order[:5]
    shuffled = ids(shuffle_seed=1)
    assert shuffled == ids(shuffle_seed=1) != in_order and sorted(shuffled) == sorted(in_order)
    assert ids(shuffle_seed=1, limit=10) == shuffled[:10]  # limit applies after the shuffle
    assert ids(shuffle_seed=2) != shuffled
    assert ids(limit=500) == in_order


# ----------------------------------------------------------------------------------------------------------
# The synthetic organism task


def test_organism_dataset():
    from rewardscope.organism.task import generate_problems  # an import error fails this test, never skips it

    problems = load_problems(DataConfig(dataset="organism", n_problems=30, seed=3, limit=10, shuffle_seed=0))
    assert len(problems) == 10 and len({p.id for p in problems}) == 10
    assert all(p.kind == "organism" and p.choices is None and p.answer.isdigit() for p in problems)
    assert problems == load_problems(DataConfig(dataset="organism", n_problems=30, seed=3, limit=10, shuffle_seed=0))
    other = load_problems(DataConfig(dataset="organism", n_problems=30, seed=3, variant="add"))
    assert all(op[0] in "+-" for p in other for op in p.metadata["ops"])
    assert other == generate_problems(n=30, seed=3, variant="add")


# ----------------------------------------------------------------------------------------------------------
# The registry: a dataset (and its grader) registered from outside the package


@pytest.fixture
def registries(monkeypatch):
    """Registrations made in a test are undone after it."""
    from rewardscope.data import loaders
    from rewardscope.grading import grader

    monkeypatch.setattr(loaders, "_REGISTRY", dict(loaders._REGISTRY))
    monkeypatch.setattr(grader, "_GRADERS", dict(grader._GRADERS))
    return loaders, grader


def _colour_problems(cfg: DataConfig) -> list[Problem]:
    colours = ["red", "green", "blue", "cyan", "magenta"]
    return [Problem(f"colour-{cfg.seed}-{i}", f"Which colour is number {i}?", colours[(i + cfg.seed) % 5], "colour")
            for i in range(cfg.n_problems)]


def test_a_registered_dataset_and_grader_work_end_to_end(registries):
    from rewardscope.data import dataset_names, register_dataset
    from rewardscope.grading import Grader, grader_kinds, register_grader

    register_dataset("colours", _colour_problems, "colour", uses=("n_problems", "seed"))
    register_grader("colour", lambda text: (text.strip().split() or [None])[-1], lambda a, b: a.lower() == b.lower())
    assert "colours" in dataset_names() and "colour" in grader_kinds()
    problems = load_problems(DataConfig(dataset="colours", n_problems=20, seed=1, shuffle_seed=0, limit=6))
    assert len(problems) == 6 and all(p.kind == "colour" for p in problems)  # shuffled and limited as any dataset
    assert [p.id for p in problems] != [f"colour-1-{i}" for i in range(6)]
    with Grader(problems[0].kind) as grader:
        verdicts = grader.grade([f"It is {p.answer.upper()}" for p in problems] + ["It is grey", ""],
                                [p.answer for p in problems] + [problems[0].answer] * 2)
    assert [v.reason for v in verdicts] == ["correct"] * 6 + ["wrong", "empty"]
    # a source setting the dataset does not read is refused, naming what it reads
    with pytest.raises(RewardscopeError, match=r"data\.path='x' is not used for dataset 'colours': it reads only "
                                               r"data\.n_problems, data\.seed"):
        load_problems(DataConfig(dataset="colours", path="x"))


def test_registry_refusals(registries, tmp_path):
    from rewardscope.data import register_dataset
    from rewardscope.grading import register_grader

    with pytest.raises(RewardscopeError, match="'gsm8k' is already registered"):
        register_dataset("gsm8k", _colour_problems, "colour")
    with pytest.raises(RewardscopeError, match="'limit' is not one of"):
        register_dataset("colours", _colour_problems, "colour", uses=("limit",))
    with pytest.raises(RewardscopeError, match="kind None .* needs 'kind' in uses"):
        register_dataset("colours", _colour_problems, None)
    with pytest.raises(RewardscopeError, match="'math' is built in"):
        register_grader("math", str.strip)
    with pytest.raises(RewardscopeError, match="'number' is already registered"):
        register_grader("number", str.strip)
    register_dataset("colours", _colour_problems, "colour", uses=("n_problems", "seed"))
    with pytest.raises(RewardscopeError, match="kind 'colour' has no grader .*register_grader adds one"):
        load_problems(DataConfig(dataset="colours"))  # no grader for the kind yet: refused before any sampling
    register_grader("colour", str.strip)
    register_dataset("colours", lambda cfg: _colour_problems(cfg)[:1] + [Problem("x", "q", "7", "number")], "colour",
                     replace=True)
    with pytest.raises(RewardscopeError, match="problem 1 is not a Problem of kind 'colour' \\(got kind 'number'\\)"):
        load_problems(DataConfig(dataset="colours"))
    register_dataset("colours", lambda cfg: [], "colour", replace=True)
    with pytest.raises(RewardscopeError, match="data.dataset='colours': no problems"):
        load_problems(DataConfig(dataset="colours"))
    path = _write_jsonl(tmp_path / "c.jsonl", [{"question": "q", "answer": " blue "}])
    assert _load("jsonl", path, kind="colour")[0].answer == "blue"  # custom data of a registered kind: its text


def test_an_entry_point_that_does_not_register_is_named(registries, monkeypatch):
    loaders, _ = registries
    monkeypatch.setitem(loaders.DATASET_ENTRY_POINTS, "nothing", "rewardscope.errors:RewardscopeError")
    with pytest.raises(RewardscopeError, match="entry point rewardscope.errors:RewardscopeError did not register"):
        load_problems(DataConfig(dataset="nothing"))


def _fresh_python(code: str) -> str:
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_organism_registers_itself_when_first_asked_for():
    out = _fresh_python(
        "import sys\n"
        "from rewardscope.config import DataConfig\n"
        "from rewardscope.data import dataset_names, load_problems\n"
        "print('rewardscope.organism' in sys.modules, 'organism' in dataset_names())\n"
        "problems = load_problems(DataConfig(dataset='organism', n_problems=3))\n"
        "print('rewardscope.organism' in sys.modules, [p.kind for p in problems])\n")
    assert out.split("\n")[:2] == ["False True", "True ['organism', 'organism', 'organism']"]


def test_no_import_cycle_between_data_grading_and_organism():
    """The import graph of these packages (every import statement, also those inside functions): data may import
    grading, organism may import both; neither data nor grading names the organism but as an entry-point string."""
    import ast
    from pathlib import Path

    import rewardscope

    root = Path(rewardscope.__file__).parent
    imports: dict[str, set[str]] = {}
    for package in ("data", "grading", "organism"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "rewardscope" and len(parts) > 1 and parts[1] != package:
                        imports.setdefault(package, set()).add(parts[1])
    assert "organism" not in imports.get("data", set()) and "organism" not in imports.get("grading", set())
    assert "data" not in imports.get("grading", set())  # data imports grading (number golds), never the reverse
    assert {"data", "grading"} <= imports["organism"]


# ---- scripts/arithmetic.py: the generated task of recipes/smollm2.yaml -------------------------------------

def _arithmetic(tmp_path, *args):
    import subprocess
    from pathlib import Path

    out = tmp_path / "arithmetic.jsonl"
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "arithmetic.py"),
                           "--out", str(out), *args], capture_output=True, text=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if done.returncode == 0 else None
    return done, rows


def test_generated_arithmetic_never_asks_a_question_twice(tmp_path):
    """A question in both a probe's training and held-out problems would let it recall, not predict."""
    done, rows = _arithmetic(tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(rows) == 200 and len({r["question"] for r in rows}) == 200
    assert [r["level"] for r in rows[:4]] == ["add1", "mul1", "add2", "chain"]
    for r in rows[:40]:
        if r["level"] != "chain":  # "What is 7 + 7?" -> 14, "What is 2 times 6?" -> 12
            a, op, b = r["question"].removeprefix("What is ").rstrip("?").split(" ")
            assert int(r["answer"]) == (int(a) + int(b) if op == "+" else int(a) * int(b)), r
    done, rows = _arithmetic(tmp_path, "--levels", "sub1,word1", "--per-level", "100", "--seed", "1")
    assert done.returncode == 0 and len({r["question"] for r in rows}) == 200
    assert all(int(r["answer"]) >= 0 for r in rows)
    done, _ = _arithmetic(tmp_path, "--levels", "mul1", "--per-level", "65")
    assert done.returncode != 0 and "'mul1' has only 64 distinct questions" in done.stderr
    done, rows = _arithmetic(tmp_path, "--repeats", "--per-level", "200")  # the survey's file, as it was made
    assert len(rows) == 800 and len({r["question"] for r in rows[:200]}) == 169
