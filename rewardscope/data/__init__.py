"""Datasets normalised to `Problem` records, and the prompts built from them.

A dataset of your own: `register_dataset(name, load, kind)` (rewardscope.data.loaders); `load_problems` then
reads it by name like the built-in ones.

The names below are imported on first use (PEP 562), so `rewardscope.data.record` (the Problem record, which the
organism task and the graders' callers import) comes without the loaders' imports (the recipe config, pyarrow).
"""

from rewardscope.lazy import lazy_attributes

_LAZY = {
    "DATASETS": "rewardscope.data.loaders",
    "DEFAULT_INSTRUCTIONS": "rewardscope.data.prompts",
    "Dataset": "rewardscope.data.loaders",
    "DatasetSpec": "rewardscope.data.loaders",
    "Problem": "rewardscope.data.record",
    "data_fingerprint": "rewardscope.data.loaders",
    "build_prompt": "rewardscope.data.prompts",
    "dataset_names": "rewardscope.data.loaders",
    "format_question": "rewardscope.data.prompts",
    "graded_kind": "rewardscope.data.loaders",
    "load_problems": "rewardscope.data.loaders",
    "load_task": "rewardscope.data.loaders",
    "worked_answer": "rewardscope.data.prompts",
    "register_dataset": "rewardscope.data.loaders",
}
__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
