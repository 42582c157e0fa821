"""The whole pipeline from one recipe on the demo organism: rollout -> extract -> probe, then transfer between
two task variants. Integration tier: the real shipped model, real files, small settings so it runs in about a
minute on 2 cores."""

import json

import pytest

from rewardscope import load_recipe, run
from rewardscope.models import DEMO_MODEL_DIR
from rewardscope.transfer import transfer_runs

pytestmark = pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").exists(),
                                reason=f"demo organism not trained yet ({DEMO_MODEL_DIR})")

SMALL = [
    "--data.n_problems=40", "--rollout.n=4", "--rollout.problems_per_shard=20",
    "--probe.hidden=32", "--probe.epochs=4", "--probe.bootstrap=50",
    "--sweep.ratios=[0.0, 0.9]", "--sweep.random_draws=2",
]


def small_recipe(tmp_path, *extra):
    return load_recipe("recipes/demo.yaml", [f"--out_dir={tmp_path}", *SMALL, *extra])


def test_demo_recipe_end_to_end_then_no_op(tmp_path, monkeypatch):
    monkeypatch.chdir(DEMO_MODEL_DIR.parents[2])  # the repository root, where recipes/ lives
    recipe = small_recipe(tmp_path)
    run_dir = run(recipe)
    assert run_dir.name == recipe.run_name() and run_dir.name.startswith("demo-demo-organism-")
    assert (run_dir / "config.yaml").exists() and load_recipe(run_dir / "config.yaml") == recipe
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results) == {"rollout", "extract", "probe"}
    assert results["rollout"]["n_rollouts"] == 160
    assert 0.3 < results["rollout"]["accuracy"] < 1.0, "sampled organism rollouts must be mixed"
    assert (run_dir / "probe" / "value_neurons.json").exists()

    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "results.json"}
    assert run(recipe) == run_dir
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a finished run must not rewrite its artifacts"


def test_transfer_between_task_variants(tmp_path, monkeypatch):
    monkeypatch.chdir(DEMO_MODEL_DIR.parents[2])
    run_a = run(small_recipe(tmp_path, "--data.variant=add"))
    run_b = run(small_recipe(tmp_path, "--data.variant=mul"))
    summary = transfer_runs(run_a, run_b)
    table = json.loads((run_a / "transfer" / f"{run_b.name}.json").read_text())
    for layer, rows in table["iou"].items():
        for row in rows["by_ratio"]:
            assert 0.0 <= row["iou"] <= 1.0 and 0.0 <= row["p_value"] <= 1.0
            if row["ratio"] == 0.0:
                assert row["iou"] == 1.0  # every dim kept on both sides
    assert summary
