"""`rewardscope transfer RUN_A RUN_B`: do two runs find the same value neurons, and does A's probe work on B?

Both runs need a finished probe stage, from models of the same shape (hidden size and layer count; e.g. two
datasets on one model, or two fine-tunes of one base). For every layer probed in both:
  - IoU of the top (1 - ratio) dims of each run's ranking, for each of A's sweep ratios, and of the saved
    value-neuron sets, each with the random expectation and a hypergeometric p-value;
  - probe transfer: A's main probe scored on B's states, AUROC at s0, step ends and the last token on B's
    held-out problems (beside B's own probe on the same states, with the paired difference) and on all of B's
    problems. A's z-scoring statistics go with its probe. Problems A trained on (its train and validation
    parts, matched by problem id) are never scored: two runs of one dataset share problems, and A's probe has
    seen those. How many were dropped is reported.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rewardscope.errors import RewardscopeError
from rewardscope.io import write_json
from rewardscope.models import resolve_device
from rewardscope.probe.metrics import SCORED_POSITIONS as POSITIONS, HeldOut, ProblemBootstrap, evaluate, paired_difference
from rewardscope.probe.sweep import kept_count, rank_dims
from rewardscope.probe.targets import read_index
from rewardscope.readers import CaptureReader, ProbeReader, load_states, placement
from rewardscope.transfer.overlap import overlap


def transfer_runs(run_a, run_b, out=None) -> dict:
    """Compare two finished runs; writes the full tables to `out` (default RUN_A/transfer/<RUN_B>.json) and
    returns a summary (means over layers, the path)."""
    run_a, run_b = Path(run_a), Path(run_b)
    a, b = (ProbeReader(run / "probe") for run in (run_a, run_b))
    shape_a, shape_b = (a.hidden_size, a.num_layers), (b.hidden_size, b.num_layers)
    if shape_a != shape_b:
        raise RewardscopeError(
            f"{run_a} and {run_b} come from models of different shapes (hidden size, layers): {shape_a} vs "
            f"{shape_b}; value neurons and probes transfer only between models of the same shape"
        )
    layers = sorted(set(a.layers) & set(b.layers))
    if not layers:
        raise RewardscopeError(f"{run_a} probed layers {a.layers}, {run_b} layers {b.layers}: none in common")
    n = a.hidden_size
    ratios = a.results["settings"]["sweep"]["ratios"]
    iou = {}
    for layer in layers:  # one layer's weights in memory at a time
        order_a, order_b = (rank_dims(run.probes([layer])[0].feature_scores_)[0] for run in (a, b))
        rows = [{"ratio": r, **overlap(order_a[: kept_count(r, n)], order_b[: kept_count(r, n)], n)} for r in ratios]
        neurons = [[d["dim"] for d in run.value_neurons[str(layer)]] for run in (a, b)]
        iou[str(layer)] = {"by_ratio": rows, "value_neurons": overlap(*neurons, n)}
    result = {
        "run_a": str(run_a), "run_b": str(run_b), "models": [a.model, b.model], "layers": layers,
        "iou": iou, "probe_transfer": _probe_transfer(a, b, layers, run_b),
    }
    seeds = [run.results["settings"]["probe"]["seed"] for run in (a, b)]
    if seeds[0] == seeds[1]:
        # Both rankings start from the same initial W1; an undertrained probe's L1 column norms still carry
        # it, so the IoU can be far above chance with no shared signal (seen on the demo organism).
        result["warning"] = (f"both runs trained their probes with probe.seed={seeds[0]}: dims can overlap through "
                             "the shared initialisation alone; re-run one with another probe.seed to control")
        warnings.warn(result["warning"], stacklevel=2)
    result["summary"] = {**_summary(result, ratios), **({"warning": result["warning"]} if "warning" in result else {})}
    path = Path(out) if out else run_a / "transfer" / f"{run_b.name}.json"
    write_json(path, result)
    return {**result["summary"], "path": str(path)}


def _probe_transfer(a: ProbeReader, b: ProbeReader, layers: list[int], run_b: Path) -> dict:
    """A's main probe and B's own on B's captured states, layer by layer (in groups that fit in memory), on the
    problems A never trained on."""
    reader = CaptureReader(run_b / "capture")
    where = str(reader.capture_dir / "index.parquet")
    cols = read_index(reader.index, where)
    problem = cols["problem_id"].astype(str)
    unseen = ~np.isin(problem, a.split["train"] + a.split["validation"])
    held = np.isin(problem, b.split["held_out"])
    settings = b.results["settings"]["probe"]
    boot_seed, n_boot = settings.get("split_seed", settings["seed"]), settings["bootstrap"]
    held_outs, boots, dropped = {}, {}, {}
    for name, part in (("b_held_out", held), ("b_all", np.ones_like(held))):
        dropped[name] = {"problems_dropped": len(np.unique(problem[part & ~unseen])),
                         "problems_scored": len(np.unique(problem[part & unseen]))}
        if dropped[name]["problems_scored"]:
            held_outs[name] = HeldOut.from_index(cols, np.unique(cols["rollout_id"][part & unseen]))
            boots[name] = ProblemBootstrap(len(held_outs[name].problem_names), n_boot, boot_seed)
    out = {"problems": {**dropped, "why": "problems A trained on (train + validation) are not scored"},
           "layers": {}}
    if not held_outs:
        out["note"] = "every problem of B was among A's training problems: nothing left to score"
        return out
    rows = np.unique(np.concatenate([h.rows for h in held_outs.values()]))
    local = {k: np.searchsorted(rows, h.rows) for k, h in held_outs.items()}
    device = resolve_device("auto")
    itemsize = getattr(torch, reader.metadata["dtype"]).itemsize
    group_size, storage = placement(len(rows) * reader.hidden_size * itemsize, device)
    for start in tqdm(range(0, len(layers), group_size), desc="transfer: layer groups", disable=None):
        group = layers[start : start + group_size]
        X = load_states(reader, group, rows, storage)
        probe_a, _ = a.probes(group, device=str(device))
        probe_b, _ = b.probes(group, device=str(device))

        def score(probe, name, states=X):
            return evaluate(probe.predict(states, local[name]).numpy(), held_outs[name], boots[name])

        entries = {str(layer): {} for layer in group}
        if "b_held_out" in held_outs:
            (tables_a, reps_a), (tables_b, reps_b) = score(probe_a, "b_held_out"), score(probe_b, "b_held_out")
            for i, layer in enumerate(group):
                entries[str(layer)].update(
                    b_held_out=tables_a[i], b_own_probe=tables_b[i],
                    a_minus_b_own={pos: paired_difference(reps_a[pos][i], reps_b[pos][i]) for pos in POSITIONS})
        if "b_all" in held_outs:
            tables_all, _ = score(probe_a, "b_all")
            for i, layer in enumerate(group):
                entries[str(layer)]["b_all"] = tables_all[i]
        out["layers"].update(entries)
        del X
    return out


def _summary(result: dict, ratios: list[float]) -> dict:
    """Means over layers: IoU (and both random baselines) per ratio; transfer AUROC per position."""
    by_ratio = {}
    for j, r in enumerate(ratios):
        rows = [layer["by_ratio"][j] for layer in result["iou"].values()]
        by_ratio[f"{r:g}"] = {"mean_iou": _mean(x["iou"] for x in rows),
                              "mean_random_iou_expected": _mean(x["random_iou_expected"] for x in rows),
                              "mean_random_iou_ratio_of_expectations":
                                  _mean(x["random_iou_ratio_of_expectations"] for x in rows)}
    transfer = {}
    entries = list(result["probe_transfer"]["layers"].values())
    for pos in POSITIONS:
        transfer[pos] = {"a_probe_on_b_held_out": _mean(e["b_held_out"][pos]["auroc"] for e in entries
                                                        if "b_held_out" in e),
                         "b_own_probe": _mean(e["b_own_probe"][pos]["auroc"] for e in entries if "b_own_probe" in e)}
    return {"layers": len(result["layers"]), "iou_by_ratio_mean_over_layers": by_ratio,
            "auroc_mean_over_layers": transfer, "problems": result["probe_transfer"]["problems"]}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None
