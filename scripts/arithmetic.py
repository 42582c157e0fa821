"""Write a generated arithmetic dataset in rewardscope's custom JSONL format: a graded family of difficulties.

Why: a small real model (SmolLM2-135M) is at chance on the multiple-choice benchmarks, and a probe can only learn
from problems where the model is sometimes right and sometimes wrong. Arithmetic at the edge of its ability
gives such mixed rewards, and the levels give the model's own difficulty curve.

    .venv/bin/python scripts/arithmetic.py --out data/arithmetic.jsonl [--per-level 200] [--seed 0] [--levels add1,mul1]

One row per problem: {"id": "<level>-<k>", "question", "answer", "level"}; levels in LEVELS, interleaved
(row i is level i mod len(LEVELS)), so any prefix (`data.limit`) holds every level in equal parts. A recipe reads
it with `data: {dataset: jsonl, path: data/arithmetic.jsonl, kind: number}`; `level` stays in each problem's
metadata. The same seed writes the same file.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def add1(r):  # single-digit addition
    a, b = r.randint(1, 9), r.randint(1, 9)
    return f"What is {a} + {b}?", a + b


def mul1(r):  # single-digit multiplication
    a, b = r.randint(2, 9), r.randint(2, 9)
    return f"What is {a} times {b}?", a * b


def add2(r):  # two-digit addition
    a, b = r.randint(10, 99), r.randint(10, 99)
    return f"What is {a} + {b}?", a + b


def chain(r):  # two steps of single-digit addition
    a, b, c = r.randint(1, 9), r.randint(1, 9), r.randint(1, 9)
    return f"Start with {a}, add {b}, then add {c}. What number do you get?", a + b + c


LEVELS = {"add1": add1, "mul1": mul1, "add2": add2, "chain": chain}  # easiest first (SmolLM2 greedy, by hand)


def problems(per_level: int, seed: int, levels: list[str] = list(LEVELS)) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for k in range(per_level):
        for level in levels:
            make = LEVELS[level]
            question, answer = make(rng)
            rows.append({"id": f"{level}-{k}", "question": question, "answer": str(answer), "level": level})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--per-level", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", default=",".join(LEVELS), help=f"comma-separated, of {', '.join(LEVELS)}")
    args = p.parse_args()
    levels = args.levels.split(",")
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        p.error(f"--levels: unknown level {unknown[0]!r} (known: {', '.join(LEVELS)})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = problems(args.per_level, args.seed, levels)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{args.out}: {len(rows)} problems, {args.per_level} per level ({', '.join(levels)})")


if __name__ == "__main__":
    main()
