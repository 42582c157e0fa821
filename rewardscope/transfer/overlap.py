"""Overlap of two dim sets against chance: IoU, what random sets of the same sizes give, a hypergeometric p-value.

For random sets of sizes k_a and k_b out of n, the overlap X is hypergeometric. Two "random IoUs" exist:
  - `random_iou_expected`: E[X / (k_a + k_b - X)], the exact expected IoU of random sets (the fair baseline);
  - `random_iou_ratio_of_expectations`: E[X] / (k_a + k_b - E[X]), which is p / (2 - p) for two k-of-n sets
    (p = k / n) as method.md quotes it; it is 1-6% below the exact value for small sets (Jensen's inequality).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import hypergeom


def overlap(a, b, n: int) -> dict:
    """IoU of dim sets `a` and `b` drawn from `n` dims, beside random sets of the same sizes; `p_value` =
    P(overlap >= observed) for a random set of b's size (hypergeometric)."""
    a, b = {int(x) for x in a}, {int(x) for x in b}
    shared = len(a & b)
    return {
        "iou": shared / len(a | b) if a | b else None,
        "overlap": shared,
        "k_a": len(a),
        "k_b": len(b),
        "n": n,
        **random_iou(len(a), len(b), n),
        "p_value": float(hypergeom.sf(shared - 1, n, len(a), len(b))),
    }


def random_iou(k_a: int, k_b: int, n: int) -> dict:
    """The two random baselines of the module docstring for sets of sizes k_a and k_b out of n."""
    if k_a + k_b == 0:
        return {"random_iou_expected": None, "random_iou_ratio_of_expectations": None}
    x = np.arange(max(0, k_a + k_b - n), min(k_a, k_b) + 1)
    pmf = hypergeom.pmf(x, n, k_a, k_b)
    expected_overlap = k_a * k_b / n
    return {
        "random_iou_expected": float(np.sum(pmf * x / (k_a + k_b - x))),
        "random_iou_ratio_of_expectations": expected_overlap / (k_a + k_b - expected_overlap),
    }
