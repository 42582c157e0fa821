"""model_fingerprint: the identity of a model's weights that run directories record (unit, files on disk)."""

from __future__ import annotations

from rewardscope import models
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
