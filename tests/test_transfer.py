"""Transfer between runs: IoU of value-neuron sets against chance, and probes scored on another run's states."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest
import torch

from rewardscope.cli import main
from rewardscope.config import load_recipe
from rewardscope.io import read_json
from rewardscope.errors import RewardscopeError
from rewardscope.pipeline import run_stage
from rewardscope.transfer import overlap, transfer_runs

# Runs are built like the probe stage's tests (real tiny-model captures of hand-written rollouts whose reward
# shows in their last line); pytest puts tests/ on sys.path.
from test_probe_stage import SETTINGS, beside, build_run, save_model


def test_overlap_iou_chance_and_hypergeometric_p_value():
    result = overlap(range(10), range(5, 15), n=100)
    assert result["iou"] == pytest.approx(5 / 15) and result["overlap"] == 5
    assert result["random_iou_ratio_of_expectations"] == pytest.approx(0.1 / (2 - 0.1))  # p / (2 - p), p = k / n
    exact = sum(comb(10, x) * comb(90, 10 - x) for x in range(5, 11)) / comb(100, 10)  # P(overlap >= 5)
    assert result["p_value"] == pytest.approx(exact)
    assert overlap([1, 2, 3], [1, 2, 3], 3000)["p_value"] < 1e-9
    two_of_ten = overlap([1, 2], [3, 4], 10)
    assert {k: two_of_ten[k] for k in ("iou", "overlap", "k_a", "k_b", "n", "p_value")} == {
        "iou": 0.0, "overlap": 0, "k_a": 2, "k_b": 2, "n": 10, "p_value": 1.0}
    assert two_of_ten["random_iou_ratio_of_expectations"] == pytest.approx(0.2 / 1.8)
    # exact: P(X = 1) * 1/3 + P(X = 2) * 1, X ~ hypergeometric(10, 2, 2)
    assert two_of_ten["random_iou_expected"] == pytest.approx(16 / 45 / 3 + 1 / 45)


@pytest.mark.parametrize("n, k_a, k_b", [(200, 20, 40), (100, 3, 3), (3584, 36, 36)])
def test_exact_random_iou_matches_simulation_and_exceeds_the_ratio_of_expectations(n, k_a, k_b):
    rng = np.random.default_rng(0)
    draws = 20000
    shared = np.array([len(np.intersect1d(rng.choice(n, k_a, replace=False), rng.choice(n, k_b, replace=False)))
                       for _ in range(draws)])
    simulated = np.mean(shared / (k_a + k_b - shared))
    baselines = overlap(range(k_a), range(k_b), n)
    assert baselines["random_iou_expected"] == pytest.approx(simulated, rel=0.05)
    assert baselines["random_iou_expected"] > baselines["random_iou_ratio_of_expectations"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    model_dir = save_model(root / "model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation on a busy machine
    out = {}
    for name, seed, model in (("a", 0, model_dir), ("b", 1, model_dir), ("narrow", 2, save_model(root / "m32", 32))):
        recipe = build_run(root / name, model, seed=seed)
        run_stage("probe", recipe, root / name)
        out[name] = root / name
    # The dataset of "a" probed again, sharing its capture: another probe seed; another split seed.
    for name, overrides in (("a_seed1", {"probe.seed": 1}), ("a_split1", {"probe.split_seed": 1})):
        recipe = load_recipe(overrides={**SETTINGS, "model.name": str(model_dir), **overrides})
        run_stage("probe", recipe, beside(root / "a", root / name))
        out[name] = root / name
    torch.set_num_threads(threads)
    return out


def test_transfer_between_two_runs_of_one_model(runs, capsys):
    summary = transfer_runs(runs["a"], runs["b"])
    path = runs["a"] / "transfer" / "b.json"
    assert summary["path"] == str(path) and summary["layers"] == 3
    result = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert result["layers"] == [0, 1, 2] and result["summary"] == {k: v for k, v in summary.items() if k != "path"}
    for layer in ("0", "1", "2"):
        by_ratio = result["iou"][layer]["by_ratio"]
        assert [r["ratio"] for r in by_ratio] == [0.0, 0.5, 0.9] and [r["k_a"] for r in by_ratio] == [64, 32, 6]
        assert by_ratio[0]["iou"] == 1.0 and by_ratio[0]["p_value"] == 1.0  # nothing pruned: the same set
        assert result["iou"][layer]["value_neurons"]["k_a"] == 3
        transfer = result["probe_transfer"]["layers"][layer]
        assert transfer["b_held_out"]["last"]["auroc"] > 0.9  # the outcome is in the last tokens of both runs
        assert transfer["b_all"]["last"]["n_rollouts"] == 96 and transfer["b_held_out"]["last"]["n_rollouts"] == 20
        assert set(transfer["a_minus_b_own"]) == {"s0", "step_end", "last"}
    assert summary["auroc_mean_over_layers"]["last"]["a_probe_on_b_held_out"] > 0.9

    assert main(["transfer", str(runs["a"]), str(runs["b"]), "--out", str(runs["a"] / "t.json")]) == 0
    assert "iou_by_ratio_mean_over_layers" in capsys.readouterr().out and (runs["a"] / "t.json").exists()


def test_a_run_transferred_to_itself_is_identical(runs, tmp_path):
    with pytest.warns(UserWarning, match="probe.seed=0: dims can overlap through the shared initialisation"):
        summary = transfer_runs(runs["a"], runs["a"], out=tmp_path / "self.json")
    assert "warning" in summary
    result = json.loads((tmp_path / "self.json").read_text())
    for layer in result["iou"].values():
        assert all(r["iou"] == 1.0 for r in layer["by_ratio"]) and layer["value_neurons"]["iou"] == 1.0
    for layer in result["probe_transfer"]["layers"].values():
        assert all(d["delta"] == 0.0 for d in layer["a_minus_b_own"].values())
    means = summary["auroc_mean_over_layers"]["s0"]
    assert means["a_probe_on_b_held_out"] == means["b_own_probe"]
    assert summary["problems"]["b_all"] == {"problems_dropped": 19, "problems_scored": 5}  # A's own training


def test_another_probe_seed_keeps_the_held_out_problems(runs, tmp_path, recwarn):
    a, b = (read_json(runs[name] / "probe" / "split.json") for name in ("a", "a_seed1"))
    assert a["held_out"] == b["held_out"] and a["train"] == b["train"]  # probe.seed draws no split
    summary = transfer_runs(runs["a"], runs["a_seed1"], out=tmp_path / "t.json")
    assert "warning" not in summary and not [w for w in recwarn if "probe.seed" in str(w.message)]
    assert summary["problems"]["b_held_out"] == {"problems_dropped": 0, "problems_scored": 5}
    result = json.loads((tmp_path / "t.json").read_text())
    assert all(e["b_held_out"]["last"]["n_problems"] == 5 for e in result["probe_transfer"]["layers"].values())


def test_transfer_never_scores_a_problem_that_a_trained_on(runs, tmp_path):
    a, b = (read_json(runs[name] / "probe" / "split.json") for name in ("a", "a_split1"))
    assert a["held_out"] != b["held_out"]  # another split seed: another split of the same problems
    unseen = set(b["held_out"]) - set(a["train"]) - set(a["validation"])
    assert len(unseen) < len(b["held_out"]), "the test needs some of B's held-out problems in A's training set"
    with pytest.warns(UserWarning, match="probe.seed=0"):
        summary = transfer_runs(runs["a"], runs["a_split1"], out=tmp_path / "t.json")
    assert summary["problems"]["b_held_out"] == {"problems_dropped": len(b["held_out"]) - len(unseen),
                                                 "problems_scored": len(unseen)}
    assert summary["problems"]["b_all"]["problems_scored"] == len(a["held_out"])
    result = json.loads((tmp_path / "t.json").read_text())
    for entry in result["probe_transfer"]["layers"].values():
        assert entry["b_held_out"]["s0"]["n_problems"] == entry["b_own_probe"]["s0"]["n_problems"] == len(unseen)


def test_runs_of_different_models_or_unfinished_are_refused(runs, tmp_path):
    with pytest.raises(RewardscopeError, match=r"different shapes \(hidden size, layers\): \(64, 3\) vs \(32, 3\)"):
        transfer_runs(runs["a"], runs["narrow"])
    with pytest.raises(RewardscopeError, match=r"no finished probe stage .*run `rewardscope probe` for it first"):
        transfer_runs(runs["a"], tmp_path)
    assert main(["transfer", str(runs["a"]), str(tmp_path)]) == 2  # the CLI prints the message, no traceback
