"""The whole pipeline from one recipe on the demo organism: rollout -> capture -> probe, then transfer between
two task variants. Integration tier: the real shipped model, real files, small settings so it runs in about a
minute on 2 cores. Every figure checked here is recomputed from the artifacts the stages wrote."""

import json

import numpy as np
import pytest

from rewardscope import load_recipe, run
from rewardscope.capture.reader import CaptureReader
from rewardscope.io import read_json, read_parquet
from rewardscope.models import DEMO_MODEL_DIR
from rewardscope.readers import ProbeReader
from rewardscope.probe.sweep import kept_count, rank_dims
from rewardscope.rollout.stage import wilson_interval
from rewardscope.transfer import overlap, transfer_runs

REPO = DEMO_MODEL_DIR.parents[2]  # the repository root, where recipes/ lives
SMALL = [
    "--data.n_problems=40", "--rollout.n=4", "--rollout.problems_per_shard=20",
    "--probe.hidden=32", "--probe.epochs=4", "--probe.bootstrap=50",
    "--sweep.ratios=[0.0, 0.9]", "--sweep.random_draws=2",
    "--stages=[rollout, capture, probe]",  # the demo's ablate stage has its own tests (test_ablate_stage.py)
]


def small_recipe(tmp_path, *extra):
    return load_recipe(REPO / "recipes" / "demo.yaml", [f"--out_dir={tmp_path}", *SMALL, *extra])


def test_demo_recipe_end_to_end_then_no_op(tmp_path):
    recipe = small_recipe(tmp_path)
    run_dir = run(recipe)
    assert run_dir.name == recipe.run_name() and run_dir.name.startswith("demo-demo-organism-")
    assert load_recipe(run_dir / "config.yaml") == recipe
    results = read_json(run_dir / "results.json")
    assert set(results) == {"rollout", "capture", "probe"}

    rollouts = read_parquet(run_dir / "rollout" / "rollouts.parquet")
    assert rollouts.num_rows == results["rollout"]["n_rollouts"] == 160
    reward = rollouts.column("reward").to_numpy()
    per_problem = np.bincount(rollouts.column("problem_index").to_numpy(), weights=reward) / 4
    assert results["rollout"]["accuracy"] == pytest.approx(per_problem.mean())
    assert results["rollout"]["accuracy_ci95"] == pytest.approx(list(wilson_interval(per_problem.mean(), 40)))
    assert 0.3 < per_problem.mean() < 1.0, "sampled organism rollouts must be mixed"

    capture = CaptureReader(run_dir / "capture")
    n_tokens = sum(len(r) for r in rollouts.column("response_ids").to_pylist()) - 160  # EOS states are not kept
    assert len(capture) == results["capture"]["rows"] == n_tokens + 160  # + one s_0 per rollout
    assert capture.layers == results["capture"]["layers"] == [0, 1, 2, 3]

    probe = results["probe"]
    probe_results = read_json(run_dir / "probe" / "results.json")
    assert probe == probe_results["summary"]
    assert probe["held_out"] == {"problems": 8, "rollouts": 32}
    for pos, chosen in probe["chosen_layer"].items():
        cell = probe_results["auroc"]["TD(0)"][str(chosen["layer"])][pos]
        assert chosen["auroc"] == cell["auroc"] and chosen["ci95"] == cell["ci95"]
        assert chosen["ci95"][0] <= chosen["auroc"] <= chosen["ci95"][1]
    neurons = read_json(run_dir / "probe" / "value_neurons.json")["layers"]
    probes, _ = ProbeReader(run_dir / "probe").probes([0, 1, 2, 3])
    for layer in range(4):  # the top 1% of 128 dims: one, the probe's first-ranked input
        assert [n["dim"] for n in neurons[str(layer)]] == rank_dims(probes.feature_scores_)[layer, :1].tolist()

    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert run(recipe) == run_dir
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a finished run must not rewrite its artifacts"


def test_transfer_between_task_variants_with_the_seed_control(tmp_path, recwarn):
    run_a = run(small_recipe(tmp_path, "--data.variant=add"))
    run_b = run(small_recipe(tmp_path, "--data.variant=mul", "--probe.seed=1"))  # no shared initialisation
    summary = transfer_runs(run_a, run_b)
    assert not [w for w in recwarn if "probe.seed" in str(w.message)]  # the control is there: no warning
    table = json.loads((run_a / "transfer" / f"{run_b.name}.json").read_text())
    assert summary["problems"]["b_held_out"]["problems_dropped"] == 0  # other variants: no shared problem
    for layer in map(str, table["layers"]):
        orders = [rank_dims(ProbeReader(r / "probe").probes([int(layer)])[0].feature_scores_)[0]
                  for r in (run_a, run_b)]
        for row in table["iou"][layer]["by_ratio"]:
            k = kept_count(row["ratio"], 128)
            expected = overlap(orders[0][:k], orders[1][:k], 128)  # recomputed from the saved rankings
            assert {key: row[key] for key in expected} == pytest.approx(expected)
            assert row["random_iou_expected"] >= row["random_iou_ratio_of_expectations"]

