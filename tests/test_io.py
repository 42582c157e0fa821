"""Atomic writes (unit, real files): all or nothing, the permissions of an ordinary file, no rewrite of an
unchanged file, and the leftovers of killed writes."""

from __future__ import annotations

import os

import pytest

from rewardscope.io import (atomic_path, is_temporary, json_text, read_json, remove_temporaries, write_json,
                            write_text_if_changed)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"done": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"done": 2, "half')
            raise RuntimeError("interrupted")
    assert read_json(path) == {"done": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_written_files_get_the_umask_mode_not_mkstemp_0600(tmp_path):
    write_json(tmp_path / "a.json", {})
    (tmp_path / "b.json").write_text("{}")  # what a plain open() gives under this process's umask
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == os.stat(tmp_path / "b.json").st_mode & 0o777


def test_an_unchanged_file_is_not_rewritten(tmp_path):
    path = tmp_path / "results.json"
    assert write_text_if_changed(path, json_text({"a": 1})) is True
    stamp = path.stat().st_mtime_ns
    assert write_text_if_changed(path, json_text({"a": 1})) is False
    assert path.stat().st_mtime_ns == stamp
    assert write_text_if_changed(path, json_text({"a": 2})) is True and read_json(path) == {"a": 2}
    assert json_text({"a": 2}) == path.read_text()  # the text write_json writes


def test_leftover_temporaries_are_recognised_and_removed(tmp_path):
    """What a write killed inside atomic_path leaves (tests/test_run_dir.py kills a real one): the next run
    deletes exactly those files, at any depth, and nothing else."""
    with atomic_path(tmp_path / "sub" / "shard.safetensors") as tmp:
        name = tmp.name  # .shard.safetensors.<8 random>.tmp
    leftovers = [tmp_path / "sub" / name, tmp_path / name.replace("shard", "index")]
    keep = [tmp_path / ".lock", tmp_path / "x.tmp", tmp_path / ".notes.tmp", tmp_path / "sub" / "shard.safetensors",
            tmp_path / name.replace(".tmp", "x.tmp")]
    for path in leftovers + keep:
        path.write_bytes(bytes(50))
    assert all(map(is_temporary, leftovers)) and not any(map(is_temporary, keep))
    assert remove_temporaries(tmp_path) == 100
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in keep)


def test_write_safetensors_round_trips_atomically(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import torch
    from safetensors import safe_open

    from rewardscope.io import write_safetensors

    path = tmp_path / "probes.safetensors"
    columns = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # not contiguous
    tensors = {"a/weights": columns, "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16)}
    write_safetensors(path, tensors, metadata={"layers": "[0, 1]"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"layers": "[0, 1]"} and sorted(f.keys()) == ["a/weights", "b"]
        assert torch.equal(f.get_tensor("a/weights"), columns) and torch.equal(f.get_tensor("b"), tensors["b"])
    before = path.read_bytes()
    with pytest.raises(Exception):  # metadata values must be strings: refused before anything is written
        write_safetensors(path, {"x": torch.zeros(2)}, metadata={"n": 3})

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError) as error:  # an OSError with its errno, which the capture turns into advice
        write_safetensors(path, {"x": torch.zeros(2)})
    assert error.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["probes.safetensors"]
