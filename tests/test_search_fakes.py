"""Deterministic test doubles for the search's evaluator interfaces: functions of the arch, so the algorithm
can be checked exactly (and fast) without a supernet. Shared by the search tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from detnas.arch import Arch
from detnas.bench.stats import TimingStats
from detnas.search.records import Latency
from detnas.space import SearchSpace, register_space

TINY = register_space(SearchSpace("search-test-tiny", 8, (16, 32, 64, 128), (2, 2, 3, 2), 64))


def _jitter(arch: Arch) -> float:
    return int(hashlib.sha256(arch.hash.encode()).hexdigest()[:8], 16) / 16**8


class FakeAccuracy:
    """AP grows with the kernel size of each block (bigger ops 'see more') plus a hash-derived wiggle."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls: list[str] = []
        self.interrupt_after = interrupt_after
        self.last_timing: dict[str, float] = {}

    def evaluate(self, arch: Arch) -> dict[str, float]:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(arch.hash)
        ap = 0.1 + 0.02 * sum(arch.choices) + 0.01 * _jitter(arch)
        return {"AP": ap, "AP50": min(1.0, ap * 1.6), "AP75": ap * 0.9}


class FakeLatency:
    """Latency is a per-block sum that grows with the choice index; measured or predicted as asked."""

    fingerprint = "fake-device"

    def __init__(self, source: str = "measured", offset_ms: float = 0.0, fresh_offset_ms: float = 0.0) -> None:
        self.source = source
        self.offset_ms = offset_ms
        self.fresh_offset_ms = fresh_offset_ms
        self.calls: list[str] = []
        self.fresh_calls: list[list[str]] = []

    def latency(self, arch: Arch) -> Latency:
        self.calls.append(arch.hash)
        median = self.median(arch)
        return Latency.predicted(median, median * 1.04) if self.source == "predicted" else self._measured(median, 5)

    def median(self, arch: Arch) -> float:
        return 1.0 + sum(0.25 * (1 + c) for c in arch.choices) + 0.05 * _jitter(arch) + self.offset_ms

    @staticmethod
    def _measured(median: float, n: int) -> Latency:
        return Latency.measured(TimingStats(n=n, median_ms=median, p90_ms=median * 1.05, p99_ms=median * 1.08,
                                            min_ms=median * 0.98, mean_ms=median * 1.01, std_ms=median * 0.02,
                                            cv=0.02 / 1.01), upper_ms=median * 1.03)

    def fresh(self, archs: list[Arch], rounds: int) -> list[Latency]:
        """A fresh timing: `fresh_offset_ms` slower than `latency` says (a device drifting since the search)."""
        self.fresh_calls.append([a.hash for a in archs])
        return [self._measured(self.median(a) + self.fresh_offset_ms, 5 * rounds) for a in archs]


def shared_data(name: str) -> Path:
    """A real data set under ../shared/data (the conftest's helper), skipping with its reason when absent."""
    from conftest import shared_dataset

    return shared_dataset(name)
