"""Stage `probe`: value probes on every captured layer, the pruning sweep and the value neurons (method.md 2-3).

Reads run_dir/capture/ through CaptureReader only and writes run_dir/probe/ (docs/artifacts.md, docs/probes.md):
  results.json        per-layer held-out AUROC at s0, step ends and the last token, with 95% CIs over problems
                      and n, for the main probe (probe.td_lambda) and for TD(0) and Monte-Carlo side by side;
                      their paired difference; the pruning sweep (value dims vs random dims vs masked)
  value_neurons.json  per layer: the top sweep.value_neuron_fraction dims with rank and score
  probes.safetensors  every layer's probes (one per td_lambda) with their z-scoring statistics

Memory: layers go in groups. A group's states -- only the rows used: the training trajectories (train problems)
and the scored states of held-out problems, [layers, rows, hidden] in the capture's dtype -- sit on the
training device (model.device) if at least one layer fits in half its free memory, else in CPU memory with
each batch copied over; a group is as many layers as fit. All probes of a group train as one batched fit.

Resume: each finished layer is saved in probe/layers/; an interrupted stage continues with the missing layers
(results do not depend on the grouping). results.json is written last; once it exists the stage is a no-op.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rewardscope.capture.reader import CaptureReader
from rewardscope.config import Recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import atomic_path, read_json, write_json
from rewardscope.models import resolve_device
from rewardscope.probe.estimator import LayerwiseValueProbes
from rewardscope.probe.metrics import POSITIONS, HeldOut, ProblemBootstrap, evaluate, paired_difference
from rewardscope.probe.sweep import pruning_sweep, value_neurons
from rewardscope.probe.targets import read_index, split_problems, trajectories_from_index

LOAD_CHUNK = 16384  # rows per CaptureReader.load: bounds the float32 copy it returns


def lambda_label(td_lambda: float) -> str:
    return "TD(0)" if td_lambda == 0 else "Monte-Carlo" if td_lambda == 1 else f"TD({td_lambda:g})"


def run(recipe: Recipe, run_dir: Path) -> dict:
    out = Path(run_dir) / "probe"
    if (out / "results.json").exists():
        return read_json(out / "results.json")["summary"]
    cfg, sweep = recipe.probe, recipe.sweep
    if not 0 < sweep.value_neuron_fraction <= 1 or any(not 0 <= r < 1 for r in sweep.ratios):
        raise RewardscopeError("sweep: value_neuron_fraction must be in (0, 1] and every ratio in [0, 1)")
    reader = CaptureReader(Path(run_dir) / "capture")
    where = str(reader.capture_dir / "index.parquet")
    if cfg.level == "token" and reader.metadata["positions"] != "all":
        raise RewardscopeError(
            f"{reader.capture_dir}: probe.level 'token' needs every token's state, but the capture holds "
            "s0 and step ends only (capture.positions='steps'): set probe.level=step or capture.positions=all"
        )
    layers = _chosen(cfg.layers, reader.layers, "probe.layers", "captured")
    swept = _chosen(sweep.layers, layers, "sweep.layers", "probed")
    cols = read_index(reader.index, where)
    trajectories = trajectories_from_index(cols, cfg.level, where)
    test = split_problems(trajectories.problem_ids, cfg.test_fraction, cfg.seed)
    train = trajectories.subset(~test)
    held_out = HeldOut.from_index(cols, trajectories.rollout_ids[test])
    lambdas = list(dict.fromkeys([cfg.td_lambda, 0.0, 1.0]))  # the main probe, then TD(0) and Monte-Carlo

    # Only the rows that are used are loaded: training trajectories and the held-out scored states.
    rows = np.union1d(train.rows, held_out.rows)
    train_local = dataclasses.replace(train, rows=np.searchsorted(rows, train.rows))
    held_local = dataclasses.replace(held_out, rows=np.searchsorted(rows, held_out.rows))
    boot = ProblemBootstrap(len(held_out.problem_names), cfg.bootstrap, cfg.seed)
    device = resolve_device(recipe.model.device)
    parts = out / "layers"
    todo = [layer for layer in layers if not (parts / f"layer_{layer:03d}.json").exists()]
    dtype = getattr(torch, reader.metadata["dtype"])
    group_size, storage = placement(len(rows) * reader.hidden_size * dtype.itemsize, device)
    for start in tqdm(range(0, len(todo), group_size), desc="probe: layer groups", disable=not todo):
        group = todo[start : start + group_size]
        X = load_states(reader, group, rows, storage)
        _probe_group(X, group, swept, lambdas, train_local, held_local, boot, recipe, device, parts)
        del X
    return _finish(out, parts, layers, lambdas, reader, train, held_out, recipe)


def _chosen(wanted, available: list[int], key: str, what: str) -> list[int]:
    if wanted == "all":
        return list(available)
    if not wanted:
        raise RewardscopeError(f"{key}: empty list (use 'all' or name at least one layer)")
    missing = [layer for layer in wanted if layer not in available]
    if missing:
        raise RewardscopeError(f"{key}: layer {missing[0]} was not {what} ({what}: {available})")
    return sorted(set(wanted))


def placement(bytes_per_layer: int, device: torch.device) -> tuple[int, torch.device]:
    """(layers per group, where their states live): the training device if a layer fits in half its free
    memory (the other half is for batches, activations and whoever else uses it), else CPU memory."""
    for where in dict.fromkeys([device, torch.device("cpu")]):
        budget = _free_memory(where) // 2
        if bytes_per_layer <= budget:
            return max(1, budget // max(bytes_per_layer, 1)), where
    raise RewardscopeError(
        f"probe: one layer's states take {bytes_per_layer / 2**30:.1f} GiB, more than half the free memory: "
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
    with tqdm(total=len(layers) * len(rows), desc="probe: load states", unit="state", leave=False) as bar:
        for i, layer in enumerate(layers):
            for start in range(0, len(rows), LOAD_CHUNK):
                chunk = rows[start : start + LOAD_CHUNK]
                X[i, start : start + len(chunk)] = reader.load(layer, chunk).to(device, dtype)
                bar.update(len(chunk))
    return X


def _probe_group(X, group, swept, lambdas, train, held_out, boot, recipe, device, parts: Path) -> None:
    """Train, sweep and score the probes of one group of layers; save each layer's part."""
    cfg, sweep = recipe.probe, recipe.sweep
    span = f"layers {group[0]}-{group[-1]}"
    probes, tables, replicates = {}, {}, {}
    for td_lambda in lambdas:
        label = lambda_label(td_lambda)
        probes[label] = LayerwiseValueProbes.from_config(
            cfg, td_lambda=td_lambda, device=str(device), progress=f"{label} {span}"
        ).fit(X, train)
        values = probes[label].predict(X, held_out.rows).numpy()
        tables[label], replicates[label] = evaluate(values, held_out, boot)
    main = probes[lambda_label(cfg.td_lambda)]
    in_sweep = [i for i, layer in enumerate(group) if layer in swept]
    sweep_rows = []
    if in_sweep:
        sweep_rows = pruning_sweep(
            main.select(in_sweep), X, train, held_out, boot, [group[i] for i in in_sweep],
            sweep.ratios, sweep.random_draws, cfg.seed,
        )
    neurons = value_neurons(main.feature_scores_, sweep.value_neuron_fraction)
    for i, layer in enumerate(group):
        tensors = {f"{label}/{name}": t for label, p in probes.items() for name, t in p.state_tensors(i).items()}
        _save_safetensors(parts / f"layer_{layer:03d}.safetensors", tensors)
        write_json(parts / f"layer_{layer:03d}.json", {  # written last: marks the layer done
            "auroc": {label: t[i] for label, t in tables.items()},
            "td0_minus_monte_carlo": {
                pos: paired_difference(replicates["TD(0)"][pos][i], replicates["Monte-Carlo"][pos][i])
                for pos in POSITIONS
            },
            "sweep": sweep_rows[in_sweep.index(i)] if i in in_sweep else None,
            "value_neurons": neurons[i],
            "loss_curve": {label: p.loss_curve_ for label, p in probes.items()},
        })


def _save_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _finish(out: Path, parts: Path, layers, lambdas, reader, train, held_out, recipe: Recipe) -> dict:
    """Merge the layers' parts into the stage's three files (results.json last) and remove the parts."""
    cfg, sweep = recipe.probe, recipe.sweep
    main = lambda_label(cfg.td_lambda)
    per_layer = {layer: read_json(parts / f"layer_{layer:03d}.json") for layer in layers}
    tensors = {}
    for layer in layers:
        for key, t in load_file(parts / f"layer_{layer:03d}.safetensors").items():
            label, name = key.split("/")
            tensors[f"{label}/layer_{layer:03d}/{name}"] = t
    estimator = {k: v for k, v in LayerwiseValueProbes.from_config(cfg).get_params().items() if k != "progress"}
    _save_safetensors(out / "probes.safetensors", tensors, metadata={
        "main": main,
        "td_lambda": json.dumps({lambda_label(lam): lam for lam in lambdas}),
        "params": json.dumps(estimator),
        "layers": json.dumps(layers),
        "hidden_size": str(reader.hidden_size),
        "num_layers": str(reader.metadata["num_layers"]),
        "model": str(reader.metadata["model"]),
    })
    write_json(out / "value_neurons.json", {
        "model": reader.metadata["model"],
        "hidden_size": reader.hidden_size,
        "num_layers": reader.metadata["num_layers"],
        "fraction": sweep.value_neuron_fraction,
        "ranking": f"L1 norm of the first-layer weights of each input dim, {main} probe"
        + (" on z-scored inputs" if cfg.standardize else " on raw inputs"),
        "layers": {str(layer): r["value_neurons"] for layer, r in per_layer.items()},
    })
    results = {
        "capture": {k: reader.metadata.get(k) for k in ("model", "revision", "num_layers", "hidden_size",
                                                         "dtype", "positions")},
        "settings": {"probe": dataclasses.asdict(cfg), "sweep": dataclasses.asdict(sweep)},
        "main": main,
        "split": {
            "by": "problem_id",
            "train": {"problems": len(np.unique(train.problem_ids)), "rollouts": len(train)},
            "held_out": {"problems": len(held_out.problem_names), "rollouts": len(np.unique(held_out.rollouts))},
            "held_out_problems": held_out.problem_names.tolist(),
            "train_correct_rate": float(train.rewards.mean()),
        },
        "auroc": {lambda_label(lam): {str(l): r["auroc"][lambda_label(lam)] for l, r in per_layer.items()}
                  for lam in lambdas},
        "td0_minus_monte_carlo": {str(l): r["td0_minus_monte_carlo"] for l, r in per_layer.items()},
        "sweep": {str(l): r["sweep"] for l, r in per_layer.items() if r["sweep"] is not None},
        "loss_curves": {str(l): r["loss_curve"] for l, r in per_layer.items()},
    }
    results["summary"] = _summary(results, out)
    write_json(out / "results.json", results)
    shutil.rmtree(parts)
    return results["summary"]


def _summary(results: dict, out: Path) -> dict:
    """The headline: the best layer at each position (main probe) and its sweep at the highest ratio."""
    table = results["auroc"][results["main"]]
    best = {}
    for pos in POSITIONS:
        scored = [(r[pos]["auroc"], layer) for layer, r in table.items() if r[pos]["auroc"] is not None]
        if scored:
            auroc, layer = max(scored)
            ci = table[layer][pos]["ci95"]
            best[pos] = {"layer": int(layer), "auroc": round(auroc, 4), "ci95": ci and [round(v, 4) for v in ci]}
        else:
            best[pos] = {"layer": None, "auroc": None, "note": next(iter(table.values()))[pos].get("note")}
    summary = {"main": results["main"], "layers": len(table), "held_out": results["split"]["held_out"],
               "best_layer": best, "path": str(out)}
    layer = str(best["s0"]["layer"])
    if layer in results["sweep"]:
        top = max(results["sweep"][layer], key=lambda row: row["ratio"])
        summary["sweep_at_best_s0_layer"] = {
            "ratio": top["ratio"], "kept_dims": top["kept_dims"],
            "value_dims_auroc_s0": top["value_dims"]["s0"]["auroc"],
            "random_dims_auroc_s0": top.get("random_dims", {}).get("s0", {}).get("auroc"),
        }
    return summary


def load_probes(path: Path, layers: list[int], label: str | None = None, device: str = "cpu"):
    """The `label` probes (default: the main ones) of `layers` from a probes.safetensors; probe i reads
    layer i of the states it is given. Returns (probes, label)."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        label = label or meta["main"]
        saved = json.loads(meta["layers"])
        missing = [layer for layer in layers if layer not in saved]
        if missing:
            raise RewardscopeError(f"{path}: no probe for layer {missing[0]} (probed: {saved})")
        per_probe = []
        for layer in layers:
            prefix = f"{label}/layer_{layer:03d}/"
            per_probe.append({k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
    params = {**json.loads(meta["params"]), "td_lambda": json.loads(meta["td_lambda"])[label], "device": device}
    return LayerwiseValueProbes.from_state_tensors(params, per_probe), label
