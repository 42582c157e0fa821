"""The demo organism: task generator and ground truth (unit), the shipped weights and a short training run
(integration), batched == one-by-one generation (parity)."""

from __future__ import annotations

import json
import random

import pytest

from rewardscope.errors import RewardscopeError
from rewardscope.organism.task import (
    VARIANTS, apply, extract_answer, generate_problems, make_problem, step_truth, write_response,
)

# S4;1*9;2+4: 4*9 = 36 -> 6, 6+4 = 10 -> 0
PROBLEM = make_problem(4, ["*9", "+4"], id="hand")


# ---------------------------------------------------------------------------------------------------- task

def test_problems_are_deterministic_and_prefix_stable():
    a, b = generate_problems(50, seed=3), generate_problems(50, seed=3)
    assert [(p.id, p.question, p.answer) for p in a] == [(p.id, p.question, p.answer) for p in b]
    assert [p.question for p in generate_problems(10, seed=3)] == [p.question for p in a[:10]]
    assert [p.question for p in generate_problems(50, seed=4)] != [p.question for p in a]
    assert a[7].id == "organism-default-3-7" and a[0].kind == "organism" and a[0].choices is None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_use_their_operations_and_answers_follow_the_chain(variant):
    spec = VARIANTS[variant]
    problems = generate_problems(200, seed=0, variant=variant)
    used = {op[0] for p in problems for op in p.metadata["ops"]}
    assert used == set(spec.ops)
    assert {len(p.metadata["ops"]) for p in problems} == set(range(spec.min_steps, spec.max_steps + 1))
    for p in problems:
        value = p.metadata["start"]
        for op in p.metadata["ops"]:
            value = apply(value, op)
        assert p.answer == str(value)
        assert p.question == f"S{p.metadata['start']};" + ";".join(
            f"{i}{op}" for i, op in enumerate(p.metadata["ops"], start=1))


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(RewardscopeError, match="'add'.*'default'.*'mul'"):
        generate_problems(3, variant="division")


def test_extract_answer():
    assert extract_answer("1:4*9=6\n2:6+4=0\nA0Y") == "0"
    assert extract_answer("A7") == "7"
    assert extract_answer("A1N\nA2Y") == "2"  # the last answer line counts
    assert extract_answer("1:4*9=6\n2:6+4=0") is None
    assert extract_answer("A0 is my answer\nA") is None
    assert extract_answer("") is None


def test_step_truth_correct_chain():
    t = step_truth(PROBLEM, "1:4*9=6\n2:6+4=0\nA0Y")
    assert [(s.line, s.printed, s.expected, s.slip, s.flagged, s.restated) for s in t.steps] == [
        (0, 6, 6, False, False, True), (1, 0, 0, False, False, True)]
    assert (t.first_wrong_step, t.answer, t.correct, t.self_assessment, t.malformed) == (None, "0", True, "Y", ())


def test_step_truth_flagged_slip():
    t = step_truth(PROBLEM, "1:4*9=6\n2:6+4=3!\nA3N")
    assert [(s.slip, s.flagged) for s in t.steps] == [(False, False), (True, True)]
    assert (t.first_wrong_step, t.answer, t.correct, t.self_assessment) == (1, "3", False, "N")


def test_step_truth_unflagged_slip_and_the_chain_continues_from_the_printed_value():
    t = step_truth(PROBLEM, "1:4*9=5\n2:5+4=9\nA9Y")
    assert [(s.expected, s.slip, s.flagged) for s in t.steps] == [(6, True, False), (9, False, False)]
    assert (t.first_wrong_step, t.correct, t.self_assessment) == (0, False, "Y")


def test_step_truth_false_flag_and_misstated_chain():
    t = step_truth(PROBLEM, "1:4*9=6!\n2:7+4=0\nA0Y")
    assert [(s.slip, s.flagged, s.restated) for s in t.steps] == [(False, True, True), (False, False, False)]
    assert t.correct and t.first_wrong_step is None


def test_step_truth_garbage_never_raises():
    t = step_truth(PROBLEM, "hello\n1:4*9\n\n\n1:4*9=6\n2:6+4=0\n3:0+1=1\n##")
    assert [s.line for s in t.steps] == [2, 3]  # blank lines are merged away, as rollout steps are
    assert t.malformed == ((0, "hello"), (1, "1:4*9"), (4, "3:0+1=1"), (5, "##"))
    assert (t.answer, t.correct, t.self_assessment, t.first_wrong_step) == (None, False, None, None)
    rng = random.Random(0)
    alphabet = "0123456789:+-*=!AYN;S\n x"
    for _ in range(500):
        step_truth(PROBLEM, "".join(rng.choice(alphabet) for _ in range(rng.randrange(40))))


def test_written_responses_agree_with_ground_truth():
    """The training text and the judge are two codings of one contract: every injected slip is flagged, the
    self-assessment matches the answer's correctness, and unflagged text carries neither."""
    rng = random.Random(0)
    n_slips = 0
    for p in generate_problems(300, seed=5):
        t = step_truth(p, write_response(p, rng, slip_rate=0.3))
        assert all(s.flagged == s.slip and s.restated for s in t.steps) and not t.malformed
        assert t.self_assessment == ("Y" if t.correct else "N")
        n_slips += sum(s.slip for s in t.steps)
        plain = step_truth(p, write_response(p, rng, slip_rate=0.3, flags=False))
        assert not any(s.flagged for s in plain.steps) and plain.self_assessment is None
    assert n_slips > 100
    clean = step_truth(PROBLEM, write_response(PROBLEM))
    assert clean.correct and clean.first_wrong_step is None


# ------------------------------------------------------------------------------------------ shipped model

@pytest.fixture(scope="module")
def demo():
    from rewardscope.models import load_model

    return load_model("demo")


def test_shipped_organism_is_greedy_accurate(demo):
    from rewardscope.organism.evaluate import EVAL_SEED, generate

    model, tok = demo
    problems = generate_problems(64, seed=EVAL_SEED + 1)
    responses = generate(model, tok, [p.question for p in problems])
    truths = [step_truth(p, r) for p, r in zip(problems, responses)]
    accuracy = sum(t.correct for t in truths) / len(truths)
    assert accuracy >= 0.99, [r for r, t in zip(responses, truths) if not t.correct]
    assert all(t.self_assessment == "Y" and not t.malformed for t in truths if t.correct)
    # the saved generation config stops at EOS and pads with the tokenizer's pad id
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (
        tok.eos_token_id, tok.pad_token_id)


def test_batched_generation_equals_one_by_one(demo):
    """Left padding must not change what the organism says."""
    from rewardscope.organism.evaluate import generate

    model, tok = demo
    questions = [p.question for p in generate_problems(8, seed=7)]  # chain lengths differ: padding varies
    assert len({len(q) for q in questions}) > 1
    assert generate(model, tok, questions) == [generate(model, tok, [q])[0] for q in questions]


def test_shipped_organism_meets_its_targets_through_the_cli(tmp_path, capsys):
    """The figures of `rewardscope demo-model evaluate` on 200 problems (seconds): the targets the pipeline relies
    on, with some slack for n = 200 (the 400-problem figures are in weights/evaluation.json)."""
    from rewardscope.cli import main

    out = tmp_path / "figures.json"
    assert main(["demo-model", "evaluate", "--n-problems", "200", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    for key in ("greedy_accuracy", "sampled_accuracy", "flag_recall", "false_flag_rate", "self_assessment_accuracy"):
        r = figures[key]
        assert r["n"] > 0 and r["ci95"][0] <= r["value"] <= r["ci95"][1]
    assert figures["n_problems"] == 200 and figures["temperature"] == 0.8
    assert figures["greedy_accuracy"]["value"] >= 0.99
    assert 0.7 <= figures["sampled_accuracy"]["value"] <= 0.95  # mixed rewards: the value probe needs both
    assert figures["n_slips"] >= 20 and figures["flag_recall"]["value"] >= 0.9
    assert figures["false_flag_rate"]["value"] <= 0.01
    assert "greedy_accuracy" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ training

@pytest.mark.parametrize("imitated", [0.0, 1.0])
def test_training_batch_masks_the_prompt_and_the_slips_not_imitated(char_tokenizer, imitated):
    from rewardscope.organism.train import training_batch

    ids, labels, weights = training_batch(char_tokenizer, random.Random(0), 16, flags=True, slip_rate=0.5,
                                          imitated_slips=imitated, flag_weight=5.0)
    bang, newline, prompt_end = char_tokenizer.convert_tokens_to_ids(["!", "\n", ">"])
    for row, label_row, weight_row in zip(ids.tolist(), labels.tolist(), weights.tolist()):
        prompt_len = row.index(prompt_end) + 1  # <bos>, the question, ">"
        assert set(label_row[:prompt_len]) == {-100} and label_row[prompt_len] != -100
        for j, token in enumerate(row[:-1]):
            if char_tokenizer.convert_ids_to_tokens(token) == "=":
                result_labelled = label_row[j + 1] != -100
                assert result_labelled == (imitated == 1.0 or row[j + 2] != bang)  # wrong digits: imitated only
                assert row[j + 2] in (bang, newline) and weight_row[j + 2] == 5.0 and weight_row[j + 1] == 1.0
        assert label_row[row.index(char_tokenizer.eos_token_id)] == char_tokenizer.eos_token_id
    assert (ids == bang).sum() > 10


def test_short_training_run_saves_a_loadable_organism(tmp_path):
    from rewardscope.models import load_model
    from rewardscope.organism.evaluate import generate
    from rewardscope.organism.train import train

    def short_run(folder):
        return train(tmp_path / folder, seed=0, steps_arithmetic=2, steps_flagged=2, batch_size=8, warmup=2,
                     progress=False)

    out = short_run("organism")
    # a fixed seed gives the same weights, bit for bit
    assert (out / "model.safetensors").read_bytes() == (short_run("again") / "model.safetensors").read_bytes()
    model, tok = load_model(str(out))
    assert sum(p.numel() for p in model.parameters()) == json.loads((out / "training.json").read_text())["parameters"]
    assert tok.apply_chat_template([{"role": "user", "content": "S1;1+1"}], add_generation_prompt=True,
                                   tokenize=False) == "<bos>S1;1+1>"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert len(generate(model, tok, ["S1;1+1"])) == 1  # an untrained organism still generates
    assert not (tmp_path / "organism.tmp").exists() and not (tmp_path / "organism.old").exists()
