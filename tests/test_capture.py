"""Capture (stage `capture`): states equal Hugging Face's own, batched == one-by-one, layout, resume, errors.

Rollouts come from real tiny models' `generate` (helper `make_rollouts` writes rollouts.parquet's columns).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import re
import shutil
import subprocess
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors import safe_open

from rewardscope.capture import CaptureReader, capture
from rewardscope.capture.extract import POSITION_KINDS, disk_need, plan_capture, state_rows
from rewardscope.capture.reader import shard_path
from rewardscope.errors import RewardscopeError
from rewardscope.hooks import decoder_layers
from rewardscope.io import is_temporary, read_json, write_parquet
from rewardscope.models import TINY_ARCHITECTURES, tiny_model
from rewardscope.rollout.steps import step_ends

QUESTIONS = ["What is 3+4?", "Add 12 and 30, then halve it.", "x", "A train leaves at 9. When does it arrive?"]


def make_rollouts(model, tokenizer, n: int = 7, seed: int = 0) -> pa.Table:
    """rollouts.parquet's columns from sampled generations of `model` (lengths vary; some end with EOS).

    A random model writes no paragraphs: steps end at its most frequent character, so rollouts have several.
    """
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                      add_generation_prompt=True, tokenize=False)
        for i in range(n)
    ]
    batch = tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")  # left padding
    out = model.generate(**batch, do_sample=True, max_new_tokens=40, eos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id)
    rows = []
    for i, prompt in enumerate(prompts):
        response = out[i, batch["input_ids"].shape[1]:].tolist()
        if eos in response:
            response = response[: response.index(eos) + 1]
        else:  # vary the lengths; every third one as if EOS had been sampled there
            response = response[: 6 + 9 * i % 31] + ([eos] if i % 3 == 0 else [])
        finished = response[-1] == eos
        rows.append(dict(
            rollout_id=i, problem_id=f"q{i % len(QUESTIONS)}", problem_index=i % len(QUESTIONS), sample=i // 4,
            prompt=prompt, response=tokenizer.decode(response, skip_special_tokens=True),
            prompt_ids=tokenizer(prompt, add_special_tokens=False)["input_ids"], response_ids=response,
            finish_reason="eos" if finished else "length", gold="7", kind="number", extracted=None,
            reward=float(i % 2), reward_reason="wrong",
        ))
    delimiter = Counter("".join(row["response"] for row in rows)).most_common(1)[0][0]
    for row in rows:
        text_ids = row["response_ids"][: len(row["response_ids"]) - (row["finish_reason"] == "eos")]
        row["step_ends"] = step_ends(tokenizer, text_ids, delimiter)
    schema = pa.schema([
        ("rollout_id", pa.int64()), ("problem_id", pa.string()), ("problem_index", pa.int32()),
        ("sample", pa.int32()), ("prompt", pa.string()), ("response", pa.string()),
        ("prompt_ids", pa.list_(pa.int32())), ("response_ids", pa.list_(pa.int32())),
        ("step_ends", pa.list_(pa.int32())), ("finish_reason", pa.string()), ("gold", pa.string()),
        ("kind", pa.string()), ("extracted", pa.string()), ("reward", pa.float32()), ("reward_reason", pa.string()),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


@functools.lru_cache(maxsize=None)
def model_and_rollouts(arch: str):
    from rewardscope.organism.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    model = tiny_model(arch, tokenizer)
    return model, tokenizer, make_rollouts(model, tokenizer)


def kept_tokens(row: dict) -> int:
    return len(row["response_ids"]) - (row["finish_reason"] == "eos")


def reference_states(model, row: dict) -> tuple[torch.Tensor, list[int]]:
    """HF's own hidden states of one unpadded rollout, last entry *before* the final norm, and the positions
    of s_0 and every kept token."""
    sequence = row["prompt_ids"] + row["response_ids"][: kept_tokens(row)]
    model.config.tie_last_hidden_states = False  # HF's switch: hidden_states[-1] = last block's raw output
    try:
        with torch.no_grad():
            hidden = model(torch.tensor([sequence]), output_hidden_states=True).hidden_states
    finally:
        del model.config.tie_last_hidden_states
    n_prompt = len(row["prompt_ids"])
    return torch.stack(hidden[1:])[:, 0], list(range(n_prompt - 1, len(sequence)))


# ----------------------------------------------------------------------------------------------------------
# Pure logic


def test_state_rows_all_and_steps():
    tokens, kind, step, last = state_rows(5, np.array([1, 4]), "all", rollout_id=0)
    assert tokens.tolist() == [-1, 0, 1, 2, 3, 4]
    assert [POSITION_KINDS[k] for k in kind] == ["s0", "token", "step_end", "token", "token", "step_end"]
    assert step.tolist() == [-1, 0, 0, 1, 1, 1]
    assert last.tolist() == [False] * 5 + [True]

    tokens, kind, step, last = state_rows(5, np.array([1, 4]), "steps", rollout_id=0)
    assert tokens.tolist() == [-1, 1, 4] and step.tolist() == [-1, 0, 1] and last.tolist() == [False, False, True]
    # The last token is kept in "steps" even when no step ends there (the probe's last-token state).
    tokens, kind, step, _ = state_rows(5, np.array([1]), "steps", rollout_id=0)
    assert tokens.tolist() == [-1, 1, 4] and [POSITION_KINDS[k] for k in kind] == ["s0", "step_end", "token"]
    assert step.tolist() == [-1, 0, 1]
    # An empty response: s_0 alone, and it is the last state.
    tokens, _, _, last = state_rows(0, np.array([], dtype=np.int64), "all", rollout_id=0)
    assert tokens.tolist() == [-1] and last.tolist() == [True]


@pytest.mark.parametrize("ends", [[1, 5], [2, 2], [-1], [3, 1]])
def test_state_rows_rejects_bad_step_ends(ends):
    with pytest.raises(RewardscopeError, match=r"rollout_id 42: step_ends .* 0\.\.4"):
        state_rows(5, np.array(ends), "all", rollout_id=42)


# ----------------------------------------------------------------------------------------------------------
# Parity: our states == Hugging Face's output_hidden_states, batched with padding vs one-by-one


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_states_equal_hf_hidden_states(arch, padding_side, tmp_path):
    model, tokenizer, rollouts = model_and_rollouts(arch)
    out = capture(model, tokenizer, rollouts, tmp_path, dtype="float32", batch_size=3, shard_rows=16,
                  padding_side=padding_side)
    reader = CaptureReader(out)
    assert reader.layers == list(range(model.config.num_hidden_layers))
    index = reader.index.to_pydict()
    states = torch.stack([reader.load(layer) for layer in reader.layers])  # [L, rows, d]
    for row in rollouts.to_pylist():
        rows = [i for i, rid in enumerate(index["rollout_id"]) if rid == row["rollout_id"]]
        assert [index["token_index"][i] for i in rows] == list(range(-1, kept_tokens(row)))
        expected, positions = reference_states(model, row)
        torch.testing.assert_close(states[:, rows], expected[:, positions], rtol=1e-4, atol=1e-5)


def test_hf_last_hidden_state_is_after_the_final_norm(tmp_path):
    """The trap the layer convention avoids: HF's default hidden_states[-1] is post-norm, ours is not."""
    model, tokenizer, rollouts = model_and_rollouts("llama")
    reader = CaptureReader(capture(model, tokenizer, rollouts.slice(0, 1), tmp_path, dtype="float32"))
    row = rollouts.slice(0, 1).to_pylist()[0]
    with torch.no_grad():
        post_norm = model(torch.tensor([row["prompt_ids"]]), output_hidden_states=True).hidden_states[-1][0, -1]
    ours = reader.load(reader.layers[-1], np.array([0]))[0]  # s_0 = the last prompt token
    assert not torch.allclose(ours, post_norm, atol=1e-3)
    torch.testing.assert_close(model.model.norm(ours), post_norm, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Layout and index


def test_index_columns_positions_and_eos(tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("qwen2")
    reader = CaptureReader(capture(model, tokenizer, rollouts, tmp_path, shard_rows=10))
    index = reader.index
    assert index.schema == pa.schema([
        ("row", pa.int64()), ("rollout_id", pa.int64()), ("problem_id", pa.string()),
        ("position_kind", pa.string()), ("step_index", pa.int32()), ("token_index", pa.int32()),
        ("is_last", pa.bool_()), ("reward", pa.float32()),
    ])
    cols = index.to_pydict()
    assert cols["row"] == list(range(index.num_rows))
    meta = reader.metadata
    assert meta["n_rows"] == index.num_rows and meta["shards"] == -(-index.num_rows // 10)
    assert {k: meta[k] for k in ("dtype", "positions", "hidden_size", "num_layers", "complete")} == dict(
        dtype="float16", positions="all", hidden_size=64, num_layers=3, complete=True)
    assert sum(r["finish_reason"] == "eos" for r in rollouts.to_pylist()) >= 2
    assert any(len(r["step_ends"]) > 1 for r in rollouts.to_pylist()), "fixture should have interior step ends"
    seen = []
    for row in rollouts.to_pylist():
        rows = [i for i, rid in enumerate(cols["rollout_id"]) if rid == row["rollout_id"]]
        assert rows == list(range(rows[0], rows[0] + len(rows)))  # contiguous
        seen.append(rows[0])
        get = {k: [cols[k][i] for i in rows] for k in cols}
        n = kept_tokens(row)
        assert get["token_index"] == list(range(-1, n))  # s_0, then every token before EOS, never EOS itself
        assert [t for t, k in zip(get["token_index"], get["position_kind"]) if k == "step_end"] == row["step_ends"]
        assert get["position_kind"][0] == "s0" and get["step_index"][0] == -1
        assert get["is_last"] == [False] * n + [True] and row["step_ends"][-1] == n - 1
        assert set(get["problem_id"]) == {row["problem_id"]} and set(get["reward"]) == {row["reward"]}
    lengths = {r["rollout_id"]: len(r["prompt_ids"]) + kept_tokens(r) for r in rollouts.to_pylist()}
    by_start = [rid for _, rid in sorted(zip(seen, lengths))]
    assert [lengths[r] for r in by_start] == sorted(lengths.values(), reverse=True)  # processed longest first
    with safe_open(shard_path(tmp_path, 2, 0), framework="pt") as f:
        assert f.get_tensor("states").dtype == torch.float16 and f.get_tensor("states").shape == (10, 64)


def test_steps_positions_are_the_matching_subset_of_all(tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("gemma2")
    every = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / "all", dtype="float32"))
    steps = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / "steps", positions="steps", dtype="float32"))
    assert set(steps.index.column("position_kind").to_pylist()) == {"s0", "step_end"}
    key = lambda r: (r["rollout_id"], r["token_index"])  # noqa: E731
    where = {key(r): i for i, r in enumerate(every.index.to_pylist())}
    matching = np.array([where[key(r)] for r in steps.index.to_pylist()])
    for name in ("position_kind", "step_index", "is_last"):
        assert steps.index.column(name).to_pylist() == every.index.take(matching).column(name).to_pylist()
    for layer in every.layers:
        torch.testing.assert_close(steps.load(layer), every.load(layer, matching), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_storage_dtypes_and_layer_subset(dtype, tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("phi3")
    exact = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / "f32", layers=[0, 2], dtype="float32"))
    small = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / dtype, layers=[2, 0], dtype=dtype))
    assert small.layers == [0, 2] and not (tmp_path / dtype / "layer_001").exists()
    eps = torch.finfo(getattr(torch, dtype)).eps
    for layer in (0, 2):
        loaded = small.load(layer)
        assert loaded.dtype == torch.float32
        torch.testing.assert_close(loaded, exact.load(layer), rtol=eps, atol=eps)
    with pytest.raises(RewardscopeError, match=r"layer 1 was not captured \(captured: \[0, 2\]\)"):
        small.load(1)


def test_reader_loads_any_rows_in_their_order(tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("llama")
    reader = CaptureReader(capture(model, tokenizer, rollouts, tmp_path, shard_rows=5))
    full = reader.load(1)
    rows = np.random.default_rng(0).integers(0, len(reader), size=40)  # unsorted, with repeats, many shards
    assert torch.equal(reader.load(1, rows), full[rows])
    assert reader.load(1, np.array([], dtype=np.int64)).shape == (0, 64)
    with pytest.raises(RewardscopeError, match=f"row {len(reader)} out of range"):
        reader.load(1, np.array([0, len(reader)]))


# ----------------------------------------------------------------------------------------------------------
# Resume, no-op, and refusing other settings


class _Crash(Exception):
    pass


@contextlib.contextmanager
def crash_at_forward(model, n: int):
    """Raise _Crash in the n-th forward through the model's first block (a killed capture, mid-run); yields the
    list of forwards seen."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) == n:
            raise _Crash

    handle = decoder_layers(model)[0].register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def interrupted_capture(model, tokenizer, rollouts, out, batches: int, **settings):
    """A capture that crashes in its forward number `batches` + 1; returns the index parts written."""
    with crash_at_forward(model, batches + 1), pytest.raises(_Crash):
        capture(model, tokenizer, rollouts, out, **settings)
    return sorted(p.name for p in (out / "index").iterdir())


def test_interrupted_capture_resumes_to_identical_files(tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("mistral")
    settings = dict(batch_size=2, shard_rows=12)
    whole = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / "whole", **settings))

    cut = tmp_path / "cut"
    written = interrupted_capture(model, tokenizer, rollouts, cut, batches=2, **settings)
    assert 0 < len(written) < whole.metadata["shards"]
    with pytest.raises(RewardscopeError, match=rf"capture incomplete \({len(written)} of \d+ shards"):
        CaptureReader(cut)
    before = read_json(cut / "metadata.json")["stats"]["elapsed_s"]  # saved after each shard
    assert before > 0
    # A half-written next shard (no index part) is overwritten on resume.
    shard_path(cut, 1, len(written)).parent.mkdir(parents=True, exist_ok=True)
    shard_path(cut, 1, len(written)).write_bytes(b"partial")

    resumed = CaptureReader(capture(model, tokenizer, rollouts, cut, **settings))
    stats = resumed.metadata["stats"]
    assert stats["resumed_from_shard"] == len(written)
    # The statistics cover the whole capture, not the part this run did.
    assert stats["tokens"] == whole.metadata["stats"]["tokens"] == plan_capture(rollouts).tokens
    assert stats["elapsed_s"] > before
    assert resumed.index.equals(whole.index)
    for layer in whole.layers:
        assert torch.equal(resumed.load(layer), whole.load(layer))

    # Finished: a no-op that never runs the model.
    with crash_at_forward(model, 1) as calls:
        capture(model, tokenizer, rollouts, cut, **settings)
    assert calls == []


def s0_by_problem(reader: CaptureReader, layer: int) -> dict[str, list[torch.Tensor]]:
    index = reader.index.to_pydict()
    rows = [i for i, kind in enumerate(index["position_kind"]) if kind == "s0"]
    states = reader.load(layer, np.array(rows))
    out: dict[str, list[torch.Tensor]] = {}
    for state, row in zip(states, rows):
        out.setdefault(index["problem_id"][row], []).append(state)
    return out


def assert_one_s0_per_problem(reader: CaptureReader, rollouts: pa.Table) -> None:
    problems = Counter(rollouts.column("problem_id").to_pylist())
    assert max(problems.values()) > 1, "the test needs problems with several rollouts"
    for layer in reader.layers:
        for problem, states in s0_by_problem(reader, layer).items():
            assert len(states) == problems[problem]
            assert all(torch.equal(state, states[0]) for state in states), (layer, problem)


def test_every_rollout_of_a_problem_has_the_same_s0_bits(tmp_path):
    """s_0 is the state of the shared prompt. Taken from each rollout's own forward, it moved with the batch the
    rollout ran in (float32 rounding: 3 of the tiny Llama's s_0 rows here)."""
    model, tokenizer, rollouts = model_and_rollouts("llama")
    assert_one_s0_per_problem(CaptureReader(capture(model, tokenizer, rollouts, tmp_path, batch_size=2,
                                                    dtype="float32")), rollouts)


def test_a_resumed_capture_reads_the_shared_s0_back_from_disk(tmp_path):
    """On the demo organism's rollouts a problem's rollouts are spread over the length order, so a resume meets
    problems whose s_0 was taken before the interruption: it must read those bits back, not recompute them."""
    from rewardscope.config import load_recipe
    from rewardscope.io import read_parquet
    from rewardscope.models import load_model
    from rewardscope.rollout.stage import rollout

    recipe = load_recipe(overrides={"data.n_problems": 6, "rollout.n": 4, "rollout.max_new_tokens": 96,
                                    "rollout.step_delimiter": "\n", "model.dtype": "float32", "grade.workers": 1})
    rollouts = read_parquet(rollout(recipe, tmp_path / "run"))
    model, tokenizer = load_model("demo", dtype="float32", device="cpu")
    settings = dict(batch_size=2, shard_rows=16, dtype="float32")
    plan = plan_capture(rollouts)

    def read_back(batches: int) -> int:
        """How many s_0 a resume after `batches` batches must read from disk: rollouts it writes whose prompt's
        first rollout lies before the batch it restarts from."""
        kept_rows = plan.first_rows[batches * 2] // 16 * 16  # the complete shards
        restart = (np.searchsorted(plan.first_rows, kept_rows, side="right") - 1) // 2 * 2
        written = np.flatnonzero(plan.first_rows[:-1] >= kept_rows)
        return int((plan.s0_source[plan.prompt_of[written]] < restart).sum())

    batches = next(b for b in range(1, len(plan.sequences) // 2) if read_back(b))
    whole = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / "whole", **settings))
    interrupted_capture(model, tokenizer, rollouts, tmp_path / "cut", batches=batches, **settings)
    resumed = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / "cut", **settings))
    assert resumed.metadata["stats"]["resumed_from_shard"] * 16 == plan.first_rows[batches * 2] // 16 * 16
    assert_one_s0_per_problem(resumed, rollouts)
    for layer in whole.layers:
        assert torch.equal(resumed.load(layer), whole.load(layer))


# ----------------------------------------------------------------------------------------------------------
# Bad input


def test_layer_out_of_range_names_index_and_range(tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("gpt2")
    with pytest.raises(RewardscopeError,
                       match=r"layer 3 is out of range: the model has 3 decoder layers, valid 0\.\.2"):
        capture(model, tokenizer, rollouts, tmp_path, layers=[0, 3])
    assert not (tmp_path / "metadata.json").exists()


def test_bad_rollouts_are_named(tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("llama")
    with pytest.raises(RewardscopeError, match="missing column 'step_ends'"):
        plan_capture(rollouts.drop_columns(["step_ends"]))
    row = next(r for r in rollouts.to_pylist() if r["finish_reason"] == "eos")
    row["step_ends"] = row["step_ends"] + [len(row["response_ids"]) - 1]  # a step end on EOS
    with pytest.raises(RewardscopeError, match=rf"rollout_id {row['rollout_id']}: step_ends"):
        plan_capture(pa.Table.from_pylist([row], schema=rollouts.schema))
    with pytest.raises(RewardscopeError, match="capture.positions: 'some'"):
        plan_capture(rollouts, positions="some")
    with pytest.raises(RewardscopeError, match=r"no capture here"):
        CaptureReader(tmp_path / "nowhere")


def test_disk_estimate_is_printed_first(tmp_path, capsys):
    model, tokenizer, rollouts = model_and_rollouts("llama")
    n_rows = plan_capture(rollouts).index.num_rows
    capture(model, tokenizer, rollouts, tmp_path, layers=[1, 2], dtype="bfloat16")
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"capture: {n_rows:,} states x 2 layers x 64 dims x 2 bytes = ")


@pytest.mark.parametrize("settings", [dict(shard_rows=5), dict(shard_rows=8192, dtype="float32"),
                                      dict(shard_rows=7, positions="steps", layers=[1])])
def test_disk_estimate_covers_every_byte_written(settings, tmp_path):
    """States alone undercount: each shard file has a header, the index is written twice (parts and whole),
    every file takes at least a filesystem block."""
    model, tokenizer, rollouts = model_and_rollouts("qwen2")
    reader = CaptureReader(capture(model, tokenizer, rollouts, tmp_path, **settings))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    layers = len(reader.layers)
    need = disk_need(plan_capture(rollouts, settings.get("positions", "all")), layers, 64,
                     settings.get("dtype", "float16"), settings["shard_rows"])
    assert need >= sum(p.stat().st_size for p in files) and need >= sum(p.stat().st_blocks * 512 for p in files)
    assert reader.metadata["bytes"] <= need


@contextlib.contextmanager
def small_disk(path, size: str):
    """A tmpfs of `size` mounted at `path`: a real disk that fills up (needs root; skipped elsewhere)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk) -> None:
    """Write zeros into `disk` until it is full."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_a_disk_that_fills_up_mid_capture_is_a_clear_error_and_a_rerun_resumes(tmp_path):
    model, tokenizer, rollouts = model_and_rollouts("gemma3")
    settings = dict(batch_size=2, shard_rows=10)
    whole = CaptureReader(capture(model, tokenizer, rollouts, tmp_path / "whole", **settings))
    with small_disk(tmp_path / "disk", "3m") as disk:
        out = disk / "capture"
        calls = []

        def fill_at_second_batch(module, args, output):
            calls.append(1)
            if len(calls) == 2:
                fill(disk)

        handle = decoder_layers(model)[0].register_forward_hook(fill_at_second_batch)
        try:
            with pytest.raises(RewardscopeError) as error:
                capture(model, tokenizer, rollouts, out, **settings)
        finally:
            handle.remove()
        message = str(error.value)
        kept = int(re.search(r"(\d+) of \d+ shards are complete and kept", message).group(1))
        assert message.startswith(f"{out}: the disk filled up: this capture needs about ")
        assert f"resumes from shard {kept}" in message and 0 < kept < whole.metadata["shards"]
        assert not [p for p in out.rglob("*") if is_temporary(p)], "the partial file is removed"
        (disk / "filler").unlink()
        resumed = CaptureReader(capture(model, tokenizer, rollouts, out, **settings))
        assert resumed.metadata["stats"]["resumed_from_shard"] == kept
        for layer in whole.layers:
            assert torch.equal(resumed.load(layer), whole.load(layer))


def test_the_stage_checks_the_disk_before_loading_the_model(tmp_path):
    """The model folder here has no weights, so loading it would fail: the disk refusal must come first."""
    from rewardscope.capture.stage import capture_rollouts
    from rewardscope.config import load_recipe

    def run(recipe, directory):  # the stage's work: rollouts in `directory`, the capture beside them
        return capture_rollouts(recipe, directory, directory / "capture")

    model, tokenizer, rollouts = model_and_rollouts("qwen3")
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "model.safetensors").unlink()
    recipe = load_recipe(overrides={"model.name": str(model_dir)})
    with small_disk(tmp_path / "disk", "512k") as disk:
        write_parquet(disk / "rollouts.parquet", rollouts)
        with pytest.raises(RewardscopeError, match=r"capture: the capture needs .* more but only .* is free"):
            run(recipe, disk)
    write_parquet(tmp_path / "roomy" / "rollouts.parquet", rollouts)
    with pytest.raises(RewardscopeError, match="cannot load model"):  # what loading the model says, disk aside
        run(recipe, tmp_path / "roomy")


# ----------------------------------------------------------------------------------------------------------
# The stage


def test_stage_runs_once_then_is_a_no_op(tmp_path):
    from rewardscope.config import load_recipe
    from rewardscope.io import read_json
    from rewardscope.pipeline import run_stage

    model, tokenizer, rollouts = model_and_rollouts("qwen3")
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    run_dir = tmp_path / "run"  # a run assembled by hand: rollouts written by another tool
    write_parquet(run_dir / "rollout" / "rollouts.parquet", rollouts)
    recipe = load_recipe(overrides={"model.name": str(model_dir), "capture.positions": "steps",
                                    "capture.shard_rows": 8, "capture.batch_size": 2})
    summary = run_stage("capture", recipe, run_dir)
    reader = CaptureReader(run_dir / "capture", model=str(model_dir))
    assert summary["rows"] == len(reader) and summary["layers"] == [0, 1, 2] and summary["bytes"] > 0
    assert summary["tokens"] == sum(len(r["prompt_ids"]) + kept_tokens(r) for r in rollouts.to_pylist())
    assert read_json(run_dir / "results.json")["capture"] == summary

    shutil.rmtree(model_dir)  # a finished stage must not even load the model
    assert run_stage("extract", recipe, run_dir) == summary  # the stage's old name

    other = load_recipe(overrides={"model.name": "org/other", "capture.positions": "steps",
                                   "capture.shard_rows": 8, "capture.batch_size": 2})
    with pytest.raises(RewardscopeError, match=r"a finished capture stage made with other settings"):
        run_stage("capture", other, run_dir)
    from rewardscope.capture.stage import capture_rollouts  # the capture's own check, below the pipeline's

    with pytest.raises(RewardscopeError, match=r"captured with model='.*/model', but this run has model='org/other'"):
        capture_rollouts(other, run_dir / "rollout", run_dir / "capture")


def test_stage_without_rollouts_says_which_stage_to_run(tmp_path):
    from rewardscope.capture.stage import capture_rollouts
    from rewardscope.config import load_recipe

    with pytest.raises(RewardscopeError, match=r"rollouts.parquet: file not found \(run the `rollout` stage first\)"):
        capture_rollouts(load_recipe(), tmp_path, tmp_path / "capture")


def test_float16_overflow_is_refused_with_advice(char_tokenizer, tmp_path):
    model = tiny_model("llama", char_tokenizer)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1e8)  # residual stream far beyond float16's 65504
    _, tokenizer, rollouts = model_and_rollouts("llama")
    with pytest.raises(RewardscopeError, match=r"layer 0: states reach .* beyond float16's largest value .*=bfloat16"):
        capture(model, tokenizer, rollouts, tmp_path / "f16")
    capture(model, tokenizer, rollouts, tmp_path / "bf16", dtype="bfloat16")


@pytest.mark.parametrize("model", ["demo", "tiny"])
def test_rollout_then_extract_end_to_end(model, tmp_path, char_tokenizer):
    """The real rollout stage's rollouts.parquet through the extract stage (demo organism, or a tiny random
    Llama saved to disk): every rollout gets s_0, its step ends and its last token, and the states load."""
    from rewardscope.config import load_recipe
    from rewardscope.io import read_parquet
    from rewardscope.models import DEMO_MODEL_DIR
    from rewardscope.pipeline import run

    if model == "demo":
        if not (DEMO_MODEL_DIR / "config.json").exists():
            pytest.skip(f"demo organism weights not trained yet ({DEMO_MODEL_DIR})")
        name, max_new_tokens = "demo", 96
    else:
        name, max_new_tokens = str(tmp_path / "tiny"), 12
        tiny_model("llama", char_tokenizer).save_pretrained(name)
        char_tokenizer.save_pretrained(name)
    recipe = load_recipe(overrides={
        "out_dir": str(tmp_path / "runs"), "stages": ["rollout", "extract"], "model.name": name,
        "model.dtype": "float32", "model.device": "cpu", "data.dataset": "organism", "data.n_problems": 3,
        "rollout.n": 2, "rollout.temperature": 0.8, "rollout.top_p": 1.0, "rollout.max_new_tokens": max_new_tokens,
        "rollout.step_delimiter": "\n", "capture.positions": "steps", "capture.shard_rows": 8,
    })
    run_dir = run(recipe)
    rollouts = read_parquet(run_dir / "rollout" / "rollouts.parquet").to_pylist()
    reader = CaptureReader(run_dir / "capture", model=name)
    index = reader.index.to_pylist()
    assert len(rollouts) == 6 and len(reader) == len(index)
    for row in rollouts:
        mine = [r for r in index if r["rollout_id"] == row["rollout_id"]]
        ends = [r["token_index"] for r in mine if r["position_kind"] == "step_end"]
        assert mine[0]["position_kind"] == "s0" and ends == row["step_ends"]
        assert mine[-1]["is_last"] and mine[-1]["token_index"] == kept_tokens(row) - 1
        assert {r["reward"] for r in mine} == {row["reward"]}
    states = reader.load(reader.layers[-1])
    assert states.shape == (len(reader), reader.hidden_size) and torch.isfinite(states).all()
