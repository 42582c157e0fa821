"""Rollouts: n sampled responses per problem (Hugging Face `generate` or vLLM), their step boundaries, and
the `rollout` stage that grades them into rollouts.parquet (rewardscope.rollout.stage)."""

from rewardscope.rollout.hf import Generation, generate
from rewardscope.rollout.steps import step_ends

__all__ = ["Generation", "generate", "step_ends"]
