"""The pruning sweep: how few input dims a value probe needs, against as many random dims (method.md 3).

Input dims are ranked by the L1 norm of their first-layer weights (for the linear probe, |w|). For each ratio
the top (1 - ratio) of the dims are kept and
  - value_dims: a fresh probe is trained on them (retrained, the paper's protocol);
  - masked:     the full probe is scored with every other input zeroed (no retraining);
  - random_dims: `random_draws` fresh probes are trained on as many uniformly random dims (the control).
All layers' value-dims and random-dims probes of one ratio train as one batched fit. Value neurons are a
layer's top `value_neuron_fraction` of dims.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone

from rewardscope.probe.estimator import LayerwiseValueProbes
from rewardscope.probe.metrics import HeldOut, ProblemBootstrap, evaluate, paired_difference, percentile_ci
from rewardscope.probe.targets import Trajectories


def kept_count(ratio: float, d: int) -> int:
    """Dims kept at pruning `ratio`: round((1 - ratio) * d), at least one."""
    return max(1, round((1 - ratio) * d))


def rank_dims(scores: torch.Tensor) -> torch.Tensor:
    """[P, d] dims of each probe from highest score to lowest (ties: lower dim first)."""
    return torch.sort(scores.cpu(), dim=-1, descending=True, stable=True).indices


def random_dims(d: int, k: int, layer: int, ratio_index: int, draw: int, seed: int) -> np.ndarray:
    """k of d dims drawn uniformly, sorted; fixed by (seed, layer, ratio, draw) so that a layer's control is
    the same whichever layers were swept beside it."""
    rng = np.random.default_rng([seed, layer, ratio_index, draw])
    return np.sort(rng.choice(d, size=k, replace=False))


def value_neurons(scores: torch.Tensor, fraction: float) -> list[list[dict]]:
    """Per probe, its top `fraction` of dims: [{"dim", "rank", "score"}] from rank 0."""
    k = kept_count(1 - fraction, scores.shape[1])
    order = rank_dims(scores)[:, :k]
    return [
        [{"dim": int(dim), "rank": rank, "score": float(s[dim])} for rank, dim in enumerate(top)]
        for s, top in zip(scores.cpu(), order)
    ]


def pruning_sweep(
    full: LayerwiseValueProbes,
    X: torch.Tensor,
    train: Trajectories,
    held_out: HeldOut,
    boot: ProblemBootstrap,
    layer_ids: list[int],
    ratios: list[float],
    random_draws: int,
    seed: int,
    validation: Trajectories | None = None,
) -> list[list[dict]]:
    """The sweep of `full` (probes on all dims of layers `layer_ids`): per probe, one row per ratio.

    Retrained probes train as `full` did (same hyper-parameters, same `validation` for early stopping), so a
    pruned probe gets the same chance to converge as the full one; each row records their epochs."""
    n_probes, d = full.feature_scores_.shape
    order = rank_dims(full.feature_scores_)
    full_values = full.predict(X, held_out.rows).numpy()
    rows: list[list[dict]] = [[] for _ in range(n_probes)]
    for i, ratio in enumerate(ratios):
        k = kept_count(ratio, d)
        if k == d:  # nothing pruned: every arm is the full probe itself
            value, masked, random = full_values, full_values, [full_values] * random_draws
            epochs = full.best_epoch_.repeat(1 + random_draws)
        else:
            top = order[:, :k]
            drawn = [torch.as_tensor(random_dims(d, k, layer, i, j, seed))
                     for j in range(random_draws) for layer in layer_ids]  # draw-major, like `sources` below
            dims = torch.cat([top, torch.stack(drawn)]) if drawn else top
            label = f"sweep {ratio:g} (layers {layer_ids[0]}-{layer_ids[-1]})" if full.progress else False
            retrained = clone(full).set_params(progress=label)
            retrained.fit(X, train, dims=dims, sources=full.sources_.repeat(1 + random_draws), validation=validation)
            values = retrained.predict(X, held_out.rows).numpy()
            epochs = retrained.best_epoch_
            value, random = values[:n_probes], list(values[n_probes:].reshape(random_draws, n_probes, -1))
            keep = torch.zeros(n_probes, d, dtype=torch.bool).scatter_(1, top, True)
            masked = full.predict(X, held_out.rows, keep=keep).numpy()
        value_tables, value_reps = evaluate(value, held_out, boot)
        masked_tables, _ = evaluate(masked, held_out, boot)
        random_evals = [evaluate(v, held_out, boot) for v in random]
        for p in range(n_probes):
            row = {"ratio": ratio, "kept_dims": k, "value_dims": value_tables[p], "masked": masked_tables[p],
                   "epochs": {"value_dims": int(epochs[p]),
                              "random_dims": [int(epochs[(1 + j) * n_probes + p]) for j in range(random_draws)]}}
            if random_draws:
                row["random_dims"], row["value_minus_random"] = {}, {}
                for position, reps in value_reps.items():
                    # Mean over draws per resample (a resample without both classes is NaN in every draw).
                    mean = np.mean([r[position][p] for _, r in random_evals], axis=0)  # [1 + n_boot]
                    row["random_dims"][position] = {
                        "auroc": None if np.isnan(mean[0]) else float(mean[0]),
                        "ci95": percentile_ci(mean[1:]),
                        "draws": [t[p][position]["auroc"] for t, _ in random_evals],
                    }
                    row["value_minus_random"][position] = paired_difference(reps[p], mean)
            rows[p].append(row)
    return rows
