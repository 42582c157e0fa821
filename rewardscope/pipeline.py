"""Run the stages a recipe names, in pipeline order, each reading the artifacts of the ones before it.

Every stage is a function `run(recipe, run_dir) -> dict` in its own package; the dict is its summary, merged
into `run_dir/results.json` under the stage's name (rewritten only when a summary changed). Stages are
idempotent: a finished one returns its saved summary at once, an interrupted one resumes.

One process at a time per run directory: `run` and `run_stage` hold an exclusive lock on `run_dir/.lock` for
their whole duration, and a second process is refused at once, naming the directory. Holding the lock is also
what makes it safe to delete the temporary files a killed run left behind (io.remove_temporaries): no other
process can be writing them.
"""

from __future__ import annotations

import fcntl
import importlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rewardscope.config import STAGES, Recipe, check_recipe, save_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import json_text, read_json, remove_temporaries, write_text_if_changed
from rewardscope.models import resolve_device

_STAGE_MODULES = {
    "rollout": "rewardscope.rollout.stage",
    "extract": "rewardscope.capture.stage",
    "probe": "rewardscope.probe.stage",
}
LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # run directories this process has locked -> nesting depth (run calls run_stage)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the body; refuse at once if another process holds it.

    flock locks belong to an open file, so the lock goes when its holder exits, even by SIGKILL: no stale lock.
    Re-entrant within a process (a second flock on a new descriptor would block on our own lock)."""
    key = Path(run_dir).resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RewardscopeError(
                f"{run_dir}: another rewardscope process is running this recipe in this directory (it holds "
                f"{LOCK_NAME}); wait for it to finish, then run again: finished stages are reused") from None
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # releases the lock


def check_runnable(recipe: Recipe) -> None:
    """Everything that can be refused before any work: bad values or stages, a device that is not here."""
    check_recipe(recipe)  # a Recipe built in Python has not been through load_recipe's checks
    resolve_device(recipe.model.device)


def run_stage(stage: str, recipe: Recipe, run_dir: Path | None = None) -> dict:
    """Run one stage of `recipe` in its run directory; returns the stage's summary."""
    if stage not in _STAGE_MODULES:
        raise RewardscopeError(f"stages: unknown stage {stage!r} (known: {', '.join(STAGES)})")
    check_runnable(recipe)
    run_dir = Path(run_dir) if run_dir is not None else recipe.run_dir()
    with run_lock(run_dir):
        summary, changed = _run_stage(stage, recipe, run_dir)
    if not changed:
        print(f"{stage}: already complete in {run_dir}; nothing rewritten")
    return summary


def run(recipe: Recipe) -> Path:
    """Run every stage the recipe names, in pipeline order. Returns the run directory."""
    check_runnable(recipe)
    run_dir = recipe.run_dir()
    stages = sorted(recipe.stages, key=STAGES.index)
    with run_lock(run_dir):
        changed = [_run_stage(stage, recipe, run_dir)[1] for stage in stages]
    if not any(changed):
        print(f"{run_dir}: complete ({', '.join(stages)} already done); nothing rewritten")
    return run_dir


def _run_stage(stage: str, recipe: Recipe, run_dir: Path) -> tuple[dict, bool]:
    """(summary, whether it differs from the one in results.json). The caller holds the run directory's lock."""
    if recipe.model.threads is not None:  # stages without a model (probe) follow the recipe's CPU threads too
        import torch

        torch.set_num_threads(recipe.model.threads)
    remove_temporaries(run_dir)
    save_recipe(recipe, run_dir / "config.yaml")
    summary = importlib.import_module(_STAGE_MODULES[stage]).run(recipe, run_dir)
    results_path = run_dir / "results.json"
    results = read_json(results_path) if results_path.exists() else {}
    results[stage] = summary
    return summary, write_text_if_changed(results_path, json_text(results))
