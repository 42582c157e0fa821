"""Stage `probe` end to end on a real capture: a tiny Qwen3 reads hand-written rollouts whose reward shows only
in their last line ("!!!!" correct, "????" wrong), so the known answer is: last-token AUROC near 1, s0 at
chance. Also: saved probes reproduce the results, an interrupted stage resumes to identical results, a finished
one is a no-op, the headline layer is chosen on validation problems, errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from rewardscope.capture.reader import CaptureReader
from rewardscope.config import load_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import read_json, write_parquet
from rewardscope.models import TinySpec, tiny_model
from rewardscope.organism.tokenizer import build_char_tokenizer
from rewardscope.pipeline import run_stage
from rewardscope.probe import stage
from rewardscope.probe.metrics import HeldOut, ProblemBootstrap, evaluate
from rewardscope.probe.targets import read_index
from rewardscope.readers import ProbeReader
from rewardscope.rollout.steps import step_ends

SETTINGS = {
    "probe.hidden": 32, "probe.epochs": 15, "probe.lr": 3e-3, "probe.bootstrap": 200,
    "sweep.ratios": [0.0, 0.5, 0.9], "sweep.random_draws": 2, "sweep.value_neuron_fraction": 0.05,
    "capture.shard_rows": 512,
}


def save_model(path, hidden: int = 64):
    tokenizer = build_char_tokenizer()
    tiny_model("qwen3", tokenizer, spec=TinySpec(hidden=hidden, intermediate=2 * hidden)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def rollouts(tokenizer, seed: int, n_problems: int = 24, per_problem: int = 4) -> pa.Table:
    """rollouts.parquet's columns: a few lines of random words, then "answer !!!!" (reward 1) or "answer ????"."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_problems):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": f"Problem {p}: add {p} and {p * 7}."}],
                                               add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for s in range(per_problem):
            reward = float(rng.random() < 0.5)
            lines = ["".join(rng.choice(list("abcdefgh xyz"), rng.integers(4, 12))) for _ in range(rng.integers(1, 4))]
            response = "\n".join([*lines, "answer " + ("!!!!" if reward else "????")])
            response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append(dict(rollout_id=p * per_problem + s, problem_id=f"s{seed}-p{p}", prompt_ids=prompt_ids,
                             response_ids=response_ids, step_ends=step_ends(tokenizer, response_ids, "\n"),
                             finish_reason="eos", reward=reward))
    return pa.Table.from_pylist(rows)


def build_run(run_dir, model_dir, seed: int = 0, positions: str = "all", **overrides):
    """A run directory assembled by hand, rollout/rollouts.parquet, and a real capture of them; returns its
    recipe."""
    write_parquet(run_dir / "rollout" / "rollouts.parquet", rollouts(build_char_tokenizer(), seed))
    recipe = load_recipe(overrides={**SETTINGS, "model.name": str(model_dir), "capture.positions": positions,
                                    **overrides})
    run_stage("capture", recipe, run_dir)
    return recipe


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_stage")
    model_dir = save_model(root / "model")
    recipe = build_run(root / "run", model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    summary = run_stage("probe", recipe, root / "run")
    torch.set_num_threads(threads)
    return root / "run", recipe, summary, model_dir


def strict_json(path):
    def no_constants(name):
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def test_known_answer_files_and_tables(finished):
    run_dir, recipe, summary, _ = finished
    out = run_dir / "probe"
    assert sorted(p.name for p in out.iterdir()) == [".lock", "probes.safetensors", "results.json", "split.json",
                                                      "stage.json", "value_neurons.json"]
    results = strict_json(out / "results.json")
    assert read_json(run_dir / "results.json")["probe"] == summary == results["summary"]
    assert results["main"] == "TD(0)" and set(results["auroc"]) == {"TD(0)", "Monte-Carlo"}

    split = results["split"]
    assert split["held_out"] == {"problems": 5, "rollouts": 20}
    assert split["validation"] == {"problems": 3, "rollouts": 12} and split["train"] == {"problems": 16, "rollouts": 64}
    parts = strict_json(out / "split.json")
    assert sorted(parts["held_out"]) == sorted(split["held_out_problems"]) and len(parts["held_out"]) == 5
    assert len(set(parts["train"]) | set(parts["validation"]) | set(parts["held_out"])) == 24  # disjoint, all
    for label, table in results["auroc"].items():
        assert sorted(table) == ["0", "1", "2"]
        for layer, row in table.items():
            assert row["last"]["n_rollouts"] == row["s0"]["n_rollouts"] == 20 and row["last"]["n_problems"] == 5
            assert row["step_end"]["n_states"] > 20  # every line's end, pooled
            assert row["last"]["auroc"] > 0.9, (label, layer, row["last"])  # the outcome is in the last tokens
            assert row["last"]["holm_significant"] is True and row["last"]["p_value"] < 0.001
            assert row["s0"]["ci95"][0] < 0.5 < row["s0"]["ci95"][1]  # the prompt says nothing about it
            assert row["s0"]["holm_significant"] is False
            assert row["s0"]["n_boot"] + row["s0"]["n_boot_dropped"] == 200
        family = results["multiple_comparisons"][label]
        assert family["method"] == "Holm-Bonferroni" and family["family_size"] == 9  # 3 layers x 3 positions
    for label, per_layer in results["training"]["1"].items():
        assert 1 <= per_layer["best_epoch"] <= per_layer["epochs_run"] <= 15 and per_layer["early_stopping"]
        curves = results["loss_curves"]["1"][label]
        assert len(curves["train"]) == len(curves["validation"]) == per_layer["epochs_run"]
        assert per_layer["validation_loss"] == curves["validation"][per_layer["best_epoch"] - 1]
        assert per_layer["validation_loss"] <= min(curves["validation"]) + 1e-4  # best, up to probe.tol
    chosen = summary["chosen_layer"]["last"]
    assert chosen["auroc"] > 0.9 and chosen["validation_auroc"] > 0.9
    assert chosen["auroc"] == results["auroc"]["TD(0)"][str(chosen["layer"])]["last"]["auroc"]  # held-out figure
    assert "validation" in summary["chosen_by"]
    assert set(results["td0_minus_monte_carlo"]["2"]) == {"s0", "step_end", "last"}

    for layer in ("0", "1", "2"):
        sweep = results["sweep"][layer]
        assert [r["kept_dims"] for r in sweep] == [64, 32, 6] and [r["ratio"] for r in sweep] == [0.0, 0.5, 0.9]
        assert len(sweep[2]["random_dims"]["last"]["draws"]) == 2 and "ci95" in sweep[2]["value_minus_random"]["s0"]
        assert len(sweep[2]["epochs"]["random_dims"]) == 2 and sweep[2]["epochs"]["value_dims"] >= 1
    neurons = strict_json(out / "value_neurons.json")
    assert neurons["fraction"] == 0.05 and neurons["hidden_size"] == 64
    for entries in neurons["layers"].values():
        assert [e["rank"] for e in entries] == [0, 1, 2]
        assert entries[0]["score"] >= entries[1]["score"] >= entries[2]["score"]


def test_headline_layer_is_chosen_on_validation_problems_not_held_out_ones(finished):
    run_dir, _, summary, _ = finished
    results = read_json(run_dir / "probe" / "results.json")
    for pos, chosen in summary["chosen_layer"].items():
        by_validation = {layer: v[pos] for layer, v in results["validation_auroc"]["TD(0)"].items()}
        assert chosen["layer"] == int(max(by_validation, key=lambda layer: (by_validation[layer], -int(layer))))


def test_loss_curve_of_a_layer_is_its_own_whatever_its_group(finished, tmp_path):
    run_dir, recipe, _, model_dir = finished
    alone = load_recipe(overrides={**SETTINGS, "model.name": str(model_dir), "probe.layers": [1]})
    probe_run(alone, beside(run_dir, tmp_path / "alone"))
    grouped, single = (read_json(d / "probe" / "results.json") for d in (run_dir, tmp_path / "alone"))
    curves = [r["loss_curves"]["1"]["TD(0)"]["train"] for r in (grouped, single)]
    # Batched and single fits agree up to BLAS rounding (a group's mean over layers would not); a group trains on
    # until its last probe stops, so its curve may be longer, but each probe keeps its own best epoch.
    n = min(map(len, curves))
    assert curves[1][:n] == pytest.approx(curves[0][:n], rel=1e-3)
    assert grouped["training"]["1"]["TD(0)"]["best_epoch"] == single["training"]["1"]["TD(0)"]["best_epoch"]


def test_saved_probes_reproduce_the_results(finished):
    run_dir, recipe, _, _ = finished
    results = read_json(run_dir / "probe" / "results.json")
    reader = CaptureReader(run_dir / "capture")
    cols = read_index(reader.index, "index")
    held_problems = results["split"]["held_out_problems"]
    held = HeldOut.from_index(cols, np.unique(cols["rollout_id"][np.isin(cols["problem_id"], held_problems)]))
    X = torch.stack([reader.load(layer, held.rows) for layer in (0, 1, 2)])
    for label in ("TD(0)", "Monte-Carlo"):
        probes, _ = ProbeReader(run_dir / "probe").probes([0, 1, 2], label)
        values = probes.predict(X).numpy()
        tables, _ = evaluate(values, held, ProblemBootstrap(len(held.problem_names), 200, recipe.probe.seed))
        for layer in range(3):
            for pos in ("s0", "step_end", "last"):
                assert tables[layer][pos]["auroc"] == pytest.approx(results["auroc"][label][str(layer)][pos]["auroc"])
    neurons = read_json(run_dir / "probe" / "value_neurons.json")["layers"]["1"]
    probes, _ = ProbeReader(run_dir / "probe").probes([1])
    assert [e["dim"] for e in neurons] == probes.feature_scores_[0].argsort(descending=True)[:3].tolist()


def test_finished_stage_is_a_no_op(finished):
    run_dir, recipe, summary, _ = finished
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "probe").iterdir()}
    assert probe_run(recipe, run_dir) == summary
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "probe").iterdir()} == before


def test_interrupted_stage_resumes_to_identical_results(finished, tmp_path, monkeypatch):
    run_dir, recipe, _, _ = finished
    copy = beside(run_dir, tmp_path / "run")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "_finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        probe_run(recipe, copy)
    monkeypatch.undo()
    parts = copy / "probe" / "layers"
    assert sorted(p.name for p in parts.iterdir())[:2] == ["layer_000.json", "layer_000.safetensors"]
    assert not (copy / "probe" / "results.json").exists()
    (parts / "layer_001.json").unlink()  # as if killed while layer 1 was being written: its group is redone
    probe_run(recipe, copy)
    resumed, original = read_json(copy / "probe" / "results.json"), read_json(run_dir / "probe" / "results.json")
    for results in (resumed, original):
        results["summary"].pop("path")
    assert resumed == original  # AUROCs, sweep, value neurons, curves: all of it, bit for bit
    for name in ("value_neurons.json", "split.json"):
        assert read_json(copy / "probe" / name) == read_json(run_dir / "probe" / name)
    assert not parts.exists()


def probe_run(recipe, run_dir):
    """The probe stage on run_dir/capture, into run_dir/probe."""
    return stage.probe(recipe, run_dir / "capture", run_dir / "probe")


def beside(run_dir, new_dir):
    """A fresh run directory sharing `run_dir`'s capture."""
    new_dir.mkdir()
    (new_dir / "capture").symlink_to(run_dir / "capture")
    return new_dir


def test_step_level_on_a_steps_capture_and_option_errors(finished, tmp_path):
    _, _, _, model_dir = finished
    recipe = build_run(tmp_path / "steps", model_dir, positions="steps",
                       **{"probe.level": "step", "sweep.ratios": [0.0, 0.9], "probe.layers": [2]})
    summary = probe_run(recipe, tmp_path / "steps")
    assert summary["layers"] == 1 and summary["chosen_layer"]["last"]["layer"] == 2
    assert summary["chosen_layer"]["last"]["auroc"] > 0.9
    fresh = beside(tmp_path / "steps", tmp_path / "fresh")
    for overrides, message in [
        ({"probe.level": "token"}, r"probe.level 'token' needs every token's state.*capture.positions=all"),
        ({"probe.layers": [5]}, r"probe.layers: layer 5 was not captured \(captured: \[0, 1, 2\]\)"),
        ({"probe.layers": [2], "sweep.layers": [0]}, r"sweep.layers: layer 0 was not probed \(probed: \[2\]\)"),
    ]:
        bad = load_recipe(overrides={**SETTINGS, "model.name": str(model_dir), "probe.level": "step", **overrides})
        with pytest.raises(RewardscopeError, match=message):
            probe_run(bad, fresh)


def test_missing_capture_says_what_to_run(tmp_path):
    with pytest.raises(RewardscopeError, match=r"no capture here .*run `capture` first"):
        probe_run(load_recipe(), tmp_path)


def test_repeats_report_the_probes_own_spread_beside_the_ci(finished, tmp_path):
    run_dir, _, _, model_dir = finished
    recipe = load_recipe(overrides={**SETTINGS, "model.name": str(model_dir), "probe.layers": [2],
                                    "probe.repeats": 3, "sweep.ratios": [0.0]})
    probe_run(recipe, beside(run_dir, tmp_path / "repeats"))
    results = read_json(tmp_path / "repeats" / "probe" / "results.json")
    for label in ("TD(0)", "Monte-Carlo"):
        cell = results["auroc"][label]["2"]["s0"]  # at chance: where seeds differ (the last token is ~1 for all)
        repeats = cell["repeats"]
        assert repeats["seeds"] == [0, 1, 2] and repeats["auroc"][0] == cell["auroc"]  # seed 0 is the main probe
        assert len(set(repeats["auroc"])) > 1  # other initial weights and batch orders: other probes
        assert repeats["sd"] > 0 and repeats["range"] == [min(repeats["auroc"]), max(repeats["auroc"])]
    assert results["split"] == read_json(run_dir / "probe" / "results.json")["split"]  # the same split
