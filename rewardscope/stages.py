"""The stage registry: every stage of the pipeline, declared once (docs/architecture.md).

The CLI subcommands, `rewardscope run`, the recipe's `stages` check, each artifact's key and the report's
sections all come from `STAGES`. A stage's artifact is keyed by the recipe sections it reads (with a local data
file's content and the grading rules' version where it reads those sections) and the keys of the artifacts it
reads, like a build system: changing `probe.*` re-runs the probe stage only, and adding a section or a stage
changes no existing key.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Stage:
    name: str  # subcommand, name in a recipe's `stages`, artifact kind
    help: str  # one line, for --help
    sections: tuple[str, ...]  # recipe sections the artifact depends on
    inputs: tuple[str, ...]  # stages whose artifacts it reads
    run: str  # "module:function", called as function(ctx: StageContext) -> summary dict
    report: str | None = None  # its section in rewardscope.report.SECTIONS
    format: int = 1  # bumped when the artifact's format or meaning changes: invalidates it and its readers

    def function(self) -> Callable[[StageContext], dict]:
        module, name = self.run.split(":")
        return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class StageContext:
    """What a stage's run function gets: the recipe, where to write, and the artifacts it reads."""

    recipe: Any  # rewardscope.config.Recipe
    stage: Stage
    key: str
    out: Path  # the artifact directory this stage writes (exists; locked for the stage)
    inputs: dict[str, Path]  # input stage name -> its (complete) artifact directory


# In pipeline order. The model section is read by every stage that runs or describes the model.
STAGES: dict[str, Stage] = {
    stage.name: stage for stage in (
        Stage("rollout", "Sample and grade n rollouts per problem into rollouts.parquet.",
              sections=("model", "data", "prompt", "rollout", "grade"), inputs=(),
              run="rewardscope.rollout.stage:run", report="rollout", format=2),  # 2: own decode loop
        Stage("capture", "Capture residual-stream states of the rollouts (one teacher-forced forward each).",
              sections=("model", "capture"), inputs=("rollout",),
              run="rewardscope.capture.stage:run", report=None, format=2),  # 2: s_0 once per prompt
        Stage("probe", "Train value probes for every layer, then the pruning sweep and the value neurons.",
              sections=("probe", "sweep"), inputs=("capture",),
              run="rewardscope.probe.stage:run", report="probe", format=2),  # 2: validation split, early stop
        Stage("ablate", "Task accuracy with each arm's dims removed from one layer during generation, with controls.",
              sections=("model", "data", "prompt", "rollout", "grade", "ablate"),
              inputs=("rollout", "capture", "probe"), run="rewardscope.ablate.stage:run", report="ablate",
              format=2),  # 2: magnitude matching by log RMS, sink dims excluded
    )
}
ALIASES = {"extract": "capture"}  # the capture stage's name before 0.2


def get(name: str) -> Stage:
    """The stage called `name` (or an alias of it); the error lists the known stages."""
    from rewardscope.errors import RewardscopeError

    stage = STAGES.get(ALIASES.get(name, name))
    if stage is None:
        raise RewardscopeError(f"unknown stage {name!r} (known: {', '.join(STAGES)})")
    return stage


def closure(names: list[str]) -> list[Stage]:
    """The stages `names` need (themselves and everything they read), in pipeline order."""
    needed: set[str] = set()

    def visit(name: str) -> None:
        stage = get(name)
        if stage.name not in needed:
            needed.add(stage.name)
            for dependency in stage.inputs:
                visit(dependency)

    for name in names:
        visit(name)
    return [stage for name, stage in STAGES.items() if name in needed]


def stage_key(stage: Stage, recipe, input_keys: dict[str, str]) -> str:
    """sha256 over the stage's name and format, the sections it reads (keys that cannot change a result left
    out), the content of the data files where it reads `data` and a local path gives them, the rules versions of
    the kinds it grades with (rewardscope.grading.grader.RULES_VERSIONS), and its inputs' keys."""
    from rewardscope.config import results_dict
    from rewardscope.data import data_fingerprint, graded_kind
    from rewardscope.grading.grader import rules_versions

    payload = {"stage": stage.name, "format": stage.format,
               "config": {section: results_dict(getattr(recipe, section)) for section in stage.sections},
               "inputs": {name: input_keys[name] for name in stage.inputs}}
    if "data" in stage.sections and (content := data_fingerprint(recipe.data)) is not None:
        payload["data_content"] = content  # an edited file re-keys; no path (the organism task) keeps its key
    if "grade" in stage.sections and (versions := rules_versions(graded_kind(recipe.data, recipe.grade.kind))):
        payload["grading_rules"] = versions  # a kind's changed rules re-grade; kinds at version 1 add nothing
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def keys(recipe, stages: list[Stage]) -> dict[str, str]:
    """The key of each of `stages` (which must include everything they read) for `recipe`."""
    out: dict[str, str] = {}
    for stage in stages:
        out[stage.name] = stage_key(stage, recipe, out)
    return out
