"""Which task gives SmolLM2-135M-Instruct something to predict? Accuracy and mixed-problem share per dataset x
temperature x few-shot setting, through the real rollout stage (sampler, prompts, graders).

    .venv/bin/python scripts/arithmetic.py --repeats --per-level 200 --out runs/data/arithmetic-survey.jsonl
    .venv/bin/python scripts/smollm2_tasks.py --out runs/smollm2-tasks [--problems 16] [--n 4] [--only arithmetic]
    [--settings T1.0-shots0] [--shuffle-seed 1]   # other problems: the fourth labelled set's (tests/data/grading)

Each setting is one rollout run (`<out>/<setting>/`, resumable: a finished setting is read back) on the first
`--problems` problems of the dataset (benchmarks shuffled with seed 0; the arithmetic file's own order
interleaves its levels) (the same problems at every temperature and shot
count). Prints a markdown table: accuracy over problems with its Wilson 95% CI, the share of problems with both
right and wrong rollouts (mixed), the chance level, mean tokens and EOS share; for the generated arithmetic set,
one row per level too. The table is also written to `<out>/table.md` and `<out>/table.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from rewardscope.config import load_recipe
from rewardscope.io import read_parquet
from rewardscope.models import load_from_config
from rewardscope.rollout.stage import rollout, summarize
from rewardscope.stats import wilson_interval

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# name -> (data settings, max_new_tokens, chance accuracy)
DATASETS = {
    "arithmetic": ({"dataset": "jsonl", "path": "runs/data/arithmetic-survey.jsonl", "kind": "number"}, 96, 0.0),
    "arc-easy": ({"dataset": "arc-easy", "path": str(DATA), "shuffle_seed": 0}, 160, 0.25),
    "commonsenseqa": ({"dataset": "commonsenseqa", "path": str(DATA), "shuffle_seed": 0}, 160, 0.20),
    "mmlu": ({"dataset": "mmlu", "path": str(DATA), "shuffle_seed": 0}, 160, 0.25),
    "gsm8k": ({"dataset": "gsm8k", "path": str(DATA), "shuffle_seed": 0}, 200, 0.0),
}
# (dataset, temperature, few-shot examples, instruction; None: the kind's default): the full grid where it is
# cheap (arithmetic: short answers) or the first candidate (ARC-Easy), the paper's temperature 1.0 elsewhere (2 CPU
# cores: about 30 minutes in all). Arithmetic also without the "reason step by step ... \\boxed{}" instruction:
# SmolLM2 answers single-digit sums greedily 7/12 without it, 5/12 with it (it then rambles).
GRID = [(name, t, shots, instruction) for name in ("arithmetic", "arc-easy") for t in (0.7, 1.0)
        for shots in ((0, 3) if name == "arithmetic" else (0, 5))
        for instruction in ((None, "") if name == "arithmetic" else (None,))]
GRID += [("commonsenseqa", 1.0, 0, None), ("commonsenseqa", 1.0, 5, None), ("mmlu", 1.0, 0, None),
         ("mmlu", 1.0, 5, None), ("gsm8k", 1.0, 0, None), ("gsm8k", 1.0, 3, None)]


def row(name: str, setting: str, table, chance: float) -> dict:
    problem = table["problem_id"].to_pylist()
    reward = np.asarray(table["reward"].to_pylist(), dtype=float)
    per = defaultdict(list)
    for p, r in zip(problem, reward):
        per[p].append(r)
    means = np.array([np.mean(v) for v in per.values()])
    accuracy = float(means.mean())
    return {"dataset": name, "setting": setting, "problems": len(means), "rollouts": len(reward),
            "accuracy": accuracy, "ci95": list(wilson_interval(accuracy, len(means))), "chance": chance,
            "mixed": float(np.mean((means > 0) & (means < 1))),
            "mean_tokens": float(np.mean([len(r) for r in table["response_ids"].to_pylist()])),
            "eos": float(np.mean([f == "eos" for f in table["finish_reason"].to_pylist()]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--arithmetic-problems", type=int, default=32, help="8 per level")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--only", help="comma-separated dataset names")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settings", help="comma-separated settings to run (e.g. T1.0-shots0); all by default")
    p.add_argument("--shuffle-seed", type=int, default=0, help="the benchmarks' shuffle: another draws other problems")
    p.add_argument("--temperature", type=float, help="every run at this temperature instead of the grid's")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(DATASETS)
    model = tokenizer = None
    rows = []
    grid = [g for g in GRID if g[0] in names]
    if args.temperature is not None:  # runs that differed only by temperature become one
        grid = list(dict.fromkeys((name, args.temperature, shots, instruction) for name, _, shots, instruction in grid))
    for name, temperature, shots, instruction in grid:
        data, max_new_tokens, chance = DATASETS[name]
        setting = f"T{temperature}-shots{shots}" + ("-no-instruction" if instruction == "" else "")
        if args.settings and setting not in args.settings.split(","):
            continue
        if "shuffle_seed" in data:
            data = {**data, "shuffle_seed": args.shuffle_seed}
        limit = args.arithmetic_problems if name == "arithmetic" else args.problems
        overrides = {"model.name": "smollm2-135m-instruct", "model.threads": args.threads,
                     "prompt.instruction": instruction, "prompt.few_shot": shots,
                     "rollout.temperature": temperature, "rollout.n": args.n, "rollout.max_new_tokens": max_new_tokens,
                     "data.limit": limit, **{f"data.{k}": v for k, v in data.items()}}
        recipe = load_recipe(None, overrides)
        run_dir = args.out / f"{name}-{setting}"
        if model is None:  # also for a finished setting: its weights' fingerprint is the loaded folder's
            model, tokenizer = load_from_config(recipe.model)
        start = time.perf_counter()
        path = rollout(recipe, run_dir, model=model, tokenizer=tokenizer)
        table = read_parquet(path)
        result = row(name, setting, table, chance)
        result["seconds"] = summarize(path)["elapsed_s"]
        rows.append(result)
        if name == "arithmetic":  # ids are "<level>-<k>"
            levels = [pid.split("-")[0] for pid in table["problem_id"].to_pylist()]
            for level in dict.fromkeys(levels):
                keep = [i for i, lv in enumerate(levels) if lv == level]
                rows.append(row(f"  {level}", setting, table.take(keep), chance))
        print(f"{name} {setting}: {result['accuracy']:.3f} mixed {result['mixed']:.2f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    lines = ["| dataset | temperature, shots | problems | accuracy [95% CI] | chance | mixed | tokens | EOS |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(f"| {r['dataset']} | {r['setting']} | {r['problems']} | {r['accuracy']:.2f} [{lo:.2f}, {hi:.2f}] "
                     f"| {r['chance']:.2f} | {r['mixed']:.2f} | {r['mean_tokens']:.0f} | {r['eos']:.2f} |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
