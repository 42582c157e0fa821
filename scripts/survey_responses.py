"""Draw responses from the SmolLM2 task survey's rollouts for labelling by a person (no extractor output shown).

The raw material of tests/data/grading/smollm2_choice_responses_fresh.jsonl, a second held-out set drawn after
the letter extractor had been tuned on the first (tests/data/grading/README.md):

    .venv/bin/python scripts/smollm2_tasks.py --out runs/smollm2-tasks      # the survey (README, "A real model")
    .venv/bin/python scripts/survey_responses.py --out /tmp/fresh.jsonl --view /tmp/fresh.txt

and of smollm2_choice_responses_third.jsonl, the third (drawn after the extractor was tuned on the second): the
next 32 rows of each run's same shuffle, none of them in the second set:

    .venv/bin/python scripts/survey_responses.py --skip 32 --out /tmp/third.jsonl --view /tmp/third.txt

and of smollm2_choice_responses_fourth.jsonl, the fourth (after the third set's misses), from the same runs on
other problems (16 per dataset, none of the survey's):

    .venv/bin/python scripts/smollm2_tasks.py --out runs/smollm2-tasks-seed1 --only arc-easy,commonsenseqa,mmlu \
        --settings T1.0-shots0 --shuffle-seed 1
    .venv/bin/python scripts/survey_responses.py --survey runs/smollm2-tasks-seed1 --out /tmp/fourth.jsonl

and of smollm2_choice_responses_fifth.jsonl, the fifth (labelled by two readers blind to each other, disagreements
adjudicated by a third), from runs on other problems again, skipping those an earlier set has (the sixth to
eighth likewise: --shuffle-seed 3 to 5, runs/smollm2-tasks-seed3 to -seed5, the later files added to --exclude):

    .venv/bin/python scripts/smollm2_tasks.py --out runs/smollm2-tasks-seed2 --only arc-easy,commonsenseqa,mmlu \
        --settings T1.0-shots0 --shuffle-seed 2
    .venv/bin/python scripts/survey_responses.py --survey runs/smollm2-tasks-seed2 --out /tmp/fifth.jsonl \
        --exclude tests/data/grading/smollm2_choice_responses{,_fresh,_third,_fourth}.jsonl

and of smollm2_choice_responses_ninth.jsonl, the ninth, the same way at temperature 0.7:

    .venv/bin/python scripts/smollm2_tasks.py --out runs/smollm2-tasks-seed6 --only arc-easy,commonsenseqa,mmlu \
        --settings T0.7-shots0 --temperature 0.7 --shuffle-seed 6
    .venv/bin/python scripts/survey_responses.py --survey runs/smollm2-tasks-seed6 --setting T0.7-shots0 \
        --out /tmp/ninth.jsonl --exclude \
    tests/data/grading/smollm2_choice_responses{,_fresh,_third,_fourth,_fifth,_sixth,_seventh,_eighth}.jsonl

Each run's rollouts are shuffled with random.Random(seed), the first `--skip` dropped and the next `--per-run`
kept (the rows of the `--exclude` files' problems left out first). `--view` writes the options and the response
of each row, numbered, for reading; nothing here runs an extractor.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from rewardscope.config import load_recipe
from rewardscope.data import load_task
from rewardscope.grading.answers import CHOICE_LETTERS
from rewardscope.grading.audit import read_cases
from rewardscope.io import read_parquet

DATASETS = ("arc-easy", "commonsenseqa", "mmlu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", default="runs/smollm2-tasks", help="scripts/smollm2_tasks.py's output folder")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--setting", default="T1.0-shots0", help="the runs drawn from (the survey's zero-shot ones)")
    parser.add_argument("--out", required=True, help="JSONL to write (no labels)")
    parser.add_argument("--view", help="a text file to read the rows in")
    parser.add_argument("--per-run", type=int, default=32)
    parser.add_argument("--skip", type=int, default=0, help="rows of each run's shuffle drawn by an earlier set")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--exclude", nargs="*", default=[],
                        help="labelled JSONL files whose problems are skipped (the shuffle's next rows are taken)")
    args = parser.parse_args()
    temperature = float(args.setting.split("-")[0][1:])  # "T1.0-shots0" -> 1.0
    seen = {case["id"].split("#")[0] for path in args.exclude
            for case in read_cases(path, ("id", "response", "label"))}  # their problems: "<problem>#<sample>@t..."
    rows = []
    for dataset in DATASETS:
        problems, _ = load_task(load_recipe(None, {"data.dataset": dataset, "data.path": args.data}).data)
        by_id = {p.id: p for p in problems}
        rollouts = read_parquet(Path(args.survey) / f"{dataset}-{args.setting}" / "rollouts.parquet").to_pylist()
        random.Random(args.seed).shuffle(rollouts)
        rollouts = [r for r in rollouts if r["problem_id"] not in seen]
        for r in rollouts[args.skip: args.skip + args.per_run]:
            rows.append({"id": f"{r['problem_id']}#{r['sample']}@t{temperature}", "dataset": dataset,
                         "prompt": r["prompt"], "response": r["response"],
                         "choices": list(by_id[r["problem_id"]].choices), "gold": r["gold"],
                         "temperature": temperature, "finish_reason": r["finish_reason"],
                         "n_tokens": len(r["response_ids"]), "split": "heldout"})
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if args.view:
        with open(args.view, "w", encoding="utf-8") as f:
            for i, r in enumerate(rows):
                options = " | ".join(f"{CHOICE_LETTERS[j]}) {c}" for j, c in enumerate(r["choices"]))
                f.write(f"### {i} [{r['finish_reason']}] OPTIONS: {options}\n{r['response']}\n\n")
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
