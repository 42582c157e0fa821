"""Readers of every artifact, in one place: what a stage reads of another stage's output, it reads through here.

    read_rollouts(dir)      the rollout artifact: rollouts.parquet and the fingerprint of the weights that sampled it
    CaptureReader(dir)      the capture artifact: metadata, the index, states loaded lazily by layer and row
    ProbeReader(dir)        the probe artifact: results, the split, value neurons, the saved probes
    load_states, placement  states of many layers at chosen rows, in groups that fit in memory

Formats: docs/artifacts.md. A stage never imports another stage's modules; these readers and the libraries
(rewardscope.probe's estimator and metrics, rewardscope.hooks, ...) are what they share.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from rewardscope.capture.reader import CaptureReader
from rewardscope.errors import RewardscopeError
from rewardscope.io import read_json, read_parquet

__all__ = ["CaptureReader", "ProbeReader", "ROLLOUTS_FILE", "load_states", "placement", "read_rollouts"]

ROLLOUTS_FILE = "rollouts.parquet"
ELAPSED_KEY = b"rewardscope.elapsed_s"  # parquet metadata: seconds spent generating and grading the rows
MODEL_KEY = b"rewardscope.model_fingerprint"  # parquet metadata: the weights that sampled the rows ("" unknown)
LOAD_CHUNK = 16384  # rows per CaptureReader.load: bounds the float32 copy it returns


def read_rollouts(directory: str | Path):
    """(rollouts table, fingerprint of the weights that sampled it or None) of a rollout artifact."""
    path = Path(directory) / ROLLOUTS_FILE
    if not path.exists():
        raise RewardscopeError(f"{path}: file not found (run the `rollout` stage first)")
    table = read_parquet(path)
    fingerprint = (table.schema.metadata or {}).get(MODEL_KEY, b"").decode() or None
    return table, fingerprint


class ProbeReader:
    """A finished probe artifact: `results`, `split` (problem ids of train / validation / held_out),
    `value_neurons`, the probed `layers`, the model's shape, and `probes(layers)` (the saved estimators)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / "results.json").exists():
            raise RewardscopeError(f"{self.directory}: no finished probe stage (results.json missing): "
                                   "run `rewardscope probe` for it first")
        self.results: dict = read_json(self.directory / "results.json")
        with safe_open(self.directory / "probes.safetensors", framework="pt") as f:
            self._meta = f.metadata()
        self.layers: list[int] = json.loads(self._meta["layers"])
        self.hidden_size = int(self._meta["hidden_size"])
        self.num_layers = int(self._meta["num_layers"])
        self.model: str = self._meta["model"]
        self.main: str = self._meta["main"]

    @cached_property
    def split(self) -> dict[str, list[str]]:
        path = self.directory / "split.json"
        if not path.exists():
            raise RewardscopeError(f"{path}: missing (a probe stage made before rewardscope 0.2): run it again")
        return read_json(path)

    @cached_property
    def value_neurons(self) -> dict[str, list[dict]]:
        return read_json(self.directory / "value_neurons.json")["layers"]

    def probes(self, layers: list[int], label: str | None = None, device: str = "cpu"):
        """The `label` probes (default: the main ones) of `layers`; probe i reads layer i of the states it is
        given. Returns (LayerwiseValueProbes, label)."""
        from rewardscope.probe.estimator import LayerwiseValueProbes

        path = self.directory / "probes.safetensors"
        label = label or self.main
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise RewardscopeError(f"{path}: no probe for layer {missing[0]} (probed: {self.layers})")
        td_lambdas = json.loads(self._meta["td_lambda"])
        if label not in td_lambdas:
            raise RewardscopeError(f"{path}: no {label!r} probes (saved: {list(td_lambdas)})")
        per_probe = []
        with safe_open(path, framework="pt") as f:
            for layer in layers:
                prefix = f"{label}/layer_{layer:03d}/"
                per_probe.append({k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
        params = {**json.loads(self._meta["params"]), "td_lambda": td_lambdas[label], "device": device}
        return LayerwiseValueProbes.from_state_tensors(params, per_probe), label


def placement(bytes_per_layer: int, device: torch.device) -> tuple[int, torch.device]:
    """(layers per group, where their states live): the training device if a layer fits in half its free
    memory (the other half is for batches, activations and whoever else uses it), else CPU memory."""
    for where in dict.fromkeys([device, torch.device("cpu")]):
        budget = _free_memory(where) // 2
        if bytes_per_layer <= budget:
            return max(1, budget // max(bytes_per_layer, 1)), where
    raise RewardscopeError(
        f"one layer's states take {bytes_per_layer / 2**30:.1f} GiB, more than half the free memory: "
        "use probe.level=step with capture.positions=steps, or fewer rollouts"
    )


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def load_states(reader: CaptureReader, layers: list[int], rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """States [len(layers), len(rows), hidden] of capture rows `rows`, in the capture's dtype, on `device`."""
    dtype = getattr(torch, reader.metadata["dtype"])
    X = torch.empty(len(layers), len(rows), reader.hidden_size, dtype=dtype, device=device)
    with tqdm(total=len(layers) * len(rows), desc="load states", unit="state", leave=False, disable=None) as bar:
        for i, layer in enumerate(layers):
            for start in range(0, len(rows), LOAD_CHUNK):
                chunk = rows[start : start + LOAD_CHUNK]
                X[i, start : start + len(chunk)] = reader.load(layer, chunk).to(device, dtype)
                bar.update(len(chunk))
    return X
