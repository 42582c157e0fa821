"""The Hugging Face backend (ours == Hugging Face's own generate, sampling options, seeds) and the `rollout`
stage end to end: the exact schema of docs/artifacts.md, grading, resume after a deleted shard, an exception
and a killed process, the recipe guard, the summary; the demo organism once its weights exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from rewardscope.config import load_recipe, save_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import read_json, read_parquet, write_parquet
from rewardscope.models import DEMO_MODEL_DIR, load_model, tiny_model
from rewardscope.rollout import generate, step_ends
from rewardscope.rollout.hf import Generation, eos_token_ids, finish
from rewardscope.rollout.stage import ELAPSED_KEY, SCHEMA, rollout, summarize, wilson_interval
from rewardscope.rollout.stage import sample as run  # the stage's work on an explicit directory

REPO = Path(__file__).resolve().parents[1]


def chat(tok, question: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   tokenize=False)


@pytest.fixture(scope="module")
def llama(char_tokenizer):
    # GSM8K prompts reach ~550 characters (tokens, for the character tokenizer): room beyond the default 512.
    return tiny_model("llama", char_tokenizer, initializer_range=0.3, max_position_embeddings=2048)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, llama, char_tokenizer) -> Path:
    """The tiny llama saved as a Hugging Face folder, so the stage loads it like any checkpoint."""
    path = tmp_path_factory.mktemp("tiny-llama")
    llama.save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------------------------------
# The Hugging Face backend


def test_finish_cuts_after_the_first_eos(char_tokenizer):
    tok, eos, pad = char_tokenizer, char_tokenizer.eos_token_id, char_tokenizer.pad_token_id
    a, b = tok("ab", add_special_tokens=False)["input_ids"]
    assert finish([7], [a, b, eos, pad, pad], tok, {eos}) == Generation([7], [a, b, eos], "ab", "eos")
    assert finish([7], [a, b, a], tok, {eos}) == Generation([7], [a, b, a], "aba", "length")
    assert finish([7], [b, a, eos], tok, {a, eos}).response_ids == [b, a]  # several EOS ids (Llama 3)


def test_eos_ids_come_from_generation_config_and_tokenizer(llama, char_tokenizer):
    config = llama.generation_config
    assert eos_token_ids(config, char_tokenizer) == {char_tokenizer.eos_token_id}
    config = type(config)(eos_token_id=[5, 6])
    assert eos_token_ids(config, char_tokenizer) == {5, 6, char_tokenizer.eos_token_id}


def test_greedy_equals_hugging_face_generate(llama, char_tokenizer):
    prompts = [chat(char_tokenizer, q) for q in ("What is 6*7?", "hi")]
    ours = generate(llama, char_tokenizer, prompts, n=2, temperature=0, max_new_tokens=12, batch_size=2)
    for prompt, (g, copy) in zip(prompts, ours):
        assert copy == g  # greedy samples are all the same (generated once)
        ids = torch.tensor([char_tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        theirs = llama.generate(ids, do_sample=False, max_new_tokens=12)[0, ids.shape[1]:].tolist()
        assert g.response_ids == theirs


def test_checkpoint_generation_config_does_not_change_sampling(char_tokenizer):
    model = tiny_model("llama", char_tokenizer, initializer_range=0.3)
    prompts = [chat(char_tokenizer, "What is 6*7?")]
    options = dict(max_new_tokens=12, batch_size=8)
    greedy = generate(model, char_tokenizer, prompts, temperature=0, **options)
    sampled = generate(model, char_tokenizer, prompts, n=8, temperature=1.0, seed=0, **options)
    # What Qwen2.5's generation_config.json does, exaggerated so that a leak could not go unnoticed.
    model.generation_config.update(top_k=1, repetition_penalty=5.0, num_beams=3, no_repeat_ngram_size=2)
    assert generate(model, char_tokenizer, prompts, temperature=0, **options) == greedy
    assert generate(model, char_tokenizer, prompts, n=8, temperature=1.0, seed=0, **options) == sampled
    assert len({tuple(g.response_ids) for g in sampled[0]}) > 1  # top_k=1 would make all 8 the same


def test_seeds_reproduce_and_leave_the_global_rng_alone(llama, char_tokenizer):
    prompts = [chat(char_tokenizer, "Count to five.")]
    state = torch.get_rng_state()
    first = generate(llama, char_tokenizer, prompts, n=4, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(llama, char_tokenizer, prompts, n=4, temperature=1.0, top_p=0.9, max_new_tokens=8,
                    seed=3) == first
    other = generate(llama, char_tokenizer, prompts, n=4, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=4)
    assert other != first


@pytest.mark.parametrize("option, value", [("n", 0), ("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5),
                                           ("max_new_tokens", 0), ("batch_size", 0)])
def test_bad_sampling_options_are_named(llama, char_tokenizer, option, value):
    with pytest.raises(RewardscopeError, match=option):
        generate(llama, char_tokenizer, ["hi"], **{option: value})


# ----------------------------------------------------------------------------------------------------------
# The stage on the demo organism and its own task (nothing to download, never skipped); GSM8K for real data


@pytest.fixture(scope="module")
def organism_dir(tmp_path_factory) -> Path:
    """A copy of the shipped demo organism: the tests may move or retrain it without touching the package."""
    path = tmp_path_factory.mktemp("organism") / "demo"
    shutil.copytree(DEMO_MODEL_DIR, path)
    return path


def organism_recipe(tmp_path: Path, model_dir: Path, **rollout):
    options = {**dict(n=2, max_new_tokens=96, batch_size=3, problems_per_shard=2, seed=5, temperature=1.0,
                      top_p=1.0, step_delimiter="\n"), **rollout}
    return load_recipe(overrides={
        "out_dir": str(tmp_path), "model.name": str(model_dir), "model.dtype": "float32", "model.device": "cpu",
        "data.dataset": "organism", "data.n_problems": 5, "grade.workers": 1,
        **{f"rollout.{k}": v for k, v in options.items()},
    })


def gsm8k_recipe(tmp_path: Path, model_dir: Path, shared_data: Path, **rollout):
    options = dict(n=2, max_new_tokens=12, batch_size=3, problems_per_shard=2, seed=5, **rollout)
    return load_recipe(overrides={
        "out_dir": str(tmp_path), "model.name": str(model_dir), "data.dataset": "gsm8k",
        "data.path": str(shared_data / "gsm8k"), "data.limit": 5, "grade.workers": 1,
        **{f"rollout.{k}": v for k, v in options.items()},
    })


def interrupt(shard: int):
    raise KeyboardInterrupt  # what Ctrl-C does between two shards


def without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("elapsed_s", "generated_tokens_per_s")}


def documented_schema() -> dict[str, str]:
    """column -> type, from the rollouts.parquet table of docs/artifacts.md."""
    text = (REPO / "docs" / "artifacts.md").read_text()
    section = text.split("## rollouts.parquet")[1].split("\n## ")[0]
    rows = re.findall(r"^\| (\w+) \| ([\w<>]+(?: \(nullable\))?) \|", section, flags=re.M)
    return dict(rows[1:])  # after the header row


def test_sampling_defaults_are_the_recipes():
    """One home: generate's keyword defaults (both backends) are RolloutConfig's; the seed is per call (None)."""
    import inspect

    from rewardscope.config import RolloutConfig
    from rewardscope.rollout import hf, vllm_backend

    recipe = RolloutConfig()
    for fn, names in ((hf.generate, ("n", "temperature", "top_p", "max_new_tokens", "batch_size")),
                      (vllm_backend.generate, ("n", "temperature", "top_p", "max_new_tokens"))):
        params = inspect.signature(fn).parameters
        assert {name: params[name].default for name in names} == {name: getattr(recipe, name) for name in names}
        assert params["seed"].default is None


def test_schema_is_the_documented_one():
    documented = documented_schema()
    assert list(documented) == SCHEMA.names
    for field in SCHEMA:
        name = {pa.string(): "string", pa.int64(): "int64", pa.int32(): "int32", pa.float32(): "float32",
                pa.list_(pa.int32()): "list<int32>"}[field.type]
        assert documented[field.name].removesuffix(" (nullable)") == name, field.name


def test_stage_on_gsm8k(tmp_path, shared_data, llama_dir, char_tokenizer):
    from rewardscope.data import load_problems
    from rewardscope.pipeline import run_stage

    recipe = gsm8k_recipe(tmp_path, llama_dir, shared_data)
    run_dir = recipe.run_dir()
    summary = run_stage("rollout", recipe, run_dir)
    artifact = run_dir / "rollout"  # a link to the keyed artifact
    table = read_parquet(artifact / "rollouts.parquet")
    assert table.schema.remove_metadata() == SCHEMA
    shards = sorted(p.name for p in (artifact / "rollouts").glob("shard-*"))
    assert shards == [f"shard-0000{k}.parquet" for k in range(3)]
    rows = table.to_pylist()
    problems = load_problems(recipe.data)
    assert [(r["problem_index"], r["sample"]) for r in rows] == [(i, s) for i in range(5) for s in range(2)]
    for r in rows:
        problem = problems[r["problem_index"]]
        assert r["rollout_id"] == r["problem_index"] * 2 + r["sample"]
        assert (r["problem_id"], r["gold"], r["kind"]) == (problem.id, problem.answer, "number")
        assert r["prompt_ids"] == char_tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        assert r["response"] == char_tokenizer.decode(r["response_ids"], skip_special_tokens=True)
        assert r["step_ends"] == step_ends(char_tokenizer, r["response_ids"], "\n\n")
        assert r["finish_reason"] in ("eos", "length")
        assert r["reward"] == 0.0 and r["reward_reason"] in ("empty", "no_answer", "wrong")
        assert (r["extracted"] is None) == (r["reward_reason"] != "wrong")
    assert {"n_problems": 5, "n_rollouts": 10, "accuracy": 0.0, "mixed_problem_share": 0.0}.items() <= summary.items()
    assert summary["accuracy_ci95"][0] == 0.0 and 0.4 < summary["accuracy_ci95"][1] < 0.5  # Wilson, n = 5
    assert sum(summary["finish_reasons"].values()) == sum(summary["reward_reasons"].values()) == 10
    assert (run_dir / "config.yaml").exists() and read_json(artifact / "rollouts" / "summary.json") == summary
    assert read_json(run_dir / "results.json")["rollout"] == summary


def test_finished_stage_is_reused_and_a_deleted_shard_is_sampled_again(tmp_path, organism_dir):
    recipe = organism_recipe(tmp_path, organism_dir)
    run_dir = recipe.run_dir()
    summary = run(recipe, run_dir)
    table = read_parquet(run_dir / "rollouts.parquet")
    assert summary["n_rollouts"] == table.num_rows == 10 and 0 < summary["accuracy"] <= 1

    # A finished stage does no work: it does not even load the model (here, moved away).
    moved = organism_dir.with_name("moved")
    organism_dir.rename(moved)
    try:
        with pytest.raises(RewardscopeError, match="cannot load"):  # the model is really gone
            load_model(str(organism_dir))
        assert run(recipe, run_dir) == summary
    finally:
        moved.rename(organism_dir)

    # A deleted shard is sampled again, identically (its seed depends only on the run's seed and its index).
    for path in (run_dir / "rollouts.parquet", run_dir / "rollouts" / "summary.json",
                 run_dir / "rollouts" / "shard-00001.parquet"):
        path.unlink()
    assert without_timing(run(recipe, run_dir)) == without_timing(summary)
    assert read_parquet(run_dir / "rollouts.parquet").equals(table)


def test_interrupted_run_resumes_to_the_same_table(tmp_path, organism_dir):
    recipe = organism_recipe(tmp_path, organism_dir)
    model, tokenizer = load_model(str(organism_dir), dtype="float32", device="cpu")
    whole = read_parquet(rollout(recipe, tmp_path / "whole", model, tokenizer))
    assert 0 < sum(whole["reward"].to_pylist()) < whole.num_rows  # mixed rewards: grading really ran

    run_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        rollout(recipe, run_dir, model, tokenizer, on_shard=interrupt)
    assert [p.name for p in (run_dir / "rollouts").glob("*.parquet")] == ["shard-00000.parquet"]
    assert not (run_dir / "rollouts.parquet").exists()
    assert read_parquet(rollout(recipe, run_dir, model, tokenizer)).equals(whole)

    # A process killed outright (no cleanup at all) after shard 1 resumes the same way.
    killed = tmp_path / "killed"
    save_recipe(recipe, tmp_path / "recipe.yaml")
    script = (
        "import os, signal, sys\n"
        "from rewardscope.config import load_recipe\n"
        "from rewardscope.rollout.stage import rollout\n"
        "rollout(load_recipe(sys.argv[1]), sys.argv[2],\n"
        "        on_shard=lambda k: k == 1 and os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    child = subprocess.run([sys.executable, "-c", script, str(tmp_path / "recipe.yaml"), str(killed)],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert sorted(p.name for p in (killed / "rollouts").glob("*.parquet")) == ["shard-00000.parquet",
                                                                              "shard-00001.parquet"]
    assert read_parquet(rollout(recipe, killed)).equals(whole)


def test_resume_with_another_recipe_is_refused(tmp_path, organism_dir):
    recipe = organism_recipe(tmp_path, organism_dir)
    model, tokenizer = load_model(str(organism_dir), dtype="float32", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        rollout(recipe, tmp_path / "run", model, tokenizer, on_shard=interrupt)
    changed = organism_recipe(tmp_path, organism_dir, temperature=0.5)
    with pytest.raises(RewardscopeError, match=r"recipe\.json.*rollout\.temperature"):
        rollout(changed, tmp_path / "run", model, tokenizer)
    # grade.workers cannot change a result (changes_results=False): it is neither refused nor in the run key.
    faster = organism_recipe(tmp_path, organism_dir)
    faster.grade.workers = 2
    assert faster.run_dir() == recipe.run_dir()
    assert read_parquet(rollout(faster, tmp_path / "run", model, tokenizer)).num_rows == 10


def test_resume_with_edited_data_or_other_grading_rules_is_refused(tmp_path, organism_dir, monkeypatch):
    """A direct rollout() call has no stage key: its claim records what the key would hold beyond the recipe,
    the data file's content and the grading rules' version, and refuses a resume that would mix two of either."""
    from rewardscope.grading import grader

    data = tmp_path / "choice.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Which is {i}?", "choices": [str(i), "x"],
                                        "answer": "A"}) + "\n" for i in range(4)))
    recipe = load_recipe(overrides={
        "out_dir": str(tmp_path), "model.name": str(organism_dir), "model.dtype": "float32", "model.device": "cpu",
        "data.dataset": "jsonl", "data.path": str(data), "data.kind": "choice", "prompt.instruction": "",
        "grade.workers": 1, "rollout.n": 1, "rollout.max_new_tokens": 4, "rollout.problems_per_shard": 2})
    model, tokenizer = load_model(str(organism_dir), dtype="float32", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        rollout(recipe, tmp_path / "run", model, tokenizer, on_shard=interrupt)
    claim = read_json(tmp_path / "run" / "rollouts" / "recipe.json")
    assert claim["grading_rules"] == {"choice": grader.RULES_VERSIONS["choice"]} and claim["data_content"]
    monkeypatch.setitem(grader.RULES_VERSIONS, "choice", grader.RULES_VERSIONS["choice"] + 1)
    with pytest.raises(RewardscopeError, match=r"recipe\.json: the shards beside it were graded with other rules"):
        rollout(recipe, tmp_path / "run", model, tokenizer)
    monkeypatch.undo()
    data.write_text(data.read_text().replace("Which is 3?", "Which is three?"))
    with pytest.raises(RewardscopeError, match=r"recipe\.json: the shards beside it were sampled from another content"):
        rollout(recipe, tmp_path / "run", model, tokenizer)
    data.write_text(data.read_text().replace("Which is three?", "Which is 3?"))
    assert read_parquet(rollout(recipe, tmp_path / "run", model, tokenizer)).num_rows == 4  # as it was: resumed


def test_rollouts_of_replaced_weights_are_refused(tmp_path, organism_dir):
    """A folder retrained in place keeps its name: neither resuming nor capturing may mix its two models."""
    from transformers import AutoModelForCausalLM

    from rewardscope.capture.stage import capture_rollouts

    model_dir = tmp_path / "model"
    shutil.copytree(organism_dir, model_dir)
    recipe = organism_recipe(tmp_path, model_dir)
    run(recipe, recipe.run_dir())
    assert run(recipe, recipe.run_dir())  # same weights: the finished stage is reused
    retrained = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        retrained.model.norm.weight.mul_(1.01)  # any change of the weights, as another training run would make
    retrained.save_pretrained(model_dir)
    with pytest.raises(RewardscopeError, match=r"recipe\.json: the shards beside it were sampled from other weights"):
        run(recipe, recipe.run_dir())
    with pytest.raises(RewardscopeError, match=r"rollouts\.parquet: sampled from other weights"):
        capture_rollouts(recipe, recipe.run_dir(), tmp_path / "capture")


def test_a_prompt_beyond_the_context_is_refused_before_sampling(tmp_path, organism_dir):
    """The organism's context is 128 positions and its prompts up to ~28 tokens: 120 new tokens cannot fit. The
    stage refuses before the first draw, naming the problem and the largest max_new_tokens that fits."""
    recipe = organism_recipe(tmp_path, organism_dir, max_new_tokens=120)
    with pytest.raises(RewardscopeError, match=r"problem '.+' \(index \d+\): its prompt has \d+ tokens, so with "
                                               r"rollout.max_new_tokens=120 .* context of 128 .*"
                                               r"Nothing was sampled: set rollout.max_new_tokens <= \d+"):
        run(recipe, recipe.run_dir())
    assert not list((recipe.run_dir() / "rollouts").glob("shard-*"))
    fits = int(re.search(r"<= (\d+)", _error(run, recipe, recipe.run_dir())).group(1))
    assert run(organism_recipe(tmp_path, organism_dir, max_new_tokens=fits), tmp_path / "fits")["n_rollouts"] == 10


def _error(fn, *args) -> str:
    with pytest.raises(RewardscopeError) as e:
        fn(*args)
    return str(e.value)


def test_summary_statistics(tmp_path):
    rewards = [1, 1, 1, 0, 0, 0, 1, 0]  # problems: all right, mixed, mixed, all wrong (n = 2 each)
    rows = [dict(rollout_id=i, problem_id=f"p{i // 2}", problem_index=i // 2, sample=i % 2, prompt="q",
                 response="a" * (i + 1), prompt_ids=[1], response_ids=[1] * (i + 1), step_ends=[i],
                 finish_reason="eos" if i % 3 else "length", gold="1", kind="number", extracted=None,
                 reward=float(r), reward_reason="correct" if r else ("error: boom" if i == 7 else "no_answer"))
            for i, r in enumerate(rewards)]
    path = tmp_path / "rollouts.parquet"
    write_parquet(path, pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata({ELAPSED_KEY: "2.0"}))
    summary = summarize(path)
    assert summary["accuracy"] == 0.5 and summary["mixed_problem_share"] == 0.5
    assert summary["accuracy_ci95"] == pytest.approx(list(wilson_interval(0.5, 4)))
    assert summary["mean_response_tokens"] == 4.5 and summary["generated_tokens_per_s"] == 18.0
    assert summary["finish_reasons"] == {"length": 3, "eos": 5}
    assert summary["reward_reasons"] == {"correct": 4, "no_answer": 3, "error": 1}


def test_wilson_interval():
    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0


# ----------------------------------------------------------------------------------------------------------
# The demo organism


@pytest.fixture(scope="module")
def organism():
    return load_model("demo", dtype="float32", device="cpu")


def test_organism_greedy_batched_equals_one_by_one(organism):
    from rewardscope.config import PromptConfig
    from rewardscope.data import build_prompt
    from rewardscope.organism.task import generate_problems

    model, tok = organism
    prompts = [build_prompt(p, tok, PromptConfig()) for p in generate_problems(6, seed=3)]
    alone = generate(model, tok, prompts, temperature=0, max_new_tokens=96, batch_size=1)
    batched = generate(model, tok, prompts, temperature=0, max_new_tokens=96, batch_size=6)
    assert batched == alone
    lengths = {len(g[0].response_ids) for g in batched}
    assert {g[0].finish_reason for g in batched} == {"eos"} and len(lengths) > 1  # EOS at different steps


def test_stage_on_the_organism(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", {
        "out_dir": str(tmp_path), "data.n_problems": 8, "rollout.n": 2, "rollout.problems_per_shard": 5,
        "grade.workers": 1})
    assert recipe.rollout.step_delimiter == "\n"
    summary = run(recipe, recipe.run_dir())
    table = read_parquet(recipe.run_dir() / "rollouts.parquet").to_pylist()
    assert summary["n_rollouts"] == len(table) == 16 and summary["reward_reasons"].get("correct", 0) > 0
    for r in table:
        answer_lines = re.findall(r"^A(\d)[YN]?$", r["response"], flags=re.M)
        assert r["extracted"] == (answer_lines[-1] if answer_lines else None)
        lines = [line for line in r["response"].split("\n") if line.strip()]
        assert len(r["step_ends"]) == len(lines)  # one step per line
        if r["finish_reason"] == "eos":
            assert r["step_ends"][-1] == len(r["response_ids"]) - 2  # the last step ends just before EOS
        assert r["reward_reason"] in ("correct", "wrong", "no_answer", "empty")
        assert (r["reward"] == 1.0) == (r["reward_reason"] == "correct")


# ----------------------------------------------------------------------------------------------------------
# vLLM (optional extra; needs a GPU)


def test_vllm_backend_writes_the_same_fields(tmp_path, char_tokenizer):
    pytest.importorskip("vllm", reason="vllm is an optional extra (pip install 'rewardscope[vllm]'), not installed")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    from rewardscope.models import TinySpec
    from rewardscope.rollout import vllm_backend

    model = tiny_model("llama", char_tokenizer, spec=TinySpec(hidden=256, heads=4, kv_heads=2, intermediate=512))
    model.save_pretrained(tmp_path / "m")
    char_tokenizer.save_pretrained(tmp_path / "m")
    recipe = load_recipe(overrides={"model.name": str(tmp_path / "m"), "model.dtype": "float32"})
    llm, tok = vllm_backend.load(recipe.model)
    prompts = [chat(tok, q) for q in ("What is 6*7?", "hi")]
    out = vllm_backend.generate(llm, tok, prompts, n=3, temperature=1.0, top_p=0.95, max_new_tokens=16, seed=1)
    assert vllm_backend.generate(llm, tok, prompts, n=3, temperature=1.0, top_p=0.95, max_new_tokens=16,
                                 seed=1) == out
    for prompt, samples in zip(prompts, out):
        assert len(samples) == 3
        for g in samples:
            assert g.prompt_ids == tok(prompt, add_special_tokens=False)["input_ids"]
            assert g.text == tok.decode(g.response_ids, skip_special_tokens=True)
            assert (g.finish_reason == "eos") == (g.response_ids[-1] == tok.eos_token_id)
            assert g.finish_reason == "eos" or len(g.response_ids) == 16
    hf_greedy = generate(model, tok, prompts, temperature=0, max_new_tokens=16)
    vllm_greedy = vllm_backend.generate(llm, tok, prompts, temperature=0, max_new_tokens=16)
    # fp32 on both sides; different kernels may still flip a near-tie late, so compare the first tokens.
    assert [g[0].response_ids[:4] for g in vllm_greedy] == [g[0].response_ids[:4] for g in hf_greedy]
