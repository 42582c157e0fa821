"""The `ablate` experiment stage on the demo organism: every arm on the probe's held-out problems with the same
seed, the positive control (the flag's unembedding direction projected out of the last block removes the flags,
random directions do not), statistics recomputed from the arms' files, resume, and bad input refused before
any generation. Integration tier: the shipped organism, real files, small settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewardscope import load_recipe, run
from rewardscope.ablate import arms as A
from rewardscope.errors import RewardscopeError
from rewardscope.io import read_json, read_parquet, write_json
from rewardscope.models import DEMO_MODEL_DIR, load_model
from rewardscope.readers import ProbeReader
from rewardscope.rollout import generate
from rewardscope.rollout.hf import derive_seed

REPO = DEMO_MODEL_DIR.parents[2]
SMALL = [
    "--data.n_problems=60", "--rollout.n=4", "--rollout.problems_per_shard=30",
    "--probe.hidden=32", "--probe.epochs=4", "--probe.bootstrap=50", "--sweep.ratios=[0.0]",
    "--ablate.layers=[1]", "--ablate.fractions=[0.05]", "--ablate.random_draws=2", "--ablate.n=4",
    "--ablate.control_token=!", "--ablate.bootstrap=200",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate")
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", [f"--out_dir={out}", *SMALL,
                                                          "--stages=[rollout, capture, probe, ablate]"])
    run_dir = run(recipe)
    return recipe, run_dir, run_dir / "ablate"


def test_every_arm_runs_on_the_held_out_problems_with_its_dims(finished):
    recipe, run_dir, ablate_dir = finished
    plan, results = read_json(ablate_dir / "plan.json"), read_json(ablate_dir / "results.json")
    split = read_json(run_dir / "probe" / "split.json")
    baseline = read_parquet(ablate_dir / "arms" / "none.parquet")
    assert set(baseline["problem_id"].to_pylist()) == set(split["held_out"])
    assert not set(split["held_out"]) & (set(split["train"]) | set(split["validation"]))
    arms = {a["key"]: a for a in plan["arms"]}
    expected = {"none", "L1-f0.05-value", "L1-f0.05-random-d0", "L1-f0.05-random-d1", "L1-f0.05-magnitude",
                "L1-f0.05-magnitude_matched-d0", "L1-f0.05-magnitude_matched-d1", "L1-f0.05-terminal",
                "L1-f0.05-next_token", "L1-f0.05-wanda", "L1-direction", "L1-random_direction-d0",
                "L1-random_direction-d1", "control", "control-random-d0", "control-random-d1"}
    assert set(arms) == expected
    k = A.count(0.05, 128)
    scores = ProbeReader(run_dir / "probe").probes([1])[0].feature_scores_[0].numpy()
    assert k == 6 and arms["L1-f0.05-value"]["dims"] == A.top(scores, k)
    assert all(len(arms[key]["dims"]) == k for key in arms if key.startswith("L1-f0.05"))
    sinks = plan["layers"]["1"]["sink_dims"]
    for draw in (0, 1):
        assert not set(arms[f"L1-f0.05-random-d{draw}"]["dims"]) & set(sinks)
        assert not set(arms[f"L1-f0.05-magnitude_matched-d{draw}"]["dims"]) & set(arms["L1-f0.05-value"]["dims"])
    assert arms["L1-f0.05-random-d0"]["dims"] != arms["L1-f0.05-random-d1"]["dims"]
    for quality in plan["layers"]["1"]["magnitude_matching"]["0.05"]:
        assert quality["mean_abs_log_rms_ratio"] < 0.5
    assert read_json(run_dir / "results.json")["ablate"] == results["summary"]


def test_the_unablated_arm_is_plain_generation_with_the_same_seed(finished):
    recipe, run_dir, ablate_dir = finished
    baseline = read_parquet(ablate_dir / "arms" / "none.parquet")
    prompts = {p: t for p, t in zip(read_parquet(run_dir / "rollout" / "rollouts.parquet")["problem_id"].to_pylist(),
                                    read_parquet(run_dir / "rollout" / "rollouts.parquet")["prompt"].to_pylist())}
    order = list(dict.fromkeys(baseline["problem_id"].to_pylist()))
    model, tok = load_model("demo", dtype="float32", device="cpu")
    out = generate(model, tok, [prompts[p] for p in order], n=4, temperature=recipe.rollout.temperature,
                   top_p=recipe.rollout.top_p, max_new_tokens=recipe.rollout.max_new_tokens,
                   batch_size=recipe.rollout.batch_size, seed=derive_seed(0, 0))
    assert baseline["response"].to_pylist() == [g.text for samples in out for g in samples]


def test_positive_control_removes_the_flags_and_random_directions_do_not(finished):
    _, _, ablate_dir = finished
    results = read_json(ablate_dir / "results.json")
    control = results["summary"]["positive_control"]
    assert control["unablated_token_rate"] > 0.1, "the organism must flag some slips for the control to mean anything"
    assert control["control_token_rate"] == 0.0
    assert control["random_directions_token_rate"] > 0.5 * control["unablated_token_rate"]
    cell = results["table"]["3"]["positive_control"]["random_control"]
    assert cell["control_minus_this"]["delta"] is not None


def test_figures_are_recomputed_from_the_arm_files(finished):
    _, _, ablate_dir = finished
    results = read_json(ablate_dir / "results.json")
    base = read_parquet(ablate_dir / "arms" / "none.parquet")
    value = read_parquet(ablate_dir / "arms" / "L1-f0.05-value.parquet")

    def per_problem(t):
        ids, reward = np.asarray(t["problem_id"].to_pylist()), np.asarray(t["reward"].to_pylist())
        return {p: reward[ids == p].mean() for p in sorted(set(ids))}

    b, v = per_problem(base), per_problem(value)
    assert results["arms"]["none"]["accuracy"]["value"] == pytest.approx(np.mean(list(b.values())))
    cell = results["table"]["1"]["0.05"]["value"]
    assert cell["minus_unablated"]["delta"] == pytest.approx(np.mean([v[p] - b[p] for p in b]))
    lo, hi = cell["minus_unablated"]["ci95"]
    assert lo <= cell["minus_unablated"]["delta"] <= hi and 0 < cell["minus_unablated"]["p_value"] <= 1
    random = results["table"]["1"]["0.05"]["random"]
    assert len(random["draws"]) == 2 and "value_minus_this" in random
    eos = np.mean([f == "eos" for f in value["finish_reason"].to_pylist()])
    assert results["arms"]["L1-f0.05-value"]["eos_rate"] == pytest.approx(eos)
    assert results["multiple_comparisons"]["family_size"] == sum(
        1 for c in _cells(results["table"]) for k in c if k.endswith("_this") or k == "minus_unablated")


def _cells(table):
    for slots in table.values():
        for cells in slots.values():
            yield from cells.values()


def test_an_interrupted_experiment_resumes_to_the_same_results(finished):
    recipe, run_dir, ablate_dir = finished
    before = read_json(ablate_dir / "results.json")
    arm = ablate_dir / "arms" / "L1-f0.05-wanda.parquet"
    kept = read_parquet(arm)
    arm.unlink()
    (ablate_dir / "results.json").unlink()  # as if the stage had been killed before its last arm
    from rewardscope.ablate.stage import experiment

    experiment(recipe, run_dir / "rollout", run_dir / "capture", run_dir / "probe", ablate_dir.resolve())
    assert read_parquet(arm).equals(kept)
    assert read_json(ablate_dir / "results.json") == before


def test_bad_input_is_refused_before_any_generation(finished, tmp_path):
    recipe, run_dir, ablate_dir = finished
    from rewardscope.ablate.stage import experiment

    inputs = [run_dir / "rollout", run_dir / "capture", run_dir / "probe"]
    bad = load_recipe(REPO / "recipes" / "demo.yaml", [*SMALL, "--ablate.layers=[7]"])
    with pytest.raises(RewardscopeError, match=r"layer 7 was never probed .* layers \[0, 1, 2, 3\]"):
        experiment(bad, *inputs, tmp_path / "a")
    probe_copy = tmp_path / "probe"
    import shutil

    shutil.copytree(run_dir / "probe", probe_copy)
    neurons = read_json(probe_copy / "value_neurons.json")
    neurons["layers"]["1"] = []
    write_json(probe_copy / "value_neurons.json", neurons)
    with pytest.raises(RewardscopeError, match="value_neurons.json: no value neurons for layer 1"):
        experiment(recipe, inputs[0], inputs[1], probe_copy, tmp_path / "b")
    with pytest.raises(RewardscopeError, match="control_token: 'AB' is 2 tokens"):
        experiment(load_recipe(REPO / "recipes" / "demo.yaml", [*SMALL, "--ablate.control_token=AB"]), *inputs,
                   tmp_path / "c")
    assert not any((tmp_path / name / "arms").exists() for name in "abc")


# ----------------------------------------------------------------------------------------------------------
# The arms' rules alone


def test_sink_dims_are_the_outsized_first_token_dims():
    first = np.ones((4, 16))
    first[:, 3] = 500.0
    first[:, 9] = -40.0
    assert A.sink_dims(first, ratio=20) == [3, 9]
    assert A.sink_dims(first, ratio=100) == [3]


def test_magnitude_matching_draws_dims_of_about_the_same_rms():
    rms = np.geomspace(0.01, 100, 200)
    value = [199, 150, 20]
    drawn, quality = A.magnitude_matched(rms, value, seed=0, layer=0, draw=0)
    assert not set(drawn) & set(value) and len(set(drawn)) == 3
    assert quality["mean_abs_log_rms_ratio"] < 6 * np.log(rms[1] / rms[0])
    uniform = A.random_dims(200, 3, [], seed=0, layer=0, draw=0)
    assert np.abs(np.log(rms[uniform] / rms[value])).mean() > quality["mean_abs_log_rms_ratio"]


def test_random_dims_leave_out_the_excluded_and_refuse_too_many():
    dims = A.random_dims(10, 8, [0, 1], seed=0, layer=0, draw=0)
    assert len(dims) == 8 and not {0, 1} & set(dims)
    with pytest.raises(RewardscopeError, match="only 8 of 10"):
        A.random_dims(10, 9, [0, 1], seed=0, layer=0, draw=0)


def test_reward_direction_finds_the_coordinate_that_carries_the_reward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g) * torch.tensor([1, 1, 1, 5, 1, 1, 1, 1.0])
    reward = (x[:, 3] > 0).float()
    direction = A.reward_direction(x, reward)
    assert direction.abs().argmax() == 3 and direction.norm() == pytest.approx(1.0)


def test_next_token_scores_rank_the_dim_that_predicts_the_next_token():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 8, generator=g)
    tokens = torch.where(x[:, 5] > 0, 7, 11)
    assert int(A.next_token_scores(x, tokens, classes=4).argmax()) == 5


def test_wanda_scores_follow_weight_and_input_norm(char_tokenizer):
    from rewardscope.models import tiny_model

    model = tiny_model("llama", char_tokenizer)
    states = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    base, where = A.wanda_scores(model, 0, states)
    assert "q_proj" in where and "up_proj" in where
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight[:, 17] *= 50
    boosted, _ = A.wanda_scores(model, 0, states)
    assert int(boosted.argmax()) == 17 and boosted[17] > base[17]
    last, where = A.wanda_scores(model, 2, states)
    assert where == "final norm and LM head" and last.shape == (64,)


def test_unembedding_direction_writes_the_tokens_logit():
    model, tok = load_model("demo", dtype="float32", device="cpu")
    flag = tok("!", add_special_tokens=False)["input_ids"][0]
    direction = A.unembedding_direction(model, flag)
    norm = model.model.norm
    h = torch.randn(1, 1, model.config.hidden_size)
    logit = lambda v: float(model.lm_head(norm(v))[0, 0, flag].detach())  # noqa: E731
    projected = h - (h @ direction)[..., None] * direction
    # Removing the direction moves the flag's logit far more than removing a random direction does.
    random = A.random_direction(model.config.hidden_size, seed=0, layer=0, draw=0)
    other = h - (h @ random)[..., None] * random
    assert abs(float(logit(h) - logit(projected))) > abs(float(logit(h) - logit(other)))


def test_organism_figures_count_slips_flags_and_corrections():
    import random

    import pyarrow as pa

    from rewardscope.ablate.stage import _organism_stats
    from rewardscope.organism.task import generate_problems, step_truth, write_response

    problems = generate_problems(40, seed=3)
    rng = random.Random(0)
    responses = [write_response(p, rng, slip_rate=0.3, correct=True, unflagged_rate=0.3) for p in problems]
    stats = _organism_stats(pa.table({"problem_id": [p.id for p in problems], "response": responses}),
                            {p.id: p for p in problems})
    truths = [step_truth(p, r) for p, r in zip(problems, responses)]
    slips = sum(s.slip for t in truths for s in t.chain)
    flagged = sum(s.slip and s.flagged for t in truths for s in t.chain)
    assert stats["slips"] == slips > 10 and 0 < flagged < slips  # some slips left unflagged on purpose
    assert stats["corrections"] == flagged and stats["correction_rate"] == 1.0  # written corrections are right
    assert stats["flag_recall"] == flagged / slips and stats["false_flags"] == 0


def test_magnitude_matching_never_pairs_a_value_dim_with_a_sink_unless_it_is_one():
    rms = np.concatenate([np.linspace(0.5, 3.0, 60), [40.0, 60.0]])  # dims 60 and 61: attention sinks
    value = [59, 58]  # the largest ordinary dims: the sinks are their rank neighbours
    for draw in range(20):
        drawn, quality = A.magnitude_matched(rms, value, seed=0, layer=0, draw=draw, excluded=[60, 61])
        assert not {60, 61} & set(drawn) and quality["summed_rms_ratio"] < 1.2
    draws = [A.magnitude_matched(rms, [61], seed=0, layer=0, draw=d, excluded=[60, 61])[0][0] for d in range(40)]
    assert 60 in draws  # a value dim that is a sink may be matched to the other sink


def test_the_report_and_the_summary_show_the_experiment(finished):
    from rewardscope.report import summary_table, write_report
    from rewardscope.report.ablate import section

    _, run_dir, ablate_dir = finished
    results = read_json(ablate_dir / "results.json")
    sec = section(run_dir)
    assert sec.title == "Ablation during generation" and len(sec.figures) == 1 and len(sec.tables) == 1
    assert sec.figures[0].png.startswith(b"\x89PNG") and "Positive control" in " ".join(sec.paragraphs)
    rows = sum(len(cells) for slots in results["table"].values() for cells in slots.values())
    assert sec.tables[0].html.count("<tr>") == rows + 1  # a header row and one row per table cell
    text = summary_table(run_dir)
    assert "ablate    unablated accuracy" in text and "positive control: control-token rate" in text
    html = write_report(run_dir, strict=True).read_text()
    assert '<section id="ablate">' in html
