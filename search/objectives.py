"""What makes one candidate better than another: constraints, the soft reward, and Pareto ranking.

Kept apart from the evolution loop so each rule can be tested on plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from detnas.errors import DetnasError

OBJECTIVES = ("hard", "soft", "pareto")


@dataclass(frozen=True)
class Constraints:
    """Limits a candidate must meet. `latency_ms` is hard for 'hard' and 'pareto', a reward term for 'soft'."""

    objective: str = "hard"
    latency_ms: float | None = None
    soft_weight: float = -0.07
    flops_max: float | None = None
    params_max: float | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise DetnasError(f"--objective '{self.objective}' is not one of {', '.join(OBJECTIVES)}")
        if self.objective == "soft" and self.latency_ms is None:
            raise DetnasError("--objective soft rewards AP*(latency/target)^w and needs --latency-target")
        if self.latency_ms is not None and self.latency_ms <= 0:
            raise DetnasError(f"--latency-target {self.latency_ms}ms must be positive")

    def violation(self, flops: int, params: int, latency_ms: float | None = None) -> str | None:
        """Why a candidate is infeasible, or None; without a latency only the cheap analytic limits are checked."""
        if self.flops_max is not None and flops > self.flops_max:
            return f"flops {flops / 1e6:.1f}M > {self.flops_max / 1e6:.1f}M"
        if self.params_max is not None and params > self.params_max:
            return f"params {params / 1e6:.3f}M > {self.params_max / 1e6:.3f}M"
        if latency_ms is not None and self.latency_is_hard and latency_ms > self.latency_ms:  # type: ignore[operator]
            return f"latency {latency_ms:.3f}ms > {self.latency_ms:g}ms"
        return None

    @property
    def latency_is_hard(self) -> bool:
        return self.objective != "soft" and self.latency_ms is not None

    def fitness(self, ap: float, latency_ms: float) -> float:
        """Scalar used to rank candidates: AP, or MnasNet's AP * (latency / target) ** w in soft mode."""
        if self.objective == "soft" and self.latency_ms is not None:
            return ap * (latency_ms / self.latency_ms) ** self.soft_weight
        return ap


def non_dominated_fronts(points: Sequence[tuple[float, float]]) -> list[list[int]]:
    """Fronts of indices for (AP to maximise, latency to minimise), best front first (NSGA-II sorting)."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    count = [0] * n

    def dominates(i: int, j: int) -> bool:
        (ai, li), (aj, lj) = points[i], points[j]
        return ai >= aj and li <= lj and (ai > aj or li < lj)

    for i in range(n):
        for j in range(n):
            if i != j and dominates(i, j):
                dominated_by[i].append(j)
            elif i != j and dominates(j, i):
                count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(sorted(current))
        following = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        current = following
    return fronts


def crowding_distance(points: Sequence[tuple[float, float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance inside one front; the ends are infinitely far so they survive."""
    distance = {i: 0.0 for i in front}
    for axis in (0, 1):
        ordered = sorted(front, key=lambda i: points[i][axis])
        span = points[ordered[-1]][axis] - points[ordered[0]][axis]
        distance[ordered[0]] = distance[ordered[-1]] = float("inf")
        if span <= 0:
            continue
        for k in range(1, len(ordered) - 1):
            distance[ordered[k]] += (points[ordered[k + 1]][axis] - points[ordered[k - 1]][axis]) / span
    return distance


def rank_records(records: Sequence[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Evaluated candidates best first; ties broken by hash so the order never depends on arrival."""
    if objective != "pareto":
        return sorted(records, key=lambda r: (-r["fitness"], r["hash"]))
    points = [(r["metrics"]["AP"], r["latency"]["median_ms"]) for r in records]
    order: list[dict[str, Any]] = []
    for front in non_dominated_fronts(points):
        crowd = crowding_distance(points, front)
        order.extend(records[i] for i in sorted(front, key=lambda i: (-crowd[i], -points[i][0], records[i]["hash"])))
    return order


def pareto_front(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The non-dominated candidates (AP vs median latency), fastest first."""
    if not records:
        return []
    points = [(r["metrics"]["AP"], r["latency"]["median_ms"]) for r in records]
    return sorted((records[i] for i in non_dominated_fronts(points)[0]), key=lambda r: r["latency"]["median_ms"])
