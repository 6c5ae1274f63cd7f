"""Timing statistics and predictor-accuracy metrics, in pure Python so they can be tested exactly.

Latency distributions are skewed (a few slow runs from interrupts or other processes), so the median is the
headline number and the tail (p90, p99) and spread (coefficient of variation) are reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from detnas.errors import DetnasError


@dataclass(frozen=True)
class TimingStats:
    """Summary of timed runs, all in milliseconds; `cv` is std / mean (0.02 = 2 %)."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float
    cv: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> TimingStats:
    """Statistics of per-run latencies; the sample standard deviation (n - 1) is used for the CV."""
    if len(samples_ms) < 2:
        raise DetnasError(f"need at least 2 timed runs to report spread, got {len(samples_ms)}; raise --runs")
    n = len(samples_ms)
    mean = sum(samples_ms) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in samples_ms) / (n - 1))
    return TimingStats(
        n=n,
        median_ms=percentile(samples_ms, 50),
        p90_ms=percentile(samples_ms, 90),
        p99_ms=percentile(samples_ms, 99),
        min_ms=min(samples_ms),
        mean_ms=mean,
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
    )


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (tie-corrected) by counting pairs; O(n^2) is fine for the few hundred archs we rank."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("kendall_tau needs two sequences of equal length >= 2")
    x, y = [float(v) for v in x], [float(v) for v in y]
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else 0.0


@dataclass(frozen=True)
class Accuracy:
    """How well predicted latencies match measured ones on held-out architectures."""

    n: int
    within_5: float
    within_10: float
    mape: float
    kendall_tau: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prediction_accuracy(predicted: Sequence[float], measured: Sequence[float]) -> Accuracy:
    """Share of predictions within +-5 % / +-10 % of the measurement, mean absolute % error, rank agreement."""
    if len(predicted) != len(measured) or len(measured) < 2:
        raise ValueError("need equal-length predicted/measured sequences with at least 2 entries")
    rel = [abs(p - m) / m for p, m in zip(predicted, measured)]
    return Accuracy(
        n=len(rel),
        within_5=sum(r <= 0.05 for r in rel) / len(rel),
        within_10=sum(r <= 0.10 for r in rel) / len(rel),
        mape=100 * sum(rel) / len(rel),
        kendall_tau=kendall_tau(predicted, measured),
    )


def beyond_noise(a: TimingStats, b: TimingStats, k: float = 2.0, floor: float = 0.01) -> bool:
    """True when the medians differ by more than k combined CVs (and at least `floor`): a real change, not jitter."""
    band = max(k * math.sqrt(a.cv**2 + b.cv**2), floor)
    return abs(b.median_ms / a.median_ms - 1) > band
