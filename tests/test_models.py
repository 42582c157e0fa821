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


def test_pad_batch_left_and_right_with_positions_from_the_mask():
    import numpy as np

    from rewardscope.models import pad_batch

    sequences = [np.array([5, 6, 7], dtype=np.int32), [8]]
    right, starts = pad_batch(sequences, pad_id=0, padding_side="right")
    assert starts == [0, 0] and right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    left, starts = pad_batch(sequences, pad_id=9, padding_side="left", device="cpu")
    assert starts == [0, 2] and left["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert left["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]  # the real token at position 0 either way
    assert all(t.dtype == torch.long for t in left.values())
    with pytest.raises(RewardscopeError, match="padding_side: 'middle'"):
        pad_batch(sequences, 0, "middle")


def test_generation_and_capture_pad_through_the_one_helper():
    from rewardscope import models
    from rewardscope.capture import extract
    from rewardscope.rollout import hf

    assert hf.pad_batch is models.pad_batch and extract.pad_batch is models.pad_batch
