"""Reading a capture directory (layout in docs/artifacts.md): metadata, the index, states loaded lazily.

    capture/metadata.json                              settings; "complete": true once everything is written
    capture/index.parquet                              one row per state; row i = row i of every layer
    capture/layer_<LLL>/shard-<KKKKK>.safetensors      tensor "states" [rows, hidden_size], rows K*shard_rows...
    capture/index/part-<KKKKK>.parquet                 shard K's index rows; written last, marks shard K complete
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors import SafetensorError, safe_open

from rewardscope.errors import RewardscopeError
from rewardscope.io import read_json, read_parquet

# index.parquet's `position_kind`: s_0 (before anything is generated), a generated token, a step's last token.
# The capture writes them, the probe's targets read them: one list, here with the format's reader.
POSITION_KINDS = ("s0", "token", "step_end")


def shard_path(capture_dir: Path, layer: int, shard: int) -> Path:
    return Path(capture_dir) / f"layer_{layer:03d}" / f"shard-{shard:05d}.safetensors"


def part_path(capture_dir: Path, shard: int) -> Path:
    return Path(capture_dir) / "index" / f"part-{shard:05d}.parquet"


def completed_shards(capture_dir: Path, n_shards: int) -> int:
    """How many shards, from the first, are complete (their index part exists)."""
    done = 0
    while done < n_shards and part_path(capture_dir, done).exists():
        done += 1
    return done


class CaptureReader:
    """A finished capture: `metadata`, `layers`, `hidden_size`, `index` (pyarrow) and `load(layer, rows)`.

    `model`, if given, must be the model name the capture was made with (guards against reading another
    model's states, e.g. a copied run directory).
    """

    def __init__(self, capture_dir: str | Path, model: str | None = None):
        self.capture_dir = Path(capture_dir)
        meta_path = self.capture_dir / "metadata.json"
        if not meta_path.exists():
            raise RewardscopeError(f"{self.capture_dir}: no capture here (metadata.json missing): run `capture` first")
        self.metadata: dict = read_json(meta_path)
        if not self.metadata.get("complete"):
            done = completed_shards(self.capture_dir, self.metadata["shards"])
            raise RewardscopeError(
                f"{self.capture_dir}: capture incomplete ({done} of {self.metadata['shards']} shards written): "
                f"run `capture` again to resume it"
            )
        if model is not None and self.metadata["model"] != model:
            raise RewardscopeError(
                f"{self.capture_dir}: captured from model {self.metadata['model']!r}, not {model!r}"
            )
        self.layers: list[int] = list(self.metadata["layers"])
        self.hidden_size: int = int(self.metadata["hidden_size"])
        self.index: pa.Table = read_parquet(self.capture_dir / "index.parquet")
        self._shard_rows = int(self.metadata["shard_rows"])

    def __len__(self) -> int:
        return self.index.num_rows

    def load(self, layer: int, rows: np.ndarray | None = None) -> torch.Tensor:
        """float32 [len(rows), hidden_size] states of `layer`, in the order of `rows` (all rows if None).

        Only the shards holding the requested rows are opened, and of each only the span of rows needed.
        """
        if layer not in self.layers:
            raise RewardscopeError(f"{self.capture_dir}: layer {layer} was not captured (captured: {self.layers})")
        n = len(self)
        rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            bad = rows[(rows < 0) | (rows >= n)][0]
            raise RewardscopeError(f"{self.capture_dir}: row {bad} out of range (the capture has {n} rows)")
        return load_rows(self.capture_dir, layer, rows, self._shard_rows, self.hidden_size, torch.float32)


def load_rows(capture_dir: Path, layer: int, rows: np.ndarray, shard_rows: int, hidden_size: int,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """States of `rows` (any order, repeats allowed) of `layer` from complete shards, as `dtype` (None: the
    stored one, bit for bit).

    Only the shards holding the rows are opened, and of each only the span of rows needed. Also used by a resumed
    capture, before the capture is complete."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = None
    order = np.argsort(rows, kind="stable")
    shard_of = rows[order] // shard_rows
    for group in np.split(order, np.flatnonzero(np.diff(shard_of)) + 1):
        if not group.size:
            continue
        shard = int(rows[group[0]] // shard_rows)
        local = rows[group] - shard * shard_rows  # sorted, as `group` follows the sorted order
        block = _read(capture_dir, layer, shard, int(local[0]), int(local[-1]) + 1)
        if out is None:
            out = torch.empty(len(rows), hidden_size, dtype=dtype or block.dtype)
        out[torch.from_numpy(group)] = block[torch.from_numpy(local - local[0])].to(out.dtype)
    return out if out is not None else torch.empty(0, hidden_size, dtype=dtype or torch.float32)


def _read(capture_dir: Path, layer: int, shard: int, start: int, stop: int) -> torch.Tensor:
    path = shard_path(capture_dir, layer, shard)
    try:
        with safe_open(path, framework="pt") as f:
            return f.get_slice("states")[start:stop]
    except (FileNotFoundError, SafetensorError) as e:
        raise RewardscopeError(f"{path}: cannot read states ({e})") from None
