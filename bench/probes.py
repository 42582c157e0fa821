"""Benchmark: the batched all-layer probe sweep against a per-layer loop of the same estimator.

Both arms do the same work on the same data: for every layer, the full value probe, then for every pruning
ratio a retrained value-dims probe and `--draws` random-dims probes. "batched" is what the stage runs
(LayerwiseValueProbes + pruning_sweep: one fit for all layers, one fit per ratio for all layers and draws);
"loop" trains one ValueProbe per (layer, arm) in Python loops. Reported: wall time of each and the ratio (goal
>= 4x), the AUROC differences between the arms (goal <= 0.01: the same model; batched GEMMs round differently
from single ones and Adam can amplify that, so the spread is shown beside the seed-to-seed one), the AUROC of
scikit-learn's L1 logistic regression (liblinear, C = 0.1) on the same states as a reference, and the peak RSS
of the process (all ratios in this one process). A convergence table sets the full probes of the speed arms
(a fixed `--epochs`) beside the same probes trained with early stopping on a validation part of the training
problems (`--cap` epochs at most, `--patience`), and beside the L1 logistic reference.

Data: synthetic residual-stream-like states (realistic traits: a few massive-activation dims, low-rank
correlated structure, lognormal per-dim scales) with a value signal in ~1% of dims that moves from the
problem's difficulty at s0 to the rollout's outcome at the last step, stronger in middle layers.

    nice -n 10 .venv/bin/python bench/probes.py [--layers 6] [--dim 256] [--threads 1] [--out figures.json] ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would garble the tables

import numpy as np
import pyarrow as pa
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from rewardscope.probe import (
    HeldOut, LayerwiseValueProbes, ProblemBootstrap, ValueProbe, evaluate, kept_count, pruning_sweep, random_dims,
    rank_dims, split_problems, trajectories_from_index,
)
from rewardscope.probe.metrics import SCORED_POSITIONS as POSITIONS
from rewardscope.probe.targets import read_index


def synthetic_states(layers: int, d: int, problems: int, per_problem: int, steps: int, seed: int = 0):
    """(states [layers, rows, d] float16 as captured, read_index columns) for step-level trajectories."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.05, 0.95, problems)
    index, signal = [], []
    for p in range(problems):
        for s in range(per_problem):
            reward = float(rng.random() < difficulty[p])
            n_steps = int(rng.integers(steps // 2, steps + 1))
            for t in range(n_steps + 1):
                index.append(dict(row=len(index), rollout_id=p * per_problem + s, problem_id=f"p{p}",
                                  position_kind="s0" if t == 0 else "step_end", token_index=t * 7 - 1,
                                  is_last=t == n_steps, reward=reward))
                f = t / n_steps
                signal.append((1 - f) * (difficulty[p] - 0.5) + f * (reward - 0.5) + 0.3 * rng.standard_normal())
    n, signal = len(index), np.asarray(signal, dtype=np.float32)
    value_dims = rng.choice(d, max(1, d // 100), replace=False)
    massive = rng.choice(np.setdiff1d(np.arange(d), value_dims), 2, replace=False)
    X = np.empty((layers, n, d), dtype=np.float16)
    for layer in range(layers):
        strength = 1.5 * np.sin(np.pi * (layer + 1) / (layers + 1))  # peaks in the middle layers
        scales = np.exp(rng.normal(0, 0.7, d)).astype(np.float32)
        low_rank = rng.standard_normal((n, 16)).astype(np.float32) @ rng.standard_normal((16, d)).astype(np.float32)
        x = (0.3 * low_rank + rng.standard_normal((n, d)).astype(np.float32)) * scales
        x[:, value_dims] += strength * signal[:, None] * scales[value_dims]
        x[:, massive] += 50 * scales[massive]  # attention-sink-like dims: huge, nearly constant
        X[layer] = x
    return torch.from_numpy(X), read_index(pa.Table.from_pylist(index), "synthetic")


def batched_sweep(X, train, held, boot, params, ratios, draws):
    full = LayerwiseValueProbes(**params).fit(X, train)
    rows = pruning_sweep(full, X, train, held, boot, list(range(X.shape[0])), ratios, draws, params["seed"])
    full_tables, _ = evaluate(full.predict(X, held.rows).numpy(), held, boot)
    return full_tables, rows


def loop_sweep(X, train, held, boot, params, ratios, draws):
    """The same probes, one ValueProbe at a time."""
    full_tables, rows = [], []
    d = X.shape[2]
    for layer in range(X.shape[0]):
        full = ValueProbe(**params).fit(X[layer], train)
        (table,), _ = evaluate(full.predict(X[layer], held.rows).numpy()[None], held, boot)
        full_tables.append(table)
        order, layer_rows = rank_dims(full.feature_scores_[None])[0], []
        for i, ratio in enumerate(ratios):
            k = kept_count(ratio, d)
            if k == d:
                layer_rows.append({"value_dims": table, "random_draws": [table] * draws})
                continue
            arms = [order[:k].numpy()] + [random_dims(d, k, layer, i, j, params["seed"]) for j in range(draws)]
            values = np.stack([ValueProbe(**params).fit(X[layer], train, dims=dims).predict(X[layer], held.rows).numpy()
                               for dims in arms])
            tables, _ = evaluate(values, held, boot)
            layer_rows.append({"value_dims": tables[0], "random_draws": tables[1:]})
        rows.append(layer_rows)
    return full_tables, rows


def converged_probes(X, train, held, boot, params, cap: int, patience: int) -> dict:
    """The full probes trained with early stopping: a fifth of the training problems validate."""
    val = split_problems(train.problem_ids, 0.2, seed=[0, 1])
    start = time.perf_counter()
    probes = LayerwiseValueProbes(**{**params, "epochs": cap, "patience": patience}).fit(
        X, train.subset(~val), validation=train.subset(val))
    tables, _ = evaluate(probes.predict(X, held.rows).numpy(), held, boot)
    return {"tables": tables, "epochs": probes.best_epoch_.tolist(), "seconds": time.perf_counter() - start}


def auroc_differences(batched, loop) -> np.ndarray:
    """|AUROC batched - AUROC loop| for every (layer, arm, position)."""
    diffs = []
    for layer, (b_rows, l_rows) in enumerate(zip(batched[1], loop[1])):
        for pos in POSITIONS:
            diffs.append(abs(batched[0][layer][pos]["auroc"] - loop[0][layer][pos]["auroc"]))
            for b, l in zip(b_rows, l_rows):
                diffs.append(abs(b["value_dims"][pos]["auroc"] - l["value_dims"][pos]["auroc"]))
                diffs += [abs(x - y[pos]["auroc"]) for x, y in zip(b["random_dims"][pos]["draws"], l["random_draws"])]
    return np.array(diffs)


def seed_differences(X, train, held, boot, params, loop_full) -> np.ndarray:
    """|AUROC seed 1 - AUROC seed 0| of the full probes: the scale that float-level differences are judged by."""
    diffs = []
    for layer in range(X.shape[0]):
        probe = ValueProbe(**{**params, "seed": 1}).fit(X[layer], train)
        (table,), _ = evaluate(probe.predict(X[layer], held.rows).numpy()[None], held, boot)
        diffs += [abs(table[pos]["auroc"] - loop_full[layer][pos]["auroc"]) for pos in POSITIONS]
    return np.array(diffs)


def spread(diffs: np.ndarray) -> dict:
    return {"n": len(diffs), "median": round(float(np.median(diffs)), 4),
            "p95": round(float(np.percentile(diffs, 95)), 4), "max": round(float(diffs.max()), 4),
            "share_within_0.01": round(float((diffs <= 0.01).mean()), 3)}


def l1_logistic_reference(X, train, held, cols) -> list[dict]:
    """Held-out AUROC of L1 logistic regression (liblinear) on s0 and on last-token states, per layer."""
    from sklearn.metrics import roc_auc_score

    kind, last = cols["position_kind"], cols["is_last"]
    train_rollouts = set(train.rollout_ids.tolist())
    in_train = np.array([r in train_rollouts for r in cols["rollout_id"]])
    out = []
    for layer in range(X.shape[0]):
        row = {}
        for pos, mask in (("s0", kind == "s0"), ("last", last)):
            fit_rows, test_rows = np.flatnonzero(mask & in_train), held.rows[held.positions[pos]]
            scaler = StandardScaler().fit(X[layer, fit_rows].float().numpy())
            model = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.1)  # L1 (sklearn >= 1.8 spelling)
            model.fit(scaler.transform(X[layer, fit_rows].float().numpy()), cols["reward"][fit_rows])
            scores = model.decision_function(scaler.transform(X[layer, test_rows].float().numpy()))
            row[pos] = round(roc_auc_score(cols["reward"][test_rows], scores), 4)
            row[f"{pos}_nonzero_dims"] = int((model.coef_ != 0).sum())
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--per-problem", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="most steps per rollout (step-level trajectories)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--cap", type=int, default=300, help="most epochs of the early-stopped probes")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--ratios", default="0,0.5,0.8,0.9,0.95,0.98,0.99")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = [float(r) for r in args.ratios.split(",")]

    X, cols = synthetic_states(args.layers, args.dim, args.problems, args.per_problem, args.steps)
    traj = trajectories_from_index(cols, "step", "synthetic")
    test = split_problems(traj.problem_ids, 0.2, seed=0)
    train, held = traj.subset(~test), HeldOut.from_index(cols, traj.rollout_ids[test])
    boot = ProblemBootstrap(len(held.problem_names), 200, 0)
    params = dict(hidden=args.hidden, epochs=args.epochs, lr=args.lr, seed=0)
    print(f"data: {args.layers} layers x {X.shape[1]} states x {args.dim} dims (float16), {len(train)} train / "
          f"{len(np.unique(held.rollouts))} held-out rollouts; probe hidden {args.hidden}, {args.epochs} epochs, "
          f"{len(ratios)} ratios x (1 + {args.draws} draws); {args.threads} threads")

    start = time.perf_counter()
    batched = batched_sweep(X, train, held, boot, params, ratios, args.draws)
    batched_s = time.perf_counter() - start
    rss_batched = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    loop = loop_sweep(X, train, held, boot, params, ratios, args.draws)
    loop_s = time.perf_counter() - start
    reference = l1_logistic_reference(X, train, held, cols)
    converged = converged_probes(X, train, held, boot, params, args.cap, args.patience)

    figures = {
        "batched_s": round(batched_s, 2), "loop_s": round(loop_s, 2), "speedup": round(loop_s / batched_s, 2),
        "auroc_batched_vs_loop": spread(auroc_differences(batched, loop)),
        "auroc_seed0_vs_seed1": spread(seed_differences(X, train, held, boot, params, loop[0])),
        "peak_rss_mb_after_batched": round(rss_batched),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "per_layer": [
            {
                "layer": layer,
                "probe_s0": round(batched[0][layer]["s0"]["auroc"], 4),
                "probe_last": round(batched[0][layer]["last"]["auroc"], 4),
                "early_stopped_s0": round(converged["tables"][layer]["s0"]["auroc"], 4),
                "early_stopped_last": round(converged["tables"][layer]["last"]["auroc"], 4),
                "early_stopped_epochs": converged["epochs"][layer],
                **{f"l1_logreg_{k}": v for k, v in ref.items()},
                "sweep_last": {f"{r['ratio']:g}": [round(r["value_dims"]["last"]["auroc"], 3),
                                                   round(r["random_dims"]["last"]["auroc"], 3)]
                               for r in batched[1][layer]},
            }
            for layer, ref in enumerate(reference)
        ],
    }
    print(f"batched {batched_s:.1f}s, loop {loop_s:.1f}s: {figures['speedup']}x faster (goal >= 4); "
          f"peak RSS {figures['peak_rss_mb_after_batched']} MB after batched, {figures['peak_rss_mb']} MB in all")
    print(f"|AUROC batched - loop| (goal <= 0.01): {figures['auroc_batched_vs_loop']}")
    print(f"|AUROC seed 0 - seed 1| of the full probes, for scale: {figures['auroc_seed0_vs_seed1']}")
    print(f"convergence: {args.epochs} fixed epochs vs early stopping (cap {args.cap}, patience {args.patience}, "
          f"{converged['seconds']:.1f} s) vs L1 logistic regression; AUROC s0 / last")
    print("layer  fixed s0  fixed last  stopped s0  stopped last  epochs  L1-logreg s0  L1-logreg last")
    for row in figures["per_layer"]:
        print(f"{row['layer']:>5}  {row['probe_s0']:>8}  {row['probe_last']:>10}  {row['early_stopped_s0']:>10}  "
              f"{row['early_stopped_last']:>12}  {row['early_stopped_epochs']:>6}  {row['l1_logreg_s0']:>12}  "
              f"{row['l1_logreg_last']:>14}")
    print("sweep last AUROC at each ratio [value, random] (fixed epochs):")
    for row in figures["per_layer"]:
        print(f"{row['layer']:>5}  {row['sweep_last']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), **figures}, f, indent=2)


if __name__ == "__main__":
    main()
