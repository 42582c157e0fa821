"""Run a recipe's stages as a small build system (docs/architecture.md).

Each stage writes one artifact directory, keyed by the recipe sections it reads and the keys of its inputs
(rewardscope.stages): `<out_dir>/artifacts/<stage>-<key>/`. A run directory,
`<out_dir>/<name>-<model>-<dataset>-<run key>/`, holds the resolved recipe (config.yaml), `run.json` (the
artifacts it consists of), a link named after each stage to its artifact, and `results.json` (the stages'
summaries). A finished artifact is reused by every recipe that needs it: changing `probe.*` reuses the rollouts
and the capture.

An artifact is complete once its `stage.json` exists (written last, with the key and the stage's summary). One
process at a time per directory: a stage holds its artifact's lock, and the run directory's lock is held while
its links and results are updated; a second process is refused at once, naming the directory. Holding a lock is
also what makes it safe to delete the temporary files a killed run left behind (io.remove_temporaries).

`run_stage(name, recipe, run_dir)` with a `run_dir` other than the recipe's own uses `run_dir/<stage>` itself as
each stage's artifact (no store): a run assembled by hand, e.g. rollouts written by other tools into
`run_dir/rollout/`.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rewardscope import stages as registry
from rewardscope.config import Recipe, check_recipe, results_dict, save_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import json_text, read_json, remove_temporaries, write_json, write_text_if_changed
from rewardscope.models import resolve_device
from rewardscope.stages import Stage, StageContext

LOCK_NAME = ".lock"
ARTIFACTS = "artifacts"  # under out_dir: every stage's keyed artifacts
RUN_FILE = "run.json"  # in a run directory: {stage: {"key", "artifact"}}
STAGE_FILE = "stage.json"  # in an artifact: stage, key, config sections, input keys, summary; written last
_held: dict[Path, int] = {}  # directories this process has locked -> nesting depth


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold `directory`'s lock for the body; refuse at once if another process holds it.

    flock locks belong to an open file, so the lock goes when its holder exits, even by SIGKILL: no stale lock.
    Re-entrant within a process (a second flock on a new descriptor would block on our own lock)."""
    key = Path(directory).resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RewardscopeError(
                f"{directory}: another rewardscope process is running this recipe in this directory (it holds "
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
    for name in recipe.stages:
        registry.get(name)
    resolve_device(recipe.model.device)


def run_stage(name: str, recipe: Recipe, run_dir: Path | None = None) -> dict:
    """Run one stage of `recipe` (its inputs must be complete); returns the stage's summary."""
    stage = registry.get(name)
    check_runnable(recipe)
    summaries, changed = _build(recipe, [stage], run_dir)
    if not changed:
        print(f"{stage.name}: already complete; nothing rewritten")
    return summaries[stage.name]


def run(recipe: Recipe) -> Path:
    """Run the stages the recipe names and every stage they read, in pipeline order. Returns the run directory."""
    check_runnable(recipe)
    todo = registry.closure(recipe.stages)
    run_dir = recipe.run_dir()
    _, changed = _build(recipe, todo, None)
    if not changed:
        print(f"{run_dir}: complete ({', '.join(s.name for s in todo)} already done); nothing rewritten")
    return run_dir


def artifact_dir(recipe: Recipe, stage: Stage, key: str) -> Path:
    return Path(recipe.out_dir) / ARTIFACTS / f"{stage.name}-{key}"


def results(run_dir: Path) -> dict:
    """{stage: summary} of a run directory, from its artifacts' stage.json files."""
    out = {}
    for name in registry.STAGES:
        marker = Path(run_dir) / name / STAGE_FILE
        if marker.exists():
            out[name] = read_json(marker)["summary"]
    return out


def _build(recipe: Recipe, todo: list[Stage], run_dir: Path | None) -> tuple[dict, bool]:
    """Run `todo` (in order); (their summaries, whether anything was written)."""
    in_store = run_dir is None or Path(run_dir).resolve() == recipe.run_dir().resolve()
    run_dir = recipe.run_dir() if in_store else Path(run_dir)
    keys = registry.keys(recipe, registry.closure([s.name for s in todo]))
    summaries, changed = {}, False
    with run_lock(run_dir):
        refuse_old_layout(run_dir)
        remove_temporaries(run_dir)
        save_recipe(recipe, run_dir / "config.yaml")
        for stage in todo:
            where = artifact_dir(recipe, stage, keys[stage.name]) if in_store else run_dir / stage.name
            inputs = {}
            for name in stage.inputs:
                inputs[name] = _input(recipe, run_dir, registry.get(name), keys[name], in_store)
                if in_store:  # an artifact another recipe made: this run consists of it too
                    changed |= _link(run_dir / name, inputs[name])
            summaries[stage.name], ran = _run_one(recipe, stage, keys, where, inputs)
            changed |= ran
            if in_store:
                changed |= _link(run_dir / stage.name, where)
        record = {name: {"key": keys[name],
                         "artifact": os.path.relpath((run_dir / name).resolve(), run_dir.resolve())}
                  for name in registry.STAGES if (run_dir / name / STAGE_FILE).exists() and name in keys}
        saved = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).exists() else {}
        changed |= write_text_if_changed(run_dir / RUN_FILE, json_text({**saved, **record}))
        changed |= write_text_if_changed(run_dir / "results.json", json_text(results(run_dir)))
    return summaries, changed


def _run_one(recipe: Recipe, stage: Stage, keys: dict, where: Path, inputs: dict) -> tuple[dict, bool]:
    """The stage's summary, running it unless its artifact is complete; (summary, whether it ran)."""
    with run_lock(where):
        remove_temporaries(where)  # a killed run's leftovers, also in a finished artifact (we hold its lock)
        marker = where / STAGE_FILE
        if marker.exists():
            done = read_json(marker)
            if done["key"] != keys[stage.name]:
                raise RewardscopeError(
                    f"{where}: a finished {stage.name} stage made with other settings (key {done['key']}, this "
                    f"recipe's {keys[stage.name]}); use another run directory, or delete {where} to redo it")
            return done["summary"], False
        if recipe.model.threads is not None:  # stages without a model (probe) follow the recipe's threads too
            import torch

            torch.set_num_threads(recipe.model.threads)
        print(f"{stage.name}: running -> {where}", flush=True)  # one line per stage, also in a log file
        summary = stage.function()(StageContext(recipe, stage, keys[stage.name], where, inputs))
        write_json(marker, {
            "stage": stage.name, "key": keys[stage.name], "format": stage.format,
            "config": {section: results_dict(getattr(recipe, section)) for section in stage.sections},
            "inputs": {name: keys[name] for name in stage.inputs}, "summary": summary,
        })
        return summary, True


def _input(recipe: Recipe, run_dir: Path, stage: Stage, key: str, in_store: bool) -> Path:
    """The artifact directory of input `stage` for this recipe; it must be complete (or, in a run assembled by
    hand, exist: the stage checks its files)."""
    where = artifact_dir(recipe, stage, key) if in_store else run_dir / stage.name
    if (where / STAGE_FILE).exists() or (not in_store and where.is_dir()):
        return where.resolve()
    raise RewardscopeError(f"{where}: no finished `{stage.name}` stage for this recipe: run `rewardscope "
                           f"{stage.name}` (or `rewardscope run` with {stage.name!r} in the recipe's stages) first")


def _link(link: Path, target: Path) -> bool:
    """Point `link` at `target` (relative, replaced atomically); True if it changed."""
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink() and os.readlink(link) == relative:
        return False
    if link.exists() and not link.is_symlink():
        raise RewardscopeError(f"{link}: a directory, not a link to an artifact: this run directory was assembled "
                               f"by hand; move it away to let `rewardscope run` manage it")
    tmp = link.with_name(f".{link.name}.link.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(relative, target_is_directory=True)
    os.replace(tmp, link)
    return True


def refuse_old_layout(run_dir: Path) -> None:
    """A run directory of rewardscope 0.1 is refused, saying what to do (every command that takes a RUN_DIR)."""
    if (run_dir / "rollouts.parquet").exists() and not (run_dir / RUN_FILE).exists():
        raise RewardscopeError(
            f"{run_dir}: made by rewardscope 0.1 (one directory per recipe, rollouts.parquet at its top); this "
            f"version keys each stage's artifacts separately (docs/architecture.md): run "
            f"`rewardscope run {run_dir / 'config.yaml'}` to make the new layout (its rollouts are sampled again)")
