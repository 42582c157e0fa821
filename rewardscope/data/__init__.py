"""Datasets normalised to `Problem` records, and the prompts built from them."""

from rewardscope.data.loaders import DATASETS, DatasetSpec, load_problems
from rewardscope.data.prompts import DEFAULT_INSTRUCTIONS, build_prompt, format_question
from rewardscope.data.record import Problem

__all__ = ["DATASETS", "DEFAULT_INSTRUCTIONS", "DatasetSpec", "Problem", "build_prompt", "format_question",
           "load_problems"]
