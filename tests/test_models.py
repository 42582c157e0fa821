"""model_fingerprint (the identity of a model's weights that run directories record), devices, and a model's
config read without its weights (unit, files on disk)."""

from __future__ import annotations

import pytest
import torch

from rewardscope import models
from rewardscope.errors import RewardscopeError
from rewardscope.models import model_fingerprint


def test_fingerprint_follows_config_and_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(bytes(1000))
    (tmp_path / "README.md").write_text("notes")
    first = model_fingerprint(str(tmp_path))
    assert first.startswith("sha256:") and model_fingerprint(str(tmp_path)) == first
    (tmp_path / "README.md").write_text("other notes")  # not the model
    assert model_fingerprint(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(bytes(999) + b"\x01")  # one byte of the weights
    assert model_fingerprint(str(tmp_path)) != first
    (tmp_path / "model.safetensors").write_bytes(bytes(1000))
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 2}')
    assert model_fingerprint(str(tmp_path)) != first


def test_large_files_are_sampled_at_start_middle_and_end(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_FULL_HASH_BYTES", 100)
    monkeypatch.setattr(models, "_SAMPLE_BYTES", 10)
    weights = tmp_path / "model.safetensors"
    data = bytearray(1000)
    weights.write_bytes(data)
    first = model_fingerprint(str(tmp_path))
    data[300] = 1  # outside the three samples: not seen (the documented price of not reading 28 GB)
    weights.write_bytes(data)
    assert model_fingerprint(str(tmp_path)) == first
    for offset in (0, 505, 995):
        changed = bytearray(1000)
        changed[offset] = 1
        weights.write_bytes(changed)
        assert model_fingerprint(str(tmp_path)) != first, offset


def test_demo_and_uncached_hub_ids():
    assert model_fingerprint("demo") == model_fingerprint(str(models.DEMO_MODEL_DIR))
    assert model_fingerprint("nobody-here/no-such-model-xyz") is None  # nothing cached: nothing to compare


def test_a_device_that_is_not_here_is_refused_with_the_reason():
    assert models.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(RewardscopeError, match=r"model.device: 'gpu' is not a device"):
        models.resolve_device("gpu")
    with pytest.raises(RewardscopeError, match=r"model.device: 'cuda:64' but "):
        models.resolve_device("cuda:64")
    if not torch.cuda.is_available():
        with pytest.raises(RewardscopeError, match=r"model.device: 'cuda' but CUDA is not available \(.+\)"):
            models.resolve_device("cuda")


def test_config_and_context_without_loading_weights(tmp_path, char_tokenizer):
    from rewardscope.config import ModelConfig

    demo = models.load_config(ModelConfig(name="demo"))
    assert (demo.num_hidden_layers, demo.hidden_size, demo.max_position_embeddings) == (4, 128, 128)
    gpt2 = models.tiny_model("gpt2", char_tokenizer)
    assert models.context_length(gpt2) == 512  # GPT-2 calls it n_positions
    with pytest.raises(RewardscopeError, match="cannot load the config of model"):
        models.load_config(ModelConfig(name=str(tmp_path)))  # a folder without config.json
