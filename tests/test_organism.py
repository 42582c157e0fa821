"""The demo organisms (the flagger "demo" and the corrector "demo-corrector"): task generator and ground truth
(unit), the shipped weights and short training runs (integration), batched == one-by-one generation (parity)."""

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


# ------------------------------------------------------------------------------------- the corrector's format

def test_step_truth_recognises_a_correction_and_continues_from_the_corrected_value():
    t = step_truth(PROBLEM, "1:4*9=6\n2:6+4=3!\n2:6+4=0\nA0Y")
    assert [(s.line, s.printed, s.expected, s.slip, s.flagged, s.correction, s.restated) for s in t.steps] == [
        (0, 6, 6, False, False, False, True), (1, 3, 0, True, True, False, True), (2, 0, 0, False, False, True, True)]
    assert (t.first_wrong_step, t.answer, t.correct, t.self_assessment, t.malformed) == (1, "0", True, "Y", ())
    assert [s.line for s in t.chain] == [0, 1] and t.correction_of(t.steps[1]) is t.steps[2]
    assert t.correction_of(t.steps[0]) is None


def test_step_truth_corrections_are_judged_from_the_flagged_lines_input():
    # step 1 corrected; the chain continues from the corrected 6, so step 2 from 6 is right
    t = step_truth(PROBLEM, "1:4*9=5!\n1:4*9=6\n2:6+4=0\nA0Y")
    assert [(s.expected, s.slip, s.correction, s.restated) for s in t.steps] == [
        (6, True, False, True), (6, False, True, True), (0, False, False, True)]
    assert t.correct and len(t.chain) == 2
    # a wrong correction, flagged and corrected again; judged from the same input 4 each time
    t = step_truth(PROBLEM, "1:4*9=5!\n1:4*9=7!\n1:4*9=6\n2:6+4=0\nA0Y")
    assert [(s.expected, s.slip, s.flagged, s.correction) for s in t.steps] == [
        (6, True, True, False), (6, True, True, True), (6, False, False, True), (0, False, False, False)]
    assert t.correct and t.correction_of(t.steps[1]) is t.steps[2]
    # a correction restating the wrong input (the printed 5) is a correction, but misstated
    t = step_truth(PROBLEM, "1:4*9=5!\n1:5*9=5\n2:5+4=9\nA9N")
    assert [(s.correction, s.restated, s.slip) for s in t.steps] == [(False, True, True), (True, False, True),
                                                                    (False, True, False)]
    assert not t.correct


def test_step_truth_a_repeated_step_is_a_correction_only_right_after_a_flag():
    # after an unflagged line, repeating its number is the next step misstated, as for the flagger
    t = step_truth(PROBLEM, "1:4*9=5\n1:4*9=6\nA6N")
    assert [(s.correction, s.restated) for s in t.steps] == [(False, True), (False, False)]
    # a flagged last step whose correction comes after the answer line is not one (lines must be adjacent)
    t = step_truth(PROBLEM, "1:4*9=6\n2:6+4=3!\nA3N\n2:6+4=0")
    assert not any(s.correction for s in t.steps) and t.malformed == ((3, "2:6+4=0"),)
    # an unflagged slip is not corrected: the chain continues from the printed (wrong) value
    t = step_truth(PROBLEM, "1:4*9=5\n2:5+4=9\nA9N")
    assert [(s.expected, s.slip, s.flagged, s.correction) for s in t.steps] == [
        (6, True, False, False), (9, False, False, False)]
    assert not t.correct and t.self_assessment == "N"


def test_corrector_responses_agree_with_ground_truth():
    """The corrector's training text and the judge: every flagged slip is followed by its right correction, the
    unflagged ones (about `unflagged_rate` of them) are not and the chain goes on from the wrong value; the answer
    is right when no slip went unflagged (mod 10, a later *0 can make it right anyway), and the letter says so."""
    rng = random.Random(0)
    flagged = unflagged = 0
    for p in generate_problems(300, seed=5):
        text = write_response(p, rng, slip_rate=0.3, correct=True, unflagged_rate=0.2)
        t = step_truth(p, text)
        assert not t.malformed and all(s.restated for s in t.steps) and len(t.chain) == len(p.metadata["ops"])
        for s in t.steps:
            assert s.flagged == (s.slip and not s.correction and t.correction_of(s) is not None)
            if s.correction:
                assert not s.slip and not s.flagged
        missed = [s for s in t.steps if s.slip and not s.flagged]
        assert (t.correct or missed) and t.self_assessment == ("Y" if t.correct else "N")
        assert all(s.printed == s.expected for s in t.steps if s.correction)
        flagged += sum(s.flagged for s in t.steps)
        unflagged += len(missed)
    assert flagged > 100 and 0.1 < unflagged / (flagged + unflagged) < 0.3
    # without slips the corrector writes what the flagger writes; correct needs flags
    assert write_response(PROBLEM, correct=True) == write_response(PROBLEM) == "1:4*9=6\n2:6+4=0\nA0Y"
    with pytest.raises(RewardscopeError, match="flags"):
        write_response(PROBLEM, random.Random(0), 0.5, flags=False, correct=True)


def test_the_flaggers_text_does_not_depend_on_the_correctors_options():
    """`correct` False ignores `unflagged_rate` and takes the same draws: the flagger's training stream is as it
    was (its shipped weights reproduce)."""
    for seed in range(5):
        problems = generate_problems(20, seed=seed)
        a, b = random.Random(seed), random.Random(seed)
        assert [write_response(p, a, 0.3) for p in problems] == [
            write_response(p, b, 0.3, unflagged_rate=0.5) for p in problems]
        assert a.random() == b.random()


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


@pytest.fixture(scope="module")
def corrector():
    from rewardscope.models import load_model

    return load_model("demo-corrector")


def test_shipped_corrector_loads_by_name(corrector, char_tokenizer):
    from rewardscope.models import DEMO_CORRECTOR_DIR, DEMO_MODEL_DIR, model_fingerprint, resolve_model_path

    model, tok = corrector
    assert resolve_model_path("demo-corrector") == str(DEMO_CORRECTOR_DIR) != str(DEMO_MODEL_DIR)
    fingerprint = model_fingerprint("demo-corrector")
    assert fingerprint == model_fingerprint(str(DEMO_CORRECTOR_DIR)) != model_fingerprint("demo")
    assert (DEMO_CORRECTOR_DIR / "model.safetensors").stat().st_size <= 5 << 20
    assert {p.name for p in DEMO_MODEL_DIR.iterdir()} <= {p.name for p in DEMO_CORRECTOR_DIR.iterdir()}
    training = json.loads((DEMO_CORRECTOR_DIR / "training.json").read_text())
    assert training["variant"] == "corrector" and training["init"] == "demo"
    assert sum(p.numel() for p in model.parameters()) == training["parameters"]
    assert model.generation_config.max_new_tokens >= 106  # 6 flagged lines and their corrections, answer, EOS
    assert tok.get_vocab() == char_tokenizer.get_vocab()  # the flagger's tokenizer


def test_missing_corrector_names_the_command_that_trains_it(tmp_path, monkeypatch):
    from rewardscope import models

    monkeypatch.setitem(models.DEMO_MODELS, "demo-corrector", (tmp_path / "none", "rewardscope demo-model train "
                                                                                 "--variant corrector"))
    with pytest.raises(RewardscopeError, match="--variant corrector"):
        models.resolve_model_path("demo-corrector")


def test_shipped_corrector_corrects_its_flagged_slips_and_not_when_flags_are_forbidden(corrector):
    """On fixed problems sampled at 0.8 (seconds): greedy it is right, sampled it slips, flags and rewrites the
    step right; with `!` forbidden it never flags, so never corrects."""
    from rewardscope.organism.evaluate import EVAL_SEED, generate

    model, tok = corrector
    problems = generate_problems(96, seed=EVAL_SEED + 1)
    questions = [p.question for p in problems]
    greedy = [step_truth(p, r) for p, r in zip(problems, generate(model, tok, questions))]
    assert sum(t.correct for t in greedy) >= 0.97 * len(problems)
    sampled = [step_truth(p, r) for p, r in zip(problems, generate(model, tok, questions, 0.8, seed=0))]
    fixed = [(t, s) for t in sampled for s in t.steps if s.slip and s.flagged and t.correction_of(s) is not None
             and not t.correction_of(s).slip]
    assert fixed, "no flagged slip was corrected"
    assert any(t.correct for t, _ in fixed)  # the chain went on from the corrected value
    flag = tok.convert_tokens_to_ids("!")
    forbidden = generate(model, tok, questions, 0.8, seed=0, banned=[flag])
    assert not any("!" in r for r in forbidden)
    assert not any(s.correction for p, r in zip(problems, forbidden) for s in step_truth(p, r).steps)


def test_shipped_corrector_meets_its_targets_through_the_cli(tmp_path, capsys):
    """`rewardscope demo-model evaluate --model demo-corrector` on 200 problems (seconds), with slack for n = 200
    (the 400-problem figures are in weights_corrector/evaluation.json): it repairs what it flags, and forbidding
    the flag costs it accuracy."""
    from rewardscope.cli import main

    out = tmp_path / "figures.json"
    assert main(["demo-model", "evaluate", "--model", "demo-corrector", "--n-problems", "200", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["organism"] == "corrector" and figures["n_problems"] == 200
    assert figures["greedy_accuracy"]["value"] >= 0.99 and figures["sampled_accuracy"]["value"] >= 0.93
    assert figures["flags_forbidden_accuracy"]["value"] <= figures["sampled_accuracy"]["value"] - 0.05
    assert figures["correction_rate"]["n"] >= 10 and figures["correction_rate"]["value"] >= 0.8
    assert figures["flag_recall"]["value"] >= 0.7 and figures["false_flag_rate"]["value"] <= 0.01
    printed = capsys.readouterr().out
    assert "(corrector)" in printed and "< sampled (CIs apart)" in printed


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



@pytest.mark.parametrize("imitated", [0.0, 1.0])
def test_corrector_batch_masks_unflagged_slips_too_and_always_teaches_corrections(char_tokenizer, imitated):
    from rewardscope.organism.train import training_batch

    ids, labels, _ = training_batch(char_tokenizer, random.Random(1), 32, flags=True, slip_rate=0.5,
                                    imitated_slips=imitated, flag_weight=5.0, correct=True, unflagged_rate=0.5)
    n_unflagged = n_corrections = 0
    for row, label_row in zip(ids.tolist(), labels.tolist()):
        tokens = char_tokenizer.convert_ids_to_tokens(row)
        offset = tokens.index(">") + 1  # <bos>, the question, ">": one token each
        question, response = "".join(tokens[1: offset - 1]), "".join(tokens[offset: tokens.index("<eos>")])
        start, *ops = question.split(";")
        truth = step_truth(make_problem(int(start[1:]), [op[1:] for op in ops], id="batch"), response)
        lines = response.split("\n")
        for s in truth.steps:
            position = offset + sum(len(x) + 1 for x in lines[: s.line]) + lines[s.line].index("=") + 1
            assert char_tokenizer.convert_ids_to_tokens(row[position]) == str(s.printed)
            assert (label_row[position] != -100) == (not s.slip or imitated == 1.0), (response, s)
            n_unflagged += s.slip and not s.flagged
            n_corrections += s.correction
    assert n_unflagged > 3 and n_corrections > 3


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



def test_short_corrector_run_warm_starts_from_the_flagger_through_the_cli(tmp_path, capsys, monkeypatch):
    from argparse import Namespace

    from rewardscope.models import load_model, model_fingerprint
    from rewardscope.organism import cli, train as train_module

    def short(out_dir, seed):
        return original(out_dir, seed=seed, steps_correct=2, steps_anneal=1, batch_size=8,
                                            warmup=1, progress=False)

    original = train_module.train_corrector
    monkeypatch.setattr(train_module, "train_corrector", short)
    cli.main(Namespace(action="train", variant="corrector", out=str(tmp_path / "corrector"), seed=0))
    out = tmp_path / "corrector"
    info = json.loads((out / "training.json").read_text())
    assert (info["variant"], info["init"], info["init_fingerprint"]) == ("corrector", "demo", model_fingerprint("demo"))
    assert {"steps_correct", "steps_anneal", "lr", "slip_rate", "unflagged_rate", "wall_seconds", "cpu_seconds",
            "torch"} <= set(info)
    assert "saved the organism" in capsys.readouterr().out
    model, tok = load_model(str(out))
    assert model.config.max_position_embeddings >= 28 + model.generation_config.max_new_tokens
    with pytest.raises(RewardscopeError, match="corrector"):
        cli.main(Namespace(action="train", variant="fixer", out=str(tmp_path / "x"), seed=0))
