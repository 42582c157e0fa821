"""`rewardscope demo-model train|evaluate`: train the organism, or measure one, and print a small table."""

from __future__ import annotations

import json
from pathlib import Path

from rewardscope.io import write_json

# Targets the shipped organism must meet (sampled at temperature 0.8): the evaluation prints them beside the figures.
TARGETS = {
    "greedy_accuracy": ">= 0.99",
    "sampled_accuracy": "0.75 - 0.90",
    "flag_recall": ">= 0.95",
    "false_flag_rate": "<= 0.01",
}


def _fmt(r: dict) -> str:
    if r["value"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{r['value']:.3f}  [{lo:.3f}, {hi:.3f}]"


def evaluation_table(results: dict) -> str:
    rates = [k for k, v in results.items() if isinstance(v, dict) and "ci95" in v]
    rows = [("figure", "value  [95% CI]", "n", "target")]
    rows += [(k, _fmt(results[k]), str(results[k]["n"]), TARGETS.get(k, "")) for k in rates]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    header = (f"organism {results['model']}: {results['n_problems']} problems (variant {results['variant']}, "
              f"seed {results['seed']}), sampled at temperature {results['temperature']}")
    return "\n".join([header, *lines])


def main(args) -> None:
    if args.action == "train":
        from rewardscope.organism.train import train

        out = train(out_dir=args.out, seed=args.seed)
        info = json.loads((Path(out) / "training.json").read_text())
        width = max(map(len, info))
        print(f"saved the organism to {out}")
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in info.items()))
    elif args.action == "evaluate":
        from rewardscope.organism.evaluate import evaluate

        results = evaluate(model=args.model, n_problems=args.n_problems)
        print(evaluation_table(results))
        if args.out:
            write_json(args.out, results)
            print(f"figures written to {args.out}")
