"""Atomic writes (unit, real files): all or nothing, and the permissions of an ordinary file."""

from __future__ import annotations

import os

import pytest

from rewardscope.io import atomic_path, read_json, write_json


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
