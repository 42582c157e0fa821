"""Held-out AUROC of value predictions at s_0, at step ends and at the last token, with 95% CIs over problems.

The rollouts of one problem are correlated (same question, same difficulty), so the bootstrap resamples
*problems*: each replicate draws the held-out problems with replacement and weights every state by its
problem's count. One set of replicates serves every probe of an evaluation, so differences between probes
(value dims minus random dims) get paired CIs. An AUROC needs correct and wrong rollouts: where one class is
missing it is None with a note saying why, never NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from rewardscope.stats import holm  # noqa: F401 (its home is rewardscope.stats; imported here by callers)

SCORED_POSITIONS = ("s0", "step_end", "last")  # V before generation, at every step end (pooled), at the last token
POSITIONS = SCORED_POSITIONS  # the old name, still read by probe/stage.py, transfer/runs.py, bench/probes.py


@dataclass(frozen=True)
class HeldOut:
    """Labelled held-out states: the rows to predict and, per position, which of them are scored."""

    rows: np.ndarray  # int64 [n]: rows of the states tensor
    labels: np.ndarray  # bool [n]: the rollout's reward
    problems: np.ndarray  # int64 [n]: index into problem_names
    rollouts: np.ndarray  # int64 [n]
    problem_names: np.ndarray  # str [n_problems]
    positions: dict  # position -> int64 indices into rows

    @classmethod
    def from_index(cls, cols: dict[str, np.ndarray], rollout_ids: np.ndarray) -> HeldOut:
        """The s0, step-end and last-token states of `rollout_ids`, from the capture index (read_index)."""
        kind = cols["position_kind"]
        keep = np.isin(cols["rollout_id"], rollout_ids) & ((kind == "s0") | (kind == "step_end") | cols["is_last"])
        names, problems = np.unique(cols["problem_id"][keep].astype(str), return_inverse=True)
        kind = kind[keep]
        return cls(
            rows=cols["row"][keep].astype(np.int64),
            labels=cols["reward"][keep] == 1,
            problems=problems.astype(np.int64),
            rollouts=cols["rollout_id"][keep].astype(np.int64),
            problem_names=names,
            positions={
                "s0": np.flatnonzero(kind == "s0"),
                "step_end": np.flatnonzero(kind == "step_end"),
                "last": np.flatnonzero(cols["is_last"][keep]),
            },
        )


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of sample weights [B, n] (ties count one half); NaN where a class has no weight."""
    if len(scores) == 0:
        return np.full(len(weights), np.nan)
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(1) * neg.sum(1)
    wins = (pos * (neg_below + 0.5 * neg)).sum(1)
    return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


class ProblemBootstrap:
    """`n_boot` resamples of `n_problems` held-out problems (with replacement), fixed by `seed`."""

    def __init__(self, n_problems: int, n_boot: int, seed: int):
        draws = np.random.default_rng(seed).integers(0, n_problems, size=(n_boot, n_problems))
        self.counts = np.zeros((n_boot, n_problems))
        np.add.at(self.counts, (np.arange(n_boot)[:, None], draws), 1)

    def replicates(self, scores: np.ndarray, labels: np.ndarray, problems: np.ndarray) -> np.ndarray:
        """[1 + n_boot]: the AUROC on the sample itself, then on each resample."""
        weights = np.vstack([np.ones(len(scores)), self.counts[:, problems]])
        return weighted_auroc(scores, labels, weights)


def summary(replicates: np.ndarray, labels: np.ndarray, problems: np.ndarray, rollouts: np.ndarray) -> dict:
    """AUROC with its 95% percentile CI and the sample sizes; None and a note where it is undefined."""
    out = {
        "auroc": None,
        "ci95": None,
        "n_problems": int(len(np.unique(problems))),
        "n_rollouts": int(len(np.unique(rollouts))),
        "n_states": int(len(labels)),
        "n_correct_states": int(labels.sum()),
    }
    if np.isnan(replicates[0]):
        if len(labels) == 0:
            what = "no held-out states at this position (e.g. no response has a step end)"
        else:
            what = f"all {len(labels)} held-out states are " + (
                "from correct rollouts" if labels.all() else "from wrong rollouts")
        out["note"] = f"AUROC undefined: {what} (it needs both correct and wrong rollouts)"
        return out
    boot = replicates[1:]
    valid = boot[~np.isnan(boot)]
    out["auroc"] = float(replicates[0])
    out["ci95"] = percentile_ci(boot)
    out["p_value"] = wald_p_value(float(replicates[0]), valid, null=0.5)
    out["n_boot"] = int(len(valid))
    out["n_boot_dropped"] = int(len(boot) - len(valid))  # resamples that drew one class only: no AUROC
    return out


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """a - b for two [1 + n_boot] replicate vectors of the same resamples: the effect and its 95% CI."""
    diff = a - b
    return {"delta": None if np.isnan(diff[0]) else float(diff[0]), "ci95": percentile_ci(diff[1:])}


def wald_p_value(estimate: float, replicates: np.ndarray, null: float) -> float | None:
    """Two-sided p-value of `estimate` against `null`, with the bootstrap replicates' standard deviation as SE."""
    if len(replicates) < 2:
        return None
    se = float(np.std(replicates, ddof=1))
    if se == 0:
        return 1.0 if estimate == null else 0.0
    return float(2 * norm.sf(abs(estimate - null) / se))


def mark_holm(cells: list[dict], alpha: float = 0.05) -> dict:
    """Set `holm_significant` on each AUROC summary of one family (a table's layers x positions); returns a
    description of the correction for the report."""
    for cell, significant in zip(cells, holm([c.get("p_value") for c in cells], alpha)):
        cell["holm_significant"] = significant
    m = sum(c.get("p_value") is not None for c in cells)
    return {"method": "Holm-Bonferroni", "alpha": alpha, "family_size": m,
            "test": "two-sided Wald test of AUROC = 0.5 with the problem-bootstrap standard error",
            "significant": sum(bool(c["holm_significant"]) for c in cells)}


def percentile_ci(replicates: np.ndarray) -> list[float] | None:
    """The 2.5 and 97.5 percentiles of bootstrap replicates; None when none is defined."""
    valid = replicates[~np.isnan(replicates)]  # resamples that drew a single class have no AUROC
    return [float(v) for v in np.percentile(valid, [2.5, 97.5])] if len(valid) else None


def point_aurocs(values: np.ndarray, held_out: HeldOut) -> dict[str, list[float | None]]:
    """Per position, the AUROC of each probe's predictions [P, n] on `held_out` (no CI): for choosing, not
    for reporting."""
    out = {}
    for position, idx in held_out.positions.items():
        labels, ones = held_out.labels[idx], np.ones((1, len(idx)))
        out[position] = [None if np.isnan(a := weighted_auroc(v[idx], labels, ones)[0]) else float(a)
                         for v in values]
    return out


def evaluate(values: np.ndarray, held_out: HeldOut, boot: ProblemBootstrap) -> tuple[list[dict], dict]:
    """Score predictions [P, n] on `held_out`: per probe {position: summary}, and per position the
    replicates [P, 1 + n_boot] for paired differences."""
    tables: list[dict] = [{} for _ in values]
    replicates = {}
    for position, idx in held_out.positions.items():
        labels, problems, rollouts = held_out.labels[idx], held_out.problems[idx], held_out.rollouts[idx]
        reps = np.stack([boot.replicates(v[idx], labels, problems) for v in values])
        for table, r in zip(tables, reps):
            table[position] = summary(r, labels, problems, rollouts)
        if "note" in tables[0][position]:  # the labels are every probe's: one warning per position
            warnings.warn(f"{position}: {tables[0][position]['note']}", stacklevel=2)
        replicates[position] = reps
    return tables, replicates
