"""AUROC with bootstrap CIs over problems: parity with scikit-learn, coverage, undefined cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from rewardscope.probe.metrics import (
    HeldOut, ProblemBootstrap, evaluate, holm, mark_holm, paired_difference, summary, wald_p_value, weighted_auroc,
)


def test_auroc_equals_sklearn_with_ties_and_integer_weights():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    labels = rng.random(300) < 0.4
    assert weighted_auroc(scores, labels, np.ones((1, 300)))[0] == pytest.approx(roc_auc_score(labels, scores))
    counts = rng.integers(0, 4, 300)  # a weight is that many copies of the sample
    repeated = np.repeat(np.arange(300), counts)
    expected = roc_auc_score(labels[repeated], scores[repeated])
    assert weighted_auroc(scores, labels, counts[None].astype(float))[0] == pytest.approx(expected)


def clustered_sample(rng, n_problems, per_problem=4, shift=1.0):
    """Problems of varied difficulty; a rollout's score = shift * correct + the problem's offset + noise."""
    difficulty = rng.uniform(0.1, 0.9, n_problems)
    problems = np.repeat(np.arange(n_problems), per_problem)
    labels = rng.random(len(problems)) < difficulty[problems]
    scores = shift * labels + 0.5 * rng.standard_normal(n_problems)[problems] + rng.standard_normal(len(problems))
    return scores, labels, problems


def test_ci_over_problems_covers_the_truth():
    rng = np.random.default_rng(1)
    big_scores, big_labels, _ = clustered_sample(rng, 200_000)
    truth = roc_auc_score(big_labels, big_scores)  # the population AUROC, to about 1e-3
    assert truth == pytest.approx(norm.cdf(1 / np.sqrt(2 * 1.25)), abs=0.01)  # shift 1, variance 1 + 0.25 each
    covered, widths = 0, []
    for _ in range(40):
        scores, labels, problems = clustered_sample(rng, 100)
        reps = ProblemBootstrap(100, 500, seed=int(rng.integers(1 << 30))).replicates(scores, labels, problems)
        low, high = np.percentile(reps[1:], [2.5, 97.5])
        covered += low <= truth <= high
        widths.append(high - low)
    assert covered >= 34, f"95% CI covered the truth in {covered}/40 samples"
    assert 0.05 < np.mean(widths) < 0.2


def held_out(labels, problems) -> HeldOut:
    n = len(labels)
    return HeldOut(
        rows=np.arange(n), labels=np.asarray(labels, bool), problems=np.asarray(problems),
        rollouts=np.arange(n), problem_names=np.array([f"p{i}" for i in range(max(problems) + 1)]),
        positions={"s0": np.arange(n), "step_end": np.arange(0, n, 2), "last": np.arange(n)},
    )


def test_evaluate_tables_sizes_and_paired_differences():
    rng = np.random.default_rng(2)
    scores, labels, problems = clustered_sample(rng, 60)
    ho = held_out(labels, problems)
    boot = ProblemBootstrap(60, 300, seed=0)
    values = np.stack([scores, scores, -scores])
    tables, reps = evaluate(values, ho, boot)
    s0 = tables[0]["s0"]
    assert s0["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert s0["ci95"][0] < s0["auroc"] < s0["ci95"][1]
    assert (s0["n_problems"], s0["n_rollouts"], s0["n_states"]) == (60, 240, 240)
    assert tables[0]["step_end"]["n_states"] == 120
    assert tables[2]["s0"]["auroc"] == pytest.approx(1 - s0["auroc"])
    assert paired_difference(reps["s0"][0], reps["s0"][1]) == {"delta": 0.0, "ci95": [0.0, 0.0]}
    diff = paired_difference(reps["s0"][0], reps["s0"][2])
    assert diff["delta"] == pytest.approx(2 * s0["auroc"] - 1) and diff["ci95"][0] > 0


@pytest.mark.parametrize("correct", [True, False])
def test_one_class_gives_none_and_a_message_not_nan(correct):
    ho = held_out(np.full(12, correct), np.repeat(np.arange(3), 4))
    with pytest.warns(UserWarning) as caught:
        tables, reps = evaluate(np.random.default_rng(0).random((2, 12)), ho, ProblemBootstrap(3, 50, 0))
    what = "correct" if correct else "wrong"
    assert [str(w.message).split(" (")[0] for w in caught] == [  # one per position, not one per probe
        f"s0: AUROC undefined: all 12 held-out states are from {what} rollouts",
        f"step_end: AUROC undefined: all 6 held-out states are from {what} rollouts",
        f"last: AUROC undefined: all 12 held-out states are from {what} rollouts",
    ]
    assert tables[1]["s0"]["auroc"] is None and tables[1]["s0"]["ci95"] is None
    assert "needs both correct and wrong rollouts" in tables[1]["s0"]["note"]
    assert "NaN" not in json.dumps(tables)  # strict JSON: null, never NaN
    assert paired_difference(reps["s0"][0], reps["s0"][1]) == {"delta": None, "ci95": None}


def test_resamples_missing_a_class_are_left_out_of_the_ci():
    # Two problems: one all correct, one all wrong; a third of resamples draw a single class.
    ho = held_out([1, 1, 0, 0], [0, 0, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the point estimate is defined: no warning
        tables, _ = evaluate(np.array([[0.9, 0.8, 0.1, 0.2]]), ho, ProblemBootstrap(2, 200, 0))
    assert tables[0]["s0"]["auroc"] == 1.0 and tables[0]["s0"]["ci95"] == [1.0, 1.0]


def test_a_position_without_held_out_states_says_so_instead_of_failing():
    ho = held_out([1, 0, 1, 0], [0, 0, 1, 1])
    ho.positions["step_end"] = np.array([], dtype=np.int64)  # no response had a step end
    with pytest.warns(UserWarning, match="step_end: AUROC undefined: no held-out states at this position"):
        tables, reps = evaluate(np.array([[0.9, 0.1, 0.8, 0.2]]), ho, ProblemBootstrap(2, 50, 0))
    assert tables[0]["step_end"]["auroc"] is None and tables[0]["step_end"]["n_states"] == 0
    assert tables[0]["s0"]["auroc"] == 1.0
    assert paired_difference(reps["step_end"][0], reps["step_end"][0]) == {"delta": None, "ci95": None}


def test_holm_step_down_by_hand():
    # sorted: .005 <= .05/4, .01 <= .05/3, .03 > .05/2: stop there
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.01, None, 0.2]) == [True, None, False]  # None is no test and not in the family (m = 2)
    assert holm([]) == []


def test_many_cells_at_chance_some_pass_uncorrected_none_survive_holm():
    """90 layer x position cells of a probe at chance (the situation of a weak real model): by luck a few
    uncorrected CIs exclude 0.5, and the Holm correction over the family removes them."""
    rng = np.random.default_rng(5)
    cells = []
    for _ in range(90):
        scores, labels, problems = clustered_sample(rng, 24, shift=0.0)
        reps = ProblemBootstrap(24, 400, seed=int(rng.integers(1 << 30))).replicates(scores, labels, problems)
        cells.append(summary(reps, labels, problems, np.arange(len(labels))))
    uncorrected = sum(c["ci95"][0] > 0.5 or c["ci95"][1] < 0.5 for c in cells)
    assert uncorrected >= 2 and sum(c["p_value"] < 0.05 for c in cells) >= 2
    family = mark_holm(cells)
    assert family["family_size"] == 90 and family["significant"] == 0
    assert all(c["holm_significant"] is False for c in cells)


def test_wald_p_value_tracks_the_bootstrap_ci():
    rng = np.random.default_rng(3)
    scores, labels, problems = clustered_sample(rng, 80, shift=1.0)
    reps = ProblemBootstrap(80, 500, seed=0).replicates(scores, labels, problems)
    cell = summary(reps, labels, problems, np.arange(len(labels)))
    assert cell["ci95"][0] > 0.5 and cell["p_value"] < 0.001
    assert cell["p_value"] == pytest.approx(wald_p_value(cell["auroc"], reps[1:], 0.5))
    assert wald_p_value(0.5, reps[1:], 0.5) == 1.0


def test_paired_difference_test_has_the_resolution_a_holm_correction_needs():
    from rewardscope.stats import holm, paired_difference_test

    rng = np.random.default_rng(0)
    a = rng.uniform(0.4, 1.0, 40)
    strong = paired_difference_test(a, a - 0.3)  # every problem drops by 0.3
    assert strong["delta"] == pytest.approx(0.3) and strong["p_value"] < 1e-4
    assert holm([strong["p_value"]] + [0.5] * 150) [0]  # survives a family of 151 tests
    null = paired_difference_test(a, a[::-1])
    assert null["p_value"] > 0.05 and null["ci95"][0] < null["delta"] < null["ci95"][1]
    assert paired_difference_test(a, a)["p_value"] == 1.0
