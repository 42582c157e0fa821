"""Artifacts on disk: atomic writes, JSON/JSONL/parquet/safetensors helpers, resumable shard series.

Every stage writes through these helpers so that an interrupted run never leaves a half-written file:
data go to a temporary file in the same directory, are fsynced, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import re
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # see is_temporary
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
    write_text(path, json_text(obj))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RewardscopeError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise RewardscopeError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSONL (UTF-8). Text that UTF-8 cannot encode (a lone surrogate such as "\\ud800") never
    stops the write: such a row is written with JSON's \\u escapes, which read back as the same string.
    Returns how many rows were escaped so."""
    escaped = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False, default=_json_default)
            try:
                f.write(line + "\n")
            except UnicodeEncodeError:  # nothing was written: the encoder failed before the buffer took the line
                f.write(json.dumps(row, default=_json_default) + "\n")
                escaped += 1
    return escaped


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = (), *, with_lineno: bool = False) -> Iterator:
    """Yield the objects of a JSONL file (or `(lineno, obj)` pairs); a bad line (malformed JSON, not UTF-8, a
    number too long for Python) or a missing field names the file and line. Blank lines are skipped, and so
    is a UTF-8 byte order mark."""
    path = Path(path)
    if not path.exists():
        raise RewardscopeError(f"{path}: file not found")
    required = tuple(required)
    with open(path, "rb") as f:
        offset = 0  # of the line, in bytes: where a decoding error is
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RewardscopeError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte offset "
                                       f"{offset + e.start} of the file); re-encode the file as UTF-8") from None
            offset += len(raw)
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RewardscopeError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
            except (ValueError, RecursionError) as e:  # an integer over 4300 digits; nesting deeper than Python's stack
                raise RewardscopeError(f"{path}:{lineno}: unreadable JSON ({type(e).__name__}: {e})"[:400]) from None
            if not isinstance(row, dict):
                raise RewardscopeError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise RewardscopeError(f"{path}:{lineno}: missing field {missing[0]!r} (has: {sorted(row)})")
            yield (lineno, row) if with_lineno else row


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write torch tensors as a safetensors file, atomically (non-contiguous tensors are copied first).

    The file is serialised in memory (safetensors' `save`, as many bytes as the tensors) and written by Python,
    not by safetensors' `save_file`, so that a full disk is an OSError with errno ENOSPC (save_file turns it into
    a SafetensorError with the errno only in its text). `metadata`: string keys and values, in the header."""
    from safetensors.torch import save  # here: rewardscope.io is imported by code that never needs torch

    data = save({name: t.contiguous() for name, t in tensors.items()}, metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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


# ----------------------------------------------------------------------------------------------------------
# Rewriting nothing that is unchanged; leftovers of killed runs

_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # atomic_path's mkstemp names: .<name>.<8 random>.tmp


def json_text(obj: Any) -> str:
    """The text write_json writes."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write `text` unless the file holds it already (a finished run rewrites nothing); True if written."""
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text(path, text)
    return True


def is_temporary(path: str | os.PathLike) -> bool:
    """A temporary file of atomic_path: never a result, left behind only by a process killed mid-write."""
    return _TEMPORARY.fullmatch(Path(path).name) is not None


def remove_temporaries(directory: str | os.PathLike) -> int:
    """Delete the leftovers of killed runs under `directory`; returns their bytes. Only safe while no other
    process writes there (the pipeline holds the run directory's lock)."""
    freed = 0
    for path in Path(directory).rglob(".*.tmp"):
        if path.is_file() and is_temporary(path):
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
    return freed
