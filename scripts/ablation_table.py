"""Print the paper-form ablation table of a run (layers x arms) as markdown, from RUN_DIR/ablate/results.json.

    .venv/bin/python scripts/ablation_table.py RUN_DIR [--fraction 0.1]

Each cell: the arm's accuracy minus the unablated model's, in points, with a * where the paired difference
survives the Holm correction over the run's whole table; the first line gives the unablated accuracy and n.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ARMS = ("value", "random", "magnitude_matched", "magnitude", "terminal", "next_token", "wanda")


def cell(c: dict | None) -> str:
    if c is None:
        return ""
    d = c["minus_unablated"]
    return f"{100 * d['delta']:+.1f}{'*' if d.get('holm_significant') else ''}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--fraction", default="0.1")
    args = p.parse_args()
    results = json.loads((args.run_dir / "ablate" / "results.json").read_text())
    base, table = results["summary"]["unablated_accuracy"], results["table"]
    layers = sorted((l for l, slots in table.items() if args.fraction in slots or "directions" in slots), key=int)
    lo, hi = base["ci95"]
    print(f"unablated {100 * base['value']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], "
          f"{results['summary']['problems']} held-out problems; fraction {args.fraction}")
    print("| arm | " + " | ".join(f"layer {layer}" for layer in layers) + " |")
    print("|---|" + "---|" * len(layers))
    for arm in ARMS:
        print(f"| {arm} | " + " | ".join(cell(table[l].get(args.fraction, {}).get(arm)) for l in layers) + " |")
    for arm in ("direction", "random_direction"):
        print(f"| {arm} | " + " | ".join(cell(table[l].get("directions", {}).get(arm)) for l in layers) + " |")
    control = next((slots["positive_control"] for slots in table.values() if "positive_control" in slots), None)
    if control:
        summary = results["summary"]["positive_control"]
        print(f"\npositive control (last block): {cell(control.get('control'))} points with the control token's "
              f"direction removed, {cell(control.get('random_control'))} with random directions; the token's rate "
              f"{100 * summary['unablated_token_rate']:.1f}% -> {100 * summary['control_token_rate']:.1f}% "
              f"(random directions {100 * summary['random_directions_token_rate']:.1f}%)")


if __name__ == "__main__":
    main()
