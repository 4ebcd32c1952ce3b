"""Percentiles of latencies, and the median and spread of repeated runs."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: The latency percentiles every run reports, whichever generator measured it.
PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], pct: float, *, is_sorted: bool = False) -> float:
    """The *pct* percentile of *values*, interpolated linearly between the closest ranks.

    The same definition as numpy's default: ``percentile([1, 2, 3, 4], 50) == 2.5``."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be from 0 to 100, got {pct}")
    ordered = values if is_sorted else sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Reservoir:
    """Latencies: every one up to *capacity*, then a uniform sample of them (Algorithm R).

    The maximum and the count stay exact whatever the sample holds."""

    def __init__(self, capacity: int = 1_000_000, seed: int = 7) -> None:
        self.capacity = capacity
        self.values: list[float] = []
        self.count = 0
        self.max = 0.0
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        if value > self.max:
            self.max = value
        if len(self.values) < self.capacity:
            self.values.append(value)
        else:
            slot = self._random.randrange(self.count)
            if slot < self.capacity:
                self.values[slot] = value

    def percentiles(self, pcts: Sequence[float] = PERCENTILES) -> dict[str, float]:
        """``{"p50": ..., "p90": ..., "p99": ..., "max": ...}``; empty when nothing was added."""
        if not self.values:
            return {}
        ordered = sorted(self.values)
        result = {f"p{pct:g}": percentile(ordered, pct, is_sorted=True) for pct in pcts}
        result["max"] = self.max
        return result


@dataclass(frozen=True)
class Spread:
    """The repeats of one measurement: median, extremes, and max-min relative to the median."""

    median: float
    low: float
    high: float
    count: int

    @property
    def relative(self) -> float:
        return (self.high - self.low) / self.median if self.median else 0.0


def spread(values: Sequence[float]) -> Spread | None:
    """Median and extremes of *values*; None for no values."""
    if not values:
        return None
    return Spread(statistics.median(values), min(values), max(values), len(values))
