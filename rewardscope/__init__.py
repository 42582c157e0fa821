"""rewardscope: find and use the sparse reward subsystem (value and dopamine neurons) inside LLMs.

Pipeline, one package per stage, data flowing one way through artifacts on disk:
    data -> rollout (+ grading) -> capture -> probe (+ pruning sweep, value neurons) -> transfer
The Python API mirrors the command line: `load_recipe(...)` then `run(recipe)` or `run_stage(name, recipe)`.
"""

__version__ = "0.1.0"
__all__ = ["Recipe", "RewardscopeError", "load_recipe", "run", "run_stage", "__version__"]

# Imported on first use (PEP 562): subpackages such as the grading workers import fast, without pyarrow/yaml.
from rewardscope.lazy import lazy_attributes

_LAZY = {
    "Recipe": "rewardscope.config",
    "load_recipe": "rewardscope.config",
    "RewardscopeError": "rewardscope.errors",
    "run": "rewardscope.pipeline",
    "run_stage": "rewardscope.pipeline",
}


__getattr__ = lazy_attributes(__name__, _LAZY)
