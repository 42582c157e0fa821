"""Recipes: YAML + dotted overrides, strict keys and types, run-directory naming (unit tier, no models)."""

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
