"""Small statistics every stage reports with: one home for each."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval (no continuity correction) of a proportion p observed over n units."""
    if n <= 0:
        raise ValueError("wilson_interval: n must be positive")
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def rate(successes: int, n: int) -> dict:
    """{"value", "ci95": [low, high] (Wilson), "n"}; value None when n is 0."""
    if n == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    return {"value": successes / n, "ci95": list(wilson_interval(successes / n, n)), "n": n}


def holm(p_values: list[float | None], alpha: float = 0.05) -> list[bool | None]:
    """Holm-Bonferroni step-down: which hypotheses are rejected at family-wise level `alpha` (None: no test).

    The family is every defined p-value given; undefined ones (None) are not counted."""
    defined = [i for i, p in enumerate(p_values) if p is not None]
    rejected: list[bool | None] = [None if p is None else False for p in p_values]
    m = len(defined)
    for rank, i in enumerate(sorted(defined, key=lambda i: p_values[i])):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def paired_difference_test(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over paired units (problems: one value each, e.g. a problem's accuracy under two arms),
    with a 95% percentile-bootstrap CI over units and a two-sided sign-flip permutation p-value (under the
    null the two arms are exchangeable within a unit, so each unit's difference is as likely negated).

    The p-value starts from `n_boot` random sign flips; one at or below 0.01 is refined with 200,000 more, so
    that a Holm correction over a table of a hundred tests can be passed (the smallest p of n flips is
    1 / (n + 1))."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(diff)
    if n == 0:
        return {"delta": None, "ci95": [None, None], "p_value": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, n, size=(n_boot, n))].mean(1)
    observed = float(diff.mean())
    p = _sign_flip_p(diff, observed, n_boot, rng)
    if p <= 0.01:
        p = _sign_flip_p(diff, observed, 200_000, rng)
    return {"delta": observed, "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "p_value": p, "n": n, "test": "sign-flip permutation (two-sided); CI: bootstrap over units"}


def _sign_flip_p(diff: np.ndarray, observed: float, flips: int, rng: np.random.Generator) -> float:
    extreme = 0
    for start in range(0, flips, 20_000):  # bounded memory: 20,000 x n signs at a time
        signs = rng.choice([-1.0, 1.0], size=(min(20_000, flips - start), len(diff)))
        extreme += int(np.sum(np.abs((diff * signs).mean(1)) >= abs(observed) - 1e-12))
    return min(1.0, (1 + extreme) / (1 + flips))


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """{"value", "ci95", "n"}: the mean of per-unit values with a 95% percentile-bootstrap CI over units."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    means = values[np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))].mean(1)
    return {"value": float(values.mean()), "ci95": [float(np.percentile(means, 2.5)),
                                                     float(np.percentile(means, 97.5))], "n": len(values)}
