"""Value probes (stage `probe`): TD(lambda) value probes for every layer, trained as one batched computation,
the L1 pruning sweep against random dims, and the value neurons. Options and defaults: docs/probes.md."""

from rewardscope.probe.estimator import LayerwiseValueProbes, ValueProbe
from rewardscope.probe.metrics import HeldOut, ProblemBootstrap, evaluate, weighted_auroc
from rewardscope.probe.sweep import kept_count, pruning_sweep, random_dims, rank_dims, value_neurons
from rewardscope.probe.targets import Trajectories, lambda_returns, split_problems, trajectories_from_index

__all__ = [
    "HeldOut", "LayerwiseValueProbes", "ProblemBootstrap", "Trajectories", "ValueProbe", "evaluate", "kept_count",
    "lambda_returns", "pruning_sweep", "random_dims", "rank_dims", "split_problems", "trajectories_from_index",
    "value_neurons", "weighted_auroc",
]
