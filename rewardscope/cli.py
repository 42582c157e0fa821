"""The `rewardscope` command: a subcommand per pipeline stage, `run`, `report`, and tools.

Stage subcommands come from the registry (rewardscope.stages); `run RECIPE.yaml` runs the whole pipeline,
for the whole pipeline, and `report RUN_DIR`.

Stage subcommands take an optional recipe and `--key=value` overrides (dotted keys), e.g.
    rewardscope rollout recipes/demo.yaml --rollout.n=8 --data.limit=50
`rewardscope config RECIPE --key=value` prints the recipe those resolve to, and its run directory, running nothing.
`rewardscope run` ends by writing the run's HTML report and printing a summary table.
"""

from __future__ import annotations

import argparse
import json
import sys

from rewardscope.errors import RewardscopeError


def _recipe_command(sub, name: str, help: str, aliases=()):
    p = sub.add_parser(name, help=help, aliases=list(aliases),
                       description=help + " Extra --key=value arguments override the recipe.")
    p.add_argument("recipe", nargs="?", help="YAML recipe (defaults apply where omitted)")
    return p


def build_parser() -> argparse.ArgumentParser:
    from rewardscope.config import GradeConfig
    from rewardscope.grading import grader_kinds
    from rewardscope.stages import ALIASES, STAGES

    parser = argparse.ArgumentParser(prog="rewardscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _recipe_command(sub, "run", "Run the stages the recipe names (its `stages` list) and those they read, then "
                                "write the report.")
    for stage in STAGES.values():
        aliases = [old for old, new in ALIASES.items() if new == stage.name]
        _recipe_command(sub, stage.name, stage.help, aliases=aliases)
    _recipe_command(sub, "config", "Print the resolved recipe (YAML) and its run directory; runs nothing.")
    r = sub.add_parser("report", help="Write a run's self-contained HTML report and print its summary table.")
    r.add_argument("run_dir")
    r.add_argument("--out", help="HTML output (default: RUN_DIR/report.html)")

    g = sub.add_parser("grade", help="Grade rows with `pred` and `gold` (audit a grader on your data).")
    g.add_argument("input", help="JSONL with fields `pred` and `gold` (and `choices` for multiple choice)")
    g.add_argument("--out", required=True, help="output JSONL: each row with extracted answers and `equal`")
    g.add_argument("--kind", choices=grader_kinds(), default="math")
    defaults = GradeConfig()  # one home for the grader's defaults: the recipe's grade section
    g.add_argument("--timeout", type=float, default=defaults.timeout_s,
                   help="seconds per math answer before it is judged wrong")
    g.add_argument("--workers", type=int, default=defaults.workers)
    g.add_argument("--no-choice-fallback", action="store_true",
                   help="multiple choice: no last-resort letter (reason '(fallback)') when none is stated")

    t = sub.add_parser("transfer", help="IoU of value-neuron sets and probe transfer between two runs.")
    t.add_argument("run_a")
    t.add_argument("run_b")
    t.add_argument("--out", help="JSON output (default: RUN_A/transfer/<RUN_B name>.json)")

    d = sub.add_parser("demo-model", help="Train or evaluate the demo model organism.")
    dsub = d.add_subparsers(dest="action", required=True)
    dt = dsub.add_parser("train", help="Train the organism (CPU, fixed seed) and save it in Hugging Face format.")
    dt.add_argument("--out", help="output folder (default: the package's shipped weights folder)")
    dt.add_argument("--seed", type=int, default=0)
    dt.add_argument("--variant", choices=["flagger", "corrector"], default="flagger",
                    help="flagger (`demo`, the default) or corrector (`demo-corrector`, warm-started from the flagger)")
    de = dsub.add_parser("evaluate", help="Accuracy (greedy and sampled) and flag recall of an organism.")
    de.add_argument("--model", default="demo", help="folder of a trained organism (default: the shipped one)")
    de.add_argument("--n-problems", type=int, default=400)
    de.add_argument("--out", help="write the figures as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    from rewardscope.stages import ALIASES, STAGES

    recipe_commands = {"run", "config", *STAGES, *ALIASES}
    if extra and args.command not in recipe_commands:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in recipe_commands:
            from rewardscope.config import load_recipe  # a bad recipe is refused before torch is imported

            if args.recipe and args.recipe.startswith("--"):
                # argparse takes an option whose value has a space ("--stages=[a, b]") for the positional.
                extra.insert(0, args.recipe)
                args.recipe = None
            recipe = load_recipe(args.recipe, extra)
            if args.command == "config":
                import yaml

                print(yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True), end="")
                print(f"# run directory: {recipe.run_dir()}")
                return 0
            from rewardscope import pipeline

            if args.command == "run":
                run_dir = pipeline.run(recipe)
                _report(run_dir)
            else:
                run_dir = recipe.run_dir()
                pipeline.run_stage(args.command, recipe)
            print(f"results: {run_dir}")
        elif args.command == "report":
            _report(args.run_dir, args.out)
        elif args.command == "grade":
            from rewardscope.grading import grade_file

            summary = grade_file(args.input, args.out, kind=args.kind, timeout_s=args.timeout, workers=args.workers,
                                 choice_fallback=not args.no_choice_fallback)
            print(summary)
        elif args.command == "transfer":
            from rewardscope.transfer import transfer_runs

            from pathlib import Path

            from rewardscope.pipeline import refuse_old_layout

            for run_dir in (args.run_a, args.run_b):
                refuse_old_layout(Path(run_dir))
            print(json.dumps(transfer_runs(args.run_a, args.run_b, out=args.out), indent=2))
        elif args.command == "demo-model":
            from rewardscope.organism import cli as organism_cli

            organism_cli.main(args)
    except RewardscopeError as e:
        print(f"rewardscope: error: {e}", file=sys.stderr)
        return 2
    return 0


def _report(run_dir, out=None) -> None:
    from pathlib import Path

    from rewardscope.pipeline import refuse_old_layout
    from rewardscope.report import summary_table, write_report

    refuse_old_layout(Path(run_dir))
    path = write_report(run_dir, out)
    print(summary_table(run_dir))
    print(f"report: {path}")


if __name__ == "__main__":
    sys.exit(main())
