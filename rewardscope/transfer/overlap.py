"""Overlap of two dim sets against chance: IoU, its random expectation and a hypergeometric p-value."""

from __future__ import annotations

from scipy.stats import hypergeom


def overlap(a, b, n: int) -> dict:
    """IoU of dim sets `a` and `b` drawn from `n` dims; `random_iou` is its expectation for random sets of the
    same sizes (p / (2 - p) for two k-of-n sets, p = k / n); `p_value` = P(overlap >= observed) for a random
    set of b's size (hypergeometric)."""
    a, b = {int(x) for x in a}, {int(x) for x in b}
    shared = len(a & b)
    expected = len(a) * len(b) / n  # expected overlap of random sets
    return {
        "iou": shared / len(a | b) if a | b else None,
        "overlap": shared,
        "k_a": len(a),
        "k_b": len(b),
        "n": n,
        "random_iou": expected / (len(a) + len(b) - expected) if a or b else None,
        "p_value": float(hypergeom.sf(shared - 1, n, len(a), len(b))),
    }
