"""Interventions on the residual stream during generation (docs/ablation.md): `ablate(model, {layer: dims})`
zeroes, mean-fills or projects out chosen coordinates or directions at the output of decoder blocks, as a
context manager or as the `hooks=` of `rewardscope.rollout.hf.generate`."""

from rewardscope.ablate.interventions import MODES, POSITIONS, Ablation, ablate, capture_means, residual_width

__all__ = ["MODES", "POSITIONS", "Ablation", "ablate", "capture_means", "residual_width"]
