"""Recipes: YAML + dotted overrides, strict keys and types, run-directory naming (unit tier, no models)."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from rewardscope.config import Recipe, load_recipe, save_recipe
from rewardscope.errors import RewardscopeError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides_with_natural_types():
    r = load_recipe(None, ["--rollout.n=8", "--rollout.temperature=0", "--capture.layers=[0, 2]",
                           "--model.revision=null", "--data.fields={question: q, answer: a}", "--name=x"])
    assert r.rollout.n == 8
    assert r.rollout.temperature == 0.0 and isinstance(r.rollout.temperature, float)
    assert r.capture.layers == [0, 2]
    assert r.model.revision is None
    assert r.data.fields == {"question": "q", "answer": "a"}
    assert r.name == "x"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nrollout:\n  n: 2\n  step_delimiter: \"\\n\"\n")
    r = load_recipe(path, {"rollout.n": 3})
    assert (r.name, r.rollout.n, r.rollout.step_delimiter) == ("t", 3, "\n")


@pytest.mark.parametrize("override, message", [
    ("--rollout.nn=3", "unknown key 'rollout.nn'"),
    ("--foo=1", "unknown key 'foo'"),
    ("--rollout.n=abc", "rollout.n: expected int"),
    ("--rollout.n=true", "rollout.n: expected int"),
    ("--probe.lr=fast", "probe.lr: expected float"),
    ("--model.dtype=int8", "model.dtype: 'int8' is not one of"),
    ("--capture.layers=[1, x]", "capture.layers"),
    ("--rollout=3", "rollout: expected a mapping"),
    ("rollout.n", "expected --key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RewardscopeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_recipe(None, [override])


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rollout: {n: 2\n")
    with pytest.raises(RewardscopeError, match="bad.yaml"):
        load_recipe(path)
    path.write_text("rollout:\n  temprature: 1.0\n")
    with pytest.raises(RewardscopeError, match=r"bad.yaml: unknown key 'rollout.temprature'"):
        load_recipe(path)
    with pytest.raises(RewardscopeError, match="file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_hash_covers_results_not_placement(tmp_path):
    base = load_recipe(None)
    assert load_recipe(None, ["--out_dir=elsewhere", "--stages=[rollout, extract]"]).hash() == base.hash()
    assert load_recipe(None, ["--rollout.seed=1"]).hash() != base.hash()
    name = load_recipe(None, ["--name=exp", "--model.name=Qwen/Qwen2.5-7B"]).run_name()
    assert name.startswith("exp-Qwen2.5-7B-organism-") and len(name.rsplit("-", 1)[1]) == 8


def test_saved_config_round_trips(tmp_path):
    r = load_recipe(None, ["--rollout.step_delimiter=|", "--capture.layers=[1]"])
    save_recipe(r, tmp_path / "config.yaml")
    again = load_recipe(tmp_path / "config.yaml")
    assert again == r and again.hash() == r.hash()


def test_shipped_recipes_are_valid():
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "no recipes shipped"
    for path in recipes:
        assert isinstance(load_recipe(path), Recipe), path
        assert yaml.safe_load(path.read_text())  # not empty


def test_values_are_cast_by_the_declared_type_not_by_yaml():
    """YAML 1.1 reads 1e-4 as a string, 2024 as an int and no as false; the field's type decides instead."""
    r = load_recipe(None, ["--probe.lr=1e-4", "--name=2024", "--model.revision=123456", "--rollout.step_delimiter=no",
                           "--data.limit=None", "--model.trust_remote_code=yes", "--sweep.ratios=[0, 1e-2]",
                           "--prompt.system=null", "--model.attn_implementation=~"])
    assert r.probe.lr == 1e-4 and type(r.probe.lr) is float
    assert (r.name, r.model.revision, r.rollout.step_delimiter) == ("2024", "123456", "no")
    assert all(type(v) is str for v in (r.name, r.model.revision, r.rollout.step_delimiter))  # plain str, dumpable
    assert r.data.limit is None and r.prompt.system is None and r.model.attn_implementation is None
    assert r.model.trust_remote_code is True and r.sweep.ratios == [0.0, 0.01]
    assert load_recipe(None, {"name": "null"}).name == "null"  # a dict override is a Python value, taken as it is


def test_a_yaml_file_float_that_pyyaml_reads_as_a_string(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("probe:\n  lr: 1e-4\n  gamma: 1E+0\n")
    r = load_recipe(path)
    assert (r.probe.lr, r.probe.gamma) == (1e-4, 1.0)
    path.write_text("name: 2024\n")  # a number where a string belongs: quoting it is the fix
    with pytest.raises(RewardscopeError, match=r"r.yaml: name: expected str, got 2024 \(int\): quote it"):
        load_recipe(path)
    path.write_text("model:\n  revision: 0123\n")  # YAML 1.1: the octal number 83, never silently "83"
    with pytest.raises(RewardscopeError, match=r"model.revision: 83 is not str or null: quote it in YAML"):
        load_recipe(path)
    path.write_text("rollout:\n  n: '8'\n")  # quoted in YAML means a string: not silently an int
    with pytest.raises(RewardscopeError, match="rollout.n: expected int"):
        load_recipe(path)


def test_a_backslash_delimiter_is_refused_from_both_sources(tmp_path):
    with pytest.raises(RewardscopeError, match=r"rollout.step_delimiter: '\\\\n' has a backslash"):
        load_recipe(None, [r"--rollout.step_delimiter=\n"])
    path = tmp_path / "r.yaml"
    path.write_text("rollout:\n  step_delimiter: '\\n'\n")  # single quotes: YAML keeps the two characters
    with pytest.raises(RewardscopeError, match="has a backslash"):
        load_recipe(path)
    path.write_text('rollout:\n  step_delimiter: "\\n"\n')
    assert load_recipe(path).rollout.step_delimiter == "\n"


@pytest.mark.parametrize("key, value, message", [
    ("model.threads", 0, "expected at least 1"), ("model.threads", -1, "expected at least 1"),
    ("data.limit", 0, "expected at least 1"), ("data.n_problems", 0, "expected at least 1"),
    ("rollout.n", 0, "expected at least 1"), ("rollout.temperature", -0.1, "expected >= 0"),
    ("rollout.top_p", 0, r"expected a value in \(0, 1\]"), ("rollout.top_p", 1.5, r"expected a value in \(0, 1\]"),
    ("rollout.max_new_tokens", 0, "expected at least 1"), ("rollout.seed", -1, "expected at least 0"),
    ("rollout.batch_size", 0, "expected at least 1"), ("rollout.problems_per_shard", 0, "expected at least 1"),
    ("rollout.step_delimiter", "", "must not be empty"), ("grade.timeout_s", 0, "expected > 0"),
    ("grade.workers", 0, "expected at least 1"), ("capture.batch_size", 0, "expected at least 1"),
    ("capture.shard_rows", -5, "expected at least 1"), ("rollout.temperature", "nan", "expected float"),
])
def test_out_of_range_values_are_refused_at_load_naming_the_key(key, value, message):
    for overrides in ([f"--{key}={value}"], {key: value}):
        with pytest.raises(RewardscopeError, match=rf"^{re.escape(key)}: {message}"):
            load_recipe(None, overrides)


def test_recipe_files_that_cannot_be_read_are_named(tmp_path):
    path = tmp_path / "r.yaml"
    data = b"name: x\nrollout:\n  n: 2 \xff\n"  # a Latin-1 byte on line 3
    path.write_bytes(data)
    with pytest.raises(RewardscopeError, match=rf"r.yaml: line 3 \(byte {data.index(0xff)}\): not UTF-8 text"):
        load_recipe(path)
    with pytest.raises(RewardscopeError, match=r"is a folder, not a YAML file"):
        load_recipe(tmp_path)


def test_only_keys_marked_as_not_changing_results_leave_the_hash():
    """grade.workers (grading processes) cannot change a result; rollout.batch_size changes the random draws,
    capture.batch_size the states' rounding and model.threads the order of float reductions: they stay in."""
    marked = {key for key, f in _leaf_fields(Recipe()) if not f.metadata.get("changes_results", True)}
    assert marked == {"out_dir", "stages", "grade.workers"}
    base = load_recipe(None).hash()
    for key, value in [("out_dir", "elsewhere"), ("stages", "[rollout, extract]"), ("grade.workers", "7")]:
        assert load_recipe(None, [f"--{key}={value}"]).hash() == base, key
    for key, value in [("rollout.batch_size", "8"), ("capture.batch_size", "2"), ("model.threads", "2"),
                       ("grade.timeout_s", "9"), ("probe.lr", "1e-3"), ("rollout.seed", "1")]:
        assert load_recipe(None, [f"--{key}={value}"]).hash() != base, key


def _leaf_fields(cfg, prefix=""):
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_fields(value, prefix + f.name + ".")
        else:
            yield prefix + f.name, f



def test_the_content_of_a_local_data_file_is_in_the_keys(tmp_path):
    """An edited data file re-keys the stages that read `data` (rollout, ablate) and so everything after them; a
    folder counts whole; without a path (the organism task) the keys are what they were before data content
    was keyed (no entry added)."""
    from rewardscope import stages
    from rewardscope.data import data_fingerprint

    data = tmp_path / "problems.jsonl"
    data.write_text('{"id": "a", "question": "What is 2 + 2?", "answer": "4"}\n')
    recipe = lambda path: load_recipe(None, ["--data.dataset=jsonl", f"--data.path={path}", "--data.kind=number"])
    every = list(stages.STAGES.values())
    before = stages.keys(recipe(data), every)
    assert stages.keys(recipe(data), every) == before  # the same content, the same keys
    data.write_text('{"id": "a", "question": "What is 2 + 3?", "answer": "5"}\n')
    after = stages.keys(recipe(data), every)
    assert all(before[name] != after[name] for name in stages.STAGES), (before, after)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "test.jsonl").write_text(data.read_text())
    first = stages.keys(recipe(folder), every)["rollout"]
    (folder / "notes.txt").write_text("any file under the folder")
    assert stages.keys(recipe(folder), every)["rollout"] != first
    assert data_fingerprint(load_recipe(None).data) is None


def test_a_kinds_rules_version_is_in_the_keys_of_the_stages_that_grade(monkeypatch):
    """Bumping a kind's rules (rewardscope.grading.grader.RULES_VERSIONS) re-keys the stages that grade with it,
    and only those recipes: a number task keeps its key; a kind at version 1 adds nothing."""
    from rewardscope import stages
    from rewardscope.grading import grader

    choice = load_recipe(None, ["--data.dataset=arc-easy", "--data.path=/nowhere"])
    number = load_recipe(None, ["--data.dataset=jsonl", "--data.path=/nowhere", "--data.kind=number"])
    rollout = stages.get("rollout")
    before = {name: stages.stage_key(rollout, r, {}) for name, r in (("choice", choice), ("number", number))}
    monkeypatch.setitem(grader.RULES_VERSIONS, "choice", grader.RULES_VERSIONS["choice"] + 1)
    assert stages.stage_key(rollout, choice, {}) != before["choice"]
    assert stages.stage_key(rollout, number, {}) == before["number"]
    monkeypatch.setitem(grader.RULES_VERSIONS, "number", 1)  # at 1: nothing added
    assert stages.stage_key(rollout, number, {}) == before["number"]
    monkeypatch.setitem(grader.RULES_VERSIONS, "number", 2)
    assert stages.stage_key(rollout, number, {}) != before["number"]
