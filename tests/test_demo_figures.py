"""Regression: the demo organism's headline figures (`make demo`, recipes/demo.yaml as shipped), pinned within
their seed-to-seed spread.

The bounds come from three full runs with rollout.seed = probe.seed = 0, 1, 2 (README, "Value neurons on the
demo organism"): accuracy 0.807 / 0.809 / 0.807; step-end AUROC at the chosen layer (layer 2 each time) 0.810 /
0.827 / 0.848; last token 0.956 / 0.962 / 0.970; s_0 0.597 / 0.559 / 0.658; Holm-significant TD(0) cells 8 / 8 / 10
of 12. Each bound leaves about one such spread of room beyond the observed range, so a change that moves a figure
by more than seeds do fails here. Slow: the whole recipe, about 4-5 minutes on 2 cores.
"""

from __future__ import annotations

import pytest

from rewardscope import load_recipe, run
from rewardscope.io import read_json
from rewardscope.models import DEMO_MODEL_DIR

pytestmark = pytest.mark.slow
REPO = DEMO_MODEL_DIR.parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    run_dir = run(load_recipe(REPO / "recipes" / "demo.yaml", [f"--out_dir={tmp_path_factory.mktemp('demo')}"]))
    return read_json(run_dir / "results.json"), read_json(run_dir / "probe" / "results.json")


def test_rollouts_are_as_accurate_as_across_seeds(demo):
    results, _ = demo
    rollout = results["rollout"]
    assert rollout["n_problems"] == 200 and rollout["n_rollouts"] == 1600
    assert 0.77 <= rollout["accuracy"] <= 0.85
    assert 0.65 <= rollout["mixed_problem_share"] <= 0.90  # most problems have right and wrong rollouts


def test_chosen_layer_aurocs_are_within_the_seed_spread(demo):
    _, probe = demo
    chosen = probe["summary"]["chosen_layer"]
    assert probe["summary"]["held_out"] == {"problems": 40, "rollouts": 320}
    assert chosen["step_end"]["layer"] in (1, 2, 3)
    assert 0.77 <= chosen["step_end"]["auroc"] <= 0.88 and chosen["step_end"]["holm_significant"]
    assert chosen["last"]["auroc"] >= 0.93 and chosen["last"]["holm_significant"]
    # Only the problem's difficulty is knowable at s_0: 0.50-0.72 over three seeds with `generate`'s sampler,
    # 0.498 [0.421, 0.580] with the rollout format 2 sampler (its own decode loop, other draws).
    assert 0.42 <= chosen["s0"]["auroc"] <= 0.72
    assert 6 <= probe["summary"]["significant_cells"]["TD(0)"] <= 11


def test_training_converged_before_the_cap(demo):
    _, probe = demo
    for layer, by_label in probe["training"].items():
        for label, training in by_label.items():
            assert training["best_epoch"] < training["epochs_cap"], (layer, label)  # stopped, not capped


def test_value_dims_beat_random_dims_only_modestly(demo):
    """At 90% pruning (13 of 128 dims) the top-ranked dims are somewhat richer than as many random dims at step
    ends: a mean difference over layers of +0.041 / +0.032 / +0.026 across the three seeds."""
    _, probe = demo
    at_90 = [next(r for r in rows if r["ratio"] == 0.9) for rows in probe["sweep"].values()]
    deltas = [row["value_minus_random"]["step_end"]["delta"] for row in at_90]
    assert len(deltas) == 4 and -0.01 <= sum(deltas) / len(deltas) <= 0.08


def test_the_positive_control_removes_the_flags(demo):
    """The demo ends with the ablate stage: projecting the flag's unembedding direction out of the last block
    takes the flags from about 20% of the responses to none, while random directions leave them."""
    results, _ = demo
    control = results["ablate"]["positive_control"]
    assert control["unablated_token_rate"] >= 0.1 and control["control_token_rate"] == 0.0
    assert control["random_directions_token_rate"] >= 0.5 * control["unablated_token_rate"]
