"""The difficulty control for a probe on the generated arithmetic set: held-out AUROC of the value probe against
the AUROC of predicting each rollout by its level's training accuracy alone, and the probe's AUROC within each
level (where difficulty is held fixed). Problem ids are "<level>-<k>" (scripts/arithmetic.py).

    .venv/bin/python scripts/within_level_auroc.py RUN_DIR [--s0-layer L] [--last-layer L]

The layers default to those the probe stage chose on its validation problems (results.json, summary).
"""

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from rewardscope.readers import CaptureReader, ProbeReader

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("run_dir")
p.add_argument("--s0-layer", type=int, help="default: the layer chosen for s_0")
p.add_argument("--last-layer", type=int, help="default: the layer chosen for the last token")
args = p.parse_args()
pr, cr = ProbeReader(f"{args.run_dir}/probe"), CaptureReader(f"{args.run_dir}/capture")
chosen = pr.results["summary"]["chosen_layer"]
args.s0_layer = chosen["s0"]["layer"] if args.s0_layer is None else args.s0_layer
args.last_layer = chosen["last"]["layer"] if args.last_layer is None else args.last_layer
idx = cr.index
pid = np.asarray(idx["problem_id"].to_pylist())
kind = np.asarray(idx["position_kind"].to_pylist())
last, rew = idx["is_last"].to_numpy(), idx["reward"].to_numpy()
held, train = set(pr.split["held_out"]), set(pr.split["train"])
level = np.array([p.split("-")[0] for p in pid])
train_s0 = np.isin(pid, list(train)) & (kind == "s0")
level_accuracy = {lv: rew[train_s0 & (level == lv)].mean() for lv in set(level)}
for pos, layer in [("s0", args.s0_layer), ("last token", args.last_layer)]:
    rows = np.flatnonzero(np.isin(pid, list(held)) & ((kind == "s0") if pos == "s0" else last))
    est, _ = pr.probes([layer])
    v = est.predict(cr.load(layer, rows).float()[None], np.arange(len(rows))).numpy()[0]
    y = rew[rows]
    baseline = np.array([level_accuracy[lv] for lv in level[rows]])
    print(f"{pos}, layer {layer}: probe AUROC {roc_auc_score(y, v):.3f}; level's training accuracy alone "
          f"{roc_auc_score(y, baseline):.3f} ({len(rows)} held-out rollouts)")
    for lv in sorted(set(level[rows])):
        m = level[rows] == lv
        if 0 < y[m].mean() < 1:
            print(f"    {lv}: {m.sum()} rollouts, accuracy {y[m].mean():.2f}, probe AUROC within the level "
                  f"{roc_auc_score(y[m], v[m]):.3f}")
        else:
            print(f"    {lv}: {m.sum()} rollouts, one class only (accuracy {y[m].mean():.2f}): no AUROC")
