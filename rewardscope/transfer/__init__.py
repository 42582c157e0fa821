"""Transfer between runs: overlap of value-neuron sets (IoU vs chance) and probes scored on another run."""

from rewardscope.transfer.overlap import overlap
from rewardscope.transfer.runs import transfer_runs

__all__ = ["overlap", "transfer_runs"]
