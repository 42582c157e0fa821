"""Small statistics every stage reports with: one home for each."""

from __future__ import annotations

import math


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
