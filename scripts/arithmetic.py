"""Write a generated arithmetic dataset in rewardscope's custom JSONL format: a graded family of difficulties.

Why: a small real model (SmolLM2-135M) is at chance on the multiple-choice benchmarks, and a probe can only learn
from problems where the model is sometimes right and sometimes wrong. Arithmetic at the edge of its ability
gives such mixed rewards, and the levels give the model's own difficulty curve.

    .venv/bin/python scripts/arithmetic.py --out data/arithmetic.jsonl [--per-level 50] [--seed 0] [--levels add1,mul1]

One row per problem: {"id": "<level>-<k>", "question", "answer", "level"}; levels in LEVELS, interleaved
(row i is level i mod len(LEVELS)), so any prefix (`data.limit`) holds every level in equal parts. A recipe reads
it with `data: {dataset: jsonl, path: data/arithmetic.jsonl, kind: number}`; `level` stays in each problem's
metadata. The same seed writes the same file.

No question is asked twice (a repeat is drawn again): a question in both a probe's training and held-out
problems would let the probe recall it rather than predict. So a level holds at most its number of distinct
questions (mul1: 64). `--repeats` draws with replacement, as the file of the SmolLM2 task survey was made
(`--repeats --per-level 200`, README "A real model"); its first 200 rows ask 169 distinct questions.
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


def sub1(r):  # subtraction within 18 (add1 undone), never below zero
    a = r.randint(2, 18)
    b = r.randint(1, min(a, 9))
    return f"What is {a} - {b}?", a - b


def word1(r):  # one-step addition in words
    name, thing = r.choice(("Tom", "Ana", "Sam", "Mia")), r.choice(("apples", "books", "coins", "stamps"))
    a, b = r.randint(2, 9), r.randint(2, 9)
    return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b


def chain(r):  # two steps of single-digit addition
    a, b, c = r.randint(1, 9), r.randint(1, 9), r.randint(1, 9)
    return f"Start with {a}, add {b}, then add {c}. What number do you get?", a + b + c


# The survey's four (easiest first, SmolLM2 greedy by hand), then two more for a second dataset (sub1, word1).
LEVELS = {"add1": add1, "mul1": mul1, "add2": add2, "chain": chain, "sub1": sub1, "word1": word1}
DISTINCT = {"add1": 81, "mul1": 64, "add2": 8100, "chain": 729, "sub1": 125, "word1": 1024}  # questions per level
MAIN_LEVELS = "add1,mul1,add2,chain"


def problems(per_level: int, seed: int, levels: list[str], repeats: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for k in range(per_level):
        for level in levels:
            question, answer = LEVELS[level](rng)
            while not repeats and question in seen:
                question, answer = LEVELS[level](rng)
            seen.add(question)
            rows.append({"id": f"{level}-{k}", "question": question, "answer": str(answer), "level": level})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--per-level", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", default=MAIN_LEVELS, help=f"comma-separated, of {', '.join(LEVELS)}")
    p.add_argument("--repeats", action="store_true", help="draw with replacement: a question may come twice")
    args = p.parse_args()
    levels = args.levels.split(",")
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        p.error(f"--levels: unknown level {unknown[0]!r} (known: {', '.join(LEVELS)})")
    short = [lv for lv in levels if DISTINCT[lv] < args.per_level]
    if short and not args.repeats:
        p.error(f"--per-level {args.per_level}: level {short[0]!r} has only {DISTINCT[short[0]]} distinct questions")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = problems(args.per_level, args.seed, levels, args.repeats)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{args.out}: {len(rows)} problems, {args.per_level} per level ({', '.join(levels)})")


if __name__ == "__main__":
    main()
