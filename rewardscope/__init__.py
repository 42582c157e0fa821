"""rewardscope: find and use the sparse reward subsystem (value and dopamine neurons) inside LLMs.

Pipeline, one package per stage, data flowing one way through artifacts on disk:
    data -> rollout (+ grading) -> capture -> probe (+ pruning sweep, value neurons) -> transfer
The Python API mirrors the command line: `load_recipe(...)` then `run(recipe)` or `run_stage(name, recipe)`.
"""

from rewardscope.config import Recipe, load_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.pipeline import run, run_stage

__version__ = "0.1.0"
__all__ = ["Recipe", "RewardscopeError", "load_recipe", "run", "run_stage", "__version__"]
