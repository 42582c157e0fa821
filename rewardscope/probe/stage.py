"""Stage `probe`: value probes on every captured layer, the pruning sweep and the value neurons (method.md 2-3).

Reads a capture artifact through rewardscope.readers only and writes its own artifact (docs/artifacts.md,
docs/probes.md):
  results.json        per-layer held-out AUROC at s0, step ends and the last token, with 95% CIs over problems,
                      n, a p-value and whether it survives a Holm correction over the table; for the main probe
                      (probe.td_lambda) and for TD(0) and Monte-Carlo side by side, their paired difference; the
                      pruning sweep (value dims vs random dims vs masked); epochs and losses of every probe
  split.json          the problems of each part: train (fit), validation, held_out
  value_neurons.json  per layer: the top sweep.value_neuron_fraction dims with rank and score
  probes.safetensors  every layer's probes (one per td_lambda) with their z-scoring statistics

Split (probe.split_seed only, so a new probe.seed keeps the same held-out problems): test_fraction of the
problems are held out; validation_fraction of the rest are set apart for early stopping and for choosing the
headline layer; the probes fit on the remaining training problems. Nothing reported on the held-out problems
was chosen on them.

Memory: layers go in groups. A group's states -- only the rows used: the training and validation trajectories
and the scored states of validation and held-out problems, [layers, rows, hidden] in the capture's dtype -- sit
on the training device (model.device) if at least one layer fits in half its free memory, else in CPU memory
with each batch copied over; a group is as many layers as fit. All probes of a group train as one batched fit.

Resume: the groups are fixed on the first run (layers/plan.json) and each finished layer is saved in
layers/; an interrupted stage redoes the groups with a missing layer, as they were, so its results are
bit-identical to an uninterrupted run's. results.json is written last; once it exists the stage is a no-op.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from rewardscope.config import Recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import read_json, write_json, write_safetensors
from rewardscope.models import resolve_device
from rewardscope.probe.estimator import LayerwiseValueProbes
from rewardscope.probe.metrics import (
    SCORED_POSITIONS as POSITIONS, HeldOut, ProblemBootstrap, evaluate, mark_holm, paired_difference, point_aurocs,
)
from rewardscope.probe.sweep import pruning_sweep, value_neurons
from rewardscope.probe.targets import Trajectories, read_index, split_problems, trajectories_from_index
from rewardscope.readers import CaptureReader, load_states, placement


def lambda_label(td_lambda: float) -> str:
    return "TD(0)" if td_lambda == 0 else "Monte-Carlo" if td_lambda == 1 else f"TD({td_lambda:g})"


@dataclass(frozen=True)
class Split:
    """The trajectories and scored states of each part, rows local to the loaded states."""

    fit: Trajectories  # the probes train on these
    validation: Trajectories  # early stopping (all their states)
    validation_scored: HeldOut  # choosing the headline layer (their s0, step-end and last states)
    held_out: HeldOut  # everything reported


def split_run(trajectories: Trajectories, cols: dict, cfg) -> tuple[Split, dict[str, list[str]], np.ndarray]:
    """(the split with rows of the capture, the problem ids of each part, the capture rows it uses)."""
    test = split_problems(trajectories.problem_ids, cfg.test_fraction, cfg.split_seed)
    train = trajectories.subset(~test)
    validation = split_problems(train.problem_ids, cfg.validation_fraction, [cfg.split_seed, 1],
                                key="probe.validation_fraction")
    split = Split(
        fit=train.subset(~validation),
        validation=train.subset(validation),
        validation_scored=HeldOut.from_index(cols, train.rollout_ids[validation]),
        held_out=HeldOut.from_index(cols, trajectories.rollout_ids[test]),
    )
    problems = {"train": np.unique(split.fit.problem_ids).tolist(),
                "validation": np.unique(split.validation.problem_ids).tolist(),
                "held_out": split.held_out.problem_names.tolist()}
    rows = np.unique(np.concatenate([split.fit.rows, split.validation.rows, split.validation_scored.rows,
                                     split.held_out.rows]))
    local = Split(**{f.name: dataclasses.replace(part := getattr(split, f.name), rows=np.searchsorted(rows, part.rows))
                     for f in dataclasses.fields(split)})
    return local, problems, rows


def check_settings(cfg, sweep) -> None:
    """Stage-level options (the estimator checks its own hyper-parameters when it fits)."""
    checks = (
        ("sweep.value_neuron_fraction", 0 < sweep.value_neuron_fraction <= 1, "in (0, 1]"),
        ("sweep.ratios", bool(sweep.ratios) and all(0 <= r < 1 for r in sweep.ratios), "a list of values in [0, 1)"),
        ("sweep.random_draws", sweep.random_draws >= 0, ">= 0"),
        ("probe.repeats", cfg.repeats >= 1, ">= 1"),
        ("probe.bootstrap", cfg.bootstrap >= 1, ">= 1"),
    )
    for key, ok, expected in checks:
        if not ok:
            section, name = key.split(".")
            raise RewardscopeError(f"{key}: {getattr(cfg if section == 'probe' else sweep, name)!r} is not {expected}")
    LayerwiseValueProbes.from_config(cfg)._check_params()  # fail before any state is loaded


def run(ctx) -> dict:
    """The pipeline stage (rewardscope.stages): the capture artifact -> this probe artifact."""
    return probe(ctx.recipe, ctx.inputs["capture"], ctx.out)


def probe(recipe: Recipe, capture_dir: Path, out: Path) -> dict:
    """Probe the capture in `capture_dir` into `out` (the files above); returns the summary. Resumes an
    interrupted stage; a finished one (results.json) returns its summary at once."""
    out = Path(out)
    if (out / "results.json").exists():
        return read_json(out / "results.json")["summary"]
    cfg, sweep = recipe.probe, recipe.sweep
    check_settings(cfg, sweep)
    reader = CaptureReader(capture_dir)
    where = str(reader.capture_dir / "index.parquet")
    if cfg.level == "token" and reader.metadata["positions"] != "all":
        raise RewardscopeError(
            f"{reader.capture_dir}: probe.level 'token' needs every token's state, but the capture holds "
            "s0 and step ends only (capture.positions='steps'): set probe.level=step or capture.positions=all"
        )
    layers = _chosen(cfg.layers, reader.layers, "probe.layers", "captured")
    swept = _chosen(sweep.layers, layers, "sweep.layers", "probed")
    cols = read_index(reader.index, where)
    split, problems, rows = split_run(trajectories_from_index(cols, cfg.level, where), cols, cfg)
    lambdas = list(dict.fromkeys([cfg.td_lambda, 0.0, 1.0]))  # the main probe, then TD(0) and Monte-Carlo
    boot = ProblemBootstrap(len(split.held_out.problem_names), cfg.bootstrap, cfg.split_seed)
    device = resolve_device(recipe.model.device)
    parts = out / "layers"
    dtype = getattr(torch, reader.metadata["dtype"])
    group_size, storage = placement(len(rows) * reader.hidden_size * dtype.itemsize, device)
    groups = _groups(parts / "plan.json", layers, group_size)
    todo = [g for g in groups if not all((parts / f"layer_{layer:03d}.json").exists() for layer in g)]
    for group in tqdm(todo, desc="probe: layer groups", disable=None if todo else True):
        X = load_states(reader, group, rows, storage)
        _probe_group(X, group, swept, lambdas, split, boot, recipe, device, parts)
        del X
    return _finish(out, parts, layers, lambdas, reader, split, problems, recipe)


def _groups(plan: Path, layers: list[int], group_size: int) -> list[list[int]]:
    """The layer groups of this stage: those of its first run, if it was interrupted (a batched fit rounds a
    little differently with other companions, so a resumed group must be the same group)."""
    if plan.exists():
        groups = read_json(plan)["groups"]
        if sorted(layer for g in groups for layer in g) != layers:
            raise RewardscopeError(f"{plan}: groups {groups} do not cover the probed layers {layers}: delete "
                                   f"{plan.parent} to start the stage again")
        return groups
    groups = [layers[i : i + group_size] for i in range(0, len(layers), group_size)]
    write_json(plan, {"groups": groups})
    return groups


def _chosen(wanted, available: list[int], key: str, what: str) -> list[int]:
    if wanted == "all":
        return list(available)
    if not wanted:
        raise RewardscopeError(f"{key}: empty list (use 'all' or name at least one layer)")
    missing = [layer for layer in wanted if layer not in available]
    if missing:
        raise RewardscopeError(f"{key}: layer {missing[0]} was not {what} ({what}: {available})")
    return sorted(set(wanted))


def _probe_group(X, group, swept, lambdas, split: Split, boot, recipe, device, parts: Path) -> None:
    """Train, sweep and score the probes of one group of layers; save each layer's part."""
    cfg, sweep = recipe.probe, recipe.sweep
    span = f"layers {group[0]}-{group[-1]}"
    held_out = split.held_out
    probes, tables, replicates, chosen_by = {}, {}, {}, {}
    for td_lambda in lambdas:
        label = lambda_label(td_lambda)

        def fit(seed: int) -> LayerwiseValueProbes:
            return LayerwiseValueProbes.from_config(
                cfg, td_lambda=td_lambda, seed=seed, device=str(device), progress=f"{label} {span} seed {seed}"
            ).fit(X, split.fit, validation=split.validation)

        probes[label] = fit(cfg.seed)
        values = probes[label].predict(X, held_out.rows).numpy()
        tables[label], replicates[label] = evaluate(values, held_out, boot)
        chosen_by[label] = point_aurocs(probes[label].predict(X, split.validation_scored.rows).numpy(),
                                        split.validation_scored)
        if cfg.repeats > 1:  # the probe's own variance: other initial weights and batch orders, same split
            seeds = [cfg.seed + r for r in range(cfg.repeats)]
            again = [point_aurocs(fit(seed).predict(X, held_out.rows).numpy(), held_out) for seed in seeds[1:]]
            for i, table in enumerate(tables[label]):
                for pos in POSITIONS:
                    table[pos]["repeats"] = _spread(seeds, [table[pos]["auroc"], *(a[pos][i] for a in again)])
    main = probes[lambda_label(cfg.td_lambda)]
    in_sweep = [i for i, layer in enumerate(group) if layer in swept]
    sweep_rows = []
    if in_sweep:
        sweep_rows = pruning_sweep(
            main.select(in_sweep), X, split.fit, held_out, boot, [group[i] for i in in_sweep],
            sweep.ratios, sweep.random_draws, cfg.seed, validation=split.validation,
        )
    neurons = value_neurons(main.feature_scores_, sweep.value_neuron_fraction)
    for i, layer in enumerate(group):
        tensors = {f"{label}/{name}": t for label, p in probes.items() for name, t in p.state_tensors(i).items()}
        write_safetensors(parts / f"layer_{layer:03d}.safetensors", tensors)
        write_json(parts / f"layer_{layer:03d}.json", {  # written last: marks the layer done
            "auroc": {label: t[i] for label, t in tables.items()},
            "validation_auroc": {label: {pos: v[pos][i] for pos in POSITIONS} for label, v in chosen_by.items()},
            "td0_minus_monte_carlo": {
                pos: paired_difference(replicates["TD(0)"][pos][i], replicates["Monte-Carlo"][pos][i])
                for pos in POSITIONS
            },
            "training": {label: _training(p, i) for label, p in probes.items()},
            "sweep": sweep_rows[in_sweep.index(i)] if i in in_sweep else None,
            "value_neurons": neurons[i],
            "loss_curve": {label: {"train": p.loss_curve_[i], "validation": p.validation_curve_[i]}
                           for label, p in probes.items()},
        })


def _spread(seeds: list[int], aurocs: list[float | None]) -> dict:
    defined = [a for a in aurocs if a is not None]
    out = {"seeds": seeds, "auroc": aurocs}
    if len(defined) > 1:
        out.update(sd=float(np.std(defined, ddof=1)), range=[min(defined), max(defined)])
    return out


def _training(probe: LayerwiseValueProbes, i: int) -> dict:
    """How long probe i trained and its losses at the kept epoch (training objective; validation reward MSE)."""
    best = int(probe.best_epoch_[i])
    train, validation = probe.loss_curve_[i], probe.validation_curve_[i]
    return {"epochs_run": probe.n_epochs_, "best_epoch": best, "epochs_cap": probe.epochs,
            "early_stopping": probe.patience is not None,
            "train_loss": train[best - 1] if best else None,
            "validation_loss": validation[best - 1] if best and validation else None}


def _finish(out: Path, parts: Path, layers, lambdas, reader, split: Split, problems: dict, recipe: Recipe) -> dict:
    """Merge the layers' parts into the stage's files (results.json last) and remove the parts."""
    cfg, sweep = recipe.probe, recipe.sweep
    main = lambda_label(cfg.td_lambda)
    per_layer = {layer: read_json(parts / f"layer_{layer:03d}.json") for layer in layers}
    tensors = {}
    for layer in layers:
        for key, t in load_file(parts / f"layer_{layer:03d}.safetensors").items():
            label, name = key.split("/")
            tensors[f"{label}/layer_{layer:03d}/{name}"] = t
    estimator = {k: v for k, v in LayerwiseValueProbes.from_config(cfg).get_params().items() if k != "progress"}
    write_safetensors(out / "probes.safetensors", tensors, metadata={
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
    write_json(out / "split.json", {"by": "problem_id", "split_seed": cfg.split_seed,
                                    "test_fraction": cfg.test_fraction,
                                    "validation_fraction": cfg.validation_fraction, **problems})
    auroc = {lambda_label(lam): {str(l): r["auroc"][lambda_label(lam)] for l, r in per_layer.items()}
             for lam in lambdas}
    correction = {label: mark_holm([cells[pos] for cells in table.values() for pos in POSITIONS])
                  for label, table in auroc.items()}
    fit, validation, held_out = split.fit, split.validation, split.held_out
    results = {
        "capture": {k: reader.metadata.get(k) for k in ("model", "revision", "num_layers", "hidden_size",
                                                         "dtype", "positions")},
        "settings": {"probe": dataclasses.asdict(cfg), "sweep": dataclasses.asdict(sweep)},
        "main": main,
        "split": {
            "by": "problem_id",
            "split_seed": cfg.split_seed,
            "train": {"problems": len(problems["train"]), "rollouts": len(fit)},
            "validation": {"problems": len(problems["validation"]), "rollouts": len(validation)},
            "held_out": {"problems": len(held_out.problem_names), "rollouts": len(np.unique(held_out.rollouts))},
            "held_out_problems": problems["held_out"],
            "train_correct_rate": float(fit.rewards.mean()),
        },
        "auroc": auroc,
        "multiple_comparisons": correction,
        "validation_auroc": {lambda_label(lam): {str(l): r["validation_auroc"][lambda_label(lam)]
                                                 for l, r in per_layer.items()} for lam in lambdas},
        "td0_minus_monte_carlo": {str(l): r["td0_minus_monte_carlo"] for l, r in per_layer.items()},
        "training": {str(l): r["training"] for l, r in per_layer.items()},
        "sweep": {str(l): r["sweep"] for l, r in per_layer.items() if r["sweep"] is not None},
        "loss_curves": {str(l): r["loss_curve"] for l, r in per_layer.items()},
    }
    results["summary"] = _summary(results, out)
    write_json(out / "results.json", results)
    shutil.rmtree(parts)
    return results["summary"]


SELECTED_BY = "the highest validation AUROC of the main probe (validation problems are training problems)"


def _summary(results: dict, out: Path) -> dict:
    """The headline: at each position, the layer chosen on the validation problems, its held-out AUROC, and
    the sweep at that layer's highest ratio."""
    main = results["main"]
    table, chosen_on = results["auroc"][main], results["validation_auroc"][main]
    chosen = {}
    for pos in POSITIONS:
        scored = [(v[pos], -int(layer)) for layer, v in chosen_on.items() if v[pos] is not None]
        if not scored:
            chosen[pos] = {"layer": None, "auroc": None,
                           "note": "no validation AUROC at this position (one class only, or no states)"}
            continue
        validation_auroc, layer = max(scored)  # ties: the lower layer
        cell = table[str(-layer)]
        chosen[pos] = {"layer": -layer, "validation_auroc": round(validation_auroc, 4),
                       **{k: cell[pos].get(k) for k in ("auroc", "ci95", "p_value", "holm_significant",
                                                        "n_problems", "n_rollouts", "note")}}
        sweep = results["sweep"].get(str(-layer))
        if sweep:
            top = max(sweep, key=lambda row: row["ratio"])
            chosen[pos]["sweep_at_top_ratio"] = {
                "ratio": top["ratio"], "kept_dims": top["kept_dims"],
                "value_dims_auroc": top["value_dims"][pos]["auroc"],
                "random_dims_auroc": top.get("random_dims", {}).get(pos, {}).get("auroc"),
                "value_minus_random": top.get("value_minus_random", {}).get(pos),
            }
    split = results["split"]
    return {"main": main, "layers": len(table), "held_out": split["held_out"], "validation": split["validation"],
            "chosen_layer": chosen, "chosen_by": SELECTED_BY,
            "significant_cells": {label: c["significant"] for label, c in results["multiple_comparisons"].items()},
            "path": str(out)}
