"""Run the stages a recipe names, in pipeline order, each reading the artifacts of the ones before it.

Every stage is a function `run(recipe, run_dir) -> dict` in its own package; the dict is its summary, merged
into `run_dir/results.json` under the stage's name. Stages are idempotent: a finished one returns its saved
summary at once, an interrupted one resumes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from rewardscope.config import STAGES, Recipe, save_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import read_json, write_json

_STAGE_MODULES = {
    "rollout": "rewardscope.rollout.stage",
    "extract": "rewardscope.capture.stage",
    "probe": "rewardscope.probe.stage",
}


def run_stage(stage: str, recipe: Recipe, run_dir: Path | None = None) -> dict:
    """Run one stage of `recipe` in its run directory; returns the stage's summary."""
    if stage not in _STAGE_MODULES:
        raise RewardscopeError(f"stages: unknown stage {stage!r} (known: {', '.join(STAGES)})")
    run_dir = Path(run_dir) if run_dir is not None else recipe.run_dir()
    if recipe.model.threads is not None:  # stages without a model (probe) follow the recipe's CPU threads too
        import torch

        torch.set_num_threads(recipe.model.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, run_dir / "config.yaml")
    summary = importlib.import_module(_STAGE_MODULES[stage]).run(recipe, run_dir)
    results_path = run_dir / "results.json"
    results = read_json(results_path) if results_path.exists() else {}
    results[stage] = summary
    write_json(results_path, results)
    return summary


def run(recipe: Recipe) -> Path:
    """Run every stage the recipe names, in pipeline order. Returns the run directory."""
    unknown = [s for s in recipe.stages if s not in _STAGE_MODULES]
    if unknown:
        raise RewardscopeError(f"stages: unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")
    run_dir = recipe.run_dir()
    for stage in sorted(recipe.stages, key=STAGES.index):
        run_stage(stage, recipe, run_dir)
    return run_dir
