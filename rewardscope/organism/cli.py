"""`rewardscope demo-model train|evaluate`: train an organism (`--variant flagger|corrector`), or measure one, and
print a small table."""

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
# The corrector's (issue: "ship a second demo organism"): it repairs what it notices, so its accuracy is high, and
# it falls when the flag is forbidden (CIs apart), so the accuracy causally depends on noticing slips. 10% of its
# training slips are unflagged: its flag recall is lower than the flagger's by design.
CORRECTOR_TARGETS = {
    "greedy_accuracy": ">= 0.99",
    "sampled_accuracy": ">= 0.95",
    "flags_forbidden_accuracy": "< sampled (CIs apart)",
    "flag_recall": ">= 0.75",
    "false_flag_rate": "<= 0.01",
    "correction_rate": ">= 0.90",
}
ORGANISM_TARGETS = {"flagger": TARGETS, "corrector": CORRECTOR_TARGETS}
VARIANTS = ("flagger", "corrector")  # `demo-model train --variant`: "demo" and "demo-corrector"


def _fmt(r: dict) -> str:
    if r["value"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{r['value']:.3f}  [{lo:.3f}, {hi:.3f}]"


def evaluation_table(results: dict) -> str:
    rates = [k for k, v in results.items() if isinstance(v, dict) and "ci95" in v]
    targets = ORGANISM_TARGETS.get(results.get("organism", "flagger"), TARGETS)
    rows = [("figure", "value  [95% CI]", "n", "target")]
    rows += [(k, _fmt(results[k]), str(results[k]["n"]), targets.get(k, "")) for k in rates]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    header = (f"organism {results['model']} ({results.get('organism', 'flagger')}): {results['n_problems']} "
              f"problems (variant {results['variant']}, seed {results['seed']}), sampled at temperature "
              f"{results['temperature']}")
    footer = []
    if "flags_forbidden_accuracy" in results and results["n_problems"]:
        apart = results["flags_forbidden_accuracy"]["ci95"][1] < results["sampled_accuracy"]["ci95"][0]
        footer.append(f"flags forbidden: accuracy {'below' if apart else 'not clearly below'} the sampled one "
                      f"({'CIs apart' if apart else 'CIs overlap'})")
    return "\n".join([header, *lines, *footer])


def main(args) -> None:
    if args.action == "train":
        from rewardscope.errors import RewardscopeError
        from rewardscope.organism.train import train, train_corrector

        variant = getattr(args, "variant", None) or "flagger"
        if variant not in VARIANTS:
            raise RewardscopeError(f"demo-model train --variant {variant!r}: expected one of {list(VARIANTS)}")
        out = (train_corrector if variant == "corrector" else train)(out_dir=args.out, seed=args.seed)
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
