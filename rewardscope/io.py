"""Artifacts on disk: atomic writes, JSON/JSONL/parquet helpers, resumable shard series.

Every stage writes through these helpers so that an interrupted run never leaves a half-written file:
data go to a temporary file in the same directory, are fsynced, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from rewardscope.errors import RewardscopeError


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the mode an ordinary open() would give, for files made through mkstemp (0600)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # results on a shared cluster stay readable as any other file would
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RewardscopeError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise RewardscopeError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = (), *, with_lineno: bool = False) -> Iterator:
    """Yield the objects of a JSONL file (or `(lineno, obj)` pairs); a bad line or a missing field names the
    file and line. Blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        raise RewardscopeError(f"{path}: file not found")
    required = tuple(required)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RewardscopeError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise RewardscopeError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise RewardscopeError(f"{path}:{lineno}: missing field {missing[0]!r} (has: {sorted(row)})")
            yield (lineno, row) if with_lineno else row


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise RewardscopeError(f"{path}: file not found")
    return pq.read_table(path)


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in results; everything else is a bug worth a TypeError.
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
