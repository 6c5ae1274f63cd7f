"""What makes one candidate better than another: constraints, and the registered objectives that turn AP and
latency into a ranking (hard limit, MnasNet's soft reward, Pareto fronts).

Kept apart from the evolution loop so each rule can be tested on plain numbers. A new objective is an `Objective`
subclass registered with `@OBJECTIVES.register(name)`; `--objective NAME` then selects it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from detnas.errors import DetnasError
from detnas.registry import Registry

if TYPE_CHECKING:
    from detnas.search.records import Candidate, Latency

FITNESS_METRICS = ("AP", "mAP50_07")
#: backbone FLOPs (stem + stages, multiply-adds at 224x224) a space's paper search allows. detnas-300m: the official
#: search's `flops_limit` (300M). detnas-1.3g: no official search config exists; its name gives 1.3G the way
#: 300M names the small space, and the released COCO-FPN-1.3G backbone (1.27G) meets it.
PAPER_FLOPS_LIMITS = {"detnas-300m": 300e6, "detnas-1.3g": 1.3e9}
PAPER_FLOPS_SIZE = 224
#: how a candidate's latency is held against a hard target. ucb95: an upper confidence bound of its median
#: (measured: an order statistic of its timed runs, `bench.stats.median_upper_bound`; predicted: a quantile of the
#: profile's held-out errors) must be within the target, at the per-candidate confidence `bound_confidence` gives,
#: so that the chance that *any* over-target candidate of the search passes, the winner included, is at most 5 %.
#: median: the median alone, the rule of older detnas, under which the best-AP candidate is the one most likely to
#: have drawn a lucky low median (the winner's curse). bench/suite/feasibility.py simulates both.
FEASIBILITY_RULES = ("ucb95", "median")
FAMILY_ERROR = 0.05


def bound_confidence(budget: int) -> float:
    """Per-candidate confidence of the ucb95 bound for a search that times up to `budget` candidates (Bonferroni).

    A 95 % bound per candidate is not enough: a search crowds its candidates near the target, and among many
    over-target ones each passing with 5 %, one usually does and, being slower, tends to carry the best AP (simulated
    by bench/suite/feasibility.py: 100 candidates within +-10 % of the target, 30 runs each: 5.6 % of fresh winners
    over the target, 34 % under the median rule, 0.2 % at 1 - 0.05 / budget; 200 within +-5 %: 33 %, 90 %, 0.8 %)."""
    return 1 - FAMILY_ERROR / max(1, budget)


@dataclass(frozen=True)
class Constraints:
    """Limits a candidate must meet. `latency_ms` is hard for 'hard' and 'pareto' (held against the latency's 95 %
    upper bound, or its median, by `feasibility`), a reward term for 'soft'.

    Without any limit the space's paper FLOPs limit applies (`resolve`), unless `paper_limit` is False
    (`--no-constraint`). `metric` is what the fitness ranks by: COCO AP@[.5:.95], or VOC07 mAP@0.5 on VOC data.
    """

    objective: str = "hard"
    latency_ms: float | None = None
    soft_weight: float = -0.07
    flops_max: float | None = None
    params_max: float | None = None
    paper_limit: bool = True
    metric: str = "AP"
    feasibility: str = "ucb95"
    targets: tuple[tuple[str, float], ...] = ()  # several named targets (then `latency_ms` is None): (name, ms)

    def __post_init__(self) -> None:
        rule = OBJECTIVES.get(self.objective)  # refuses an unregistered name, listing the registered ones
        if self.metric not in FITNESS_METRICS:
            raise DetnasError(f"fitness metric '{self.metric}' is not one of {', '.join(FITNESS_METRICS)}")
        if not self.paper_limit and not self.unconstrained:
            raise DetnasError("--no-constraint lifts the paper's default limit; it cannot go with "
                              "--latency-target, --flops-max or --params-max")
        if rule.needs_target and self.latency_ms is None:
            raise DetnasError(f"--objective {self.objective} {rule.needs_target} and needs --latency-target")
        if self.latency_ms is not None and self.latency_ms <= 0:
            raise DetnasError(f"--latency-target {self.latency_ms}ms must be positive")
        if self.feasibility not in FEASIBILITY_RULES:
            raise DetnasError(f"--feasibility '{self.feasibility}' is not one of {', '.join(FEASIBILITY_RULES)}")
        if self.targets and (self.objective != "hard" or self.latency_ms is not None):
            raise DetnasError(f"--objective {self.objective} ranks against one target; with several named "
                              "--latency-target use --objective hard")
        for name, ms in self.targets:
            if ms <= 0:
                raise DetnasError(f"--latency-target {name}={ms}ms must be positive")

    def violation(self, flops: int, params: int, latency: Latency | None = None,
                  latencies: Mapping[str, Latency] | None = None) -> str | None:
        """Why a candidate is infeasible, or None; without a latency only the cheap analytic limits are checked.
        With several targets a candidate is kept when it meets any of them (it may be a parent for that one)."""
        if self.flops_max is not None and flops > self.flops_max:
            return f"flops {flops / 1e6:.1f}M > {self.flops_max / 1e6:.1f}M"
        if self.params_max is not None and params > self.params_max:
            return f"params {params / 1e6:.3f}M > {self.params_max / 1e6:.3f}M"
        if latency is not None and self.latency_is_hard:
            held = self.held_latency(latency)
            if held > self.latency_ms:  # type: ignore[operator]
                what = "latency" if self.feasibility == "median" else "latency 95% bound"
                return f"{what} {held:.3f}ms > {self.latency_ms:g}ms"
        if latencies and self.targets:
            over = [f"{name} {self.held_latency(latencies[name]):.3f}ms > {ms:g}ms" for name, ms in self.targets
                    if self.held_latency(latencies[name]) > ms]
            if len(over) == len(self.targets):
                return "over every target: " + ", ".join(over)
        return None

    def meets(self, candidate: Candidate, target: str) -> bool:
        """Whether a candidate of a several-target search meets the named target under the feasibility rule."""
        return self.held_latency(candidate.latencies[target]) <= dict(self.targets)[target]

    def held_latency(self, latency: Latency) -> float:
        """The figure the target is held against under the feasibility rule."""
        if self.feasibility == "median":
            return latency.median_ms
        if latency.upper_ms is None:
            raise DetnasError("--feasibility ucb95 needs an upper confidence bound of each latency, and this latency "
                              "source gives none; pass --feasibility median")
        return latency.upper_ms

    def within_target(self, latency: Latency) -> bool:
        return self.latency_ms is None or self.held_latency(latency) <= self.latency_ms

    @property
    def unconstrained(self) -> bool:
        return self.latency_ms is None and not self.targets and self.flops_max is None and self.params_max is None

    def resolve(self, space_name: str, flops_size: int, metric: str) -> tuple[Constraints, str]:
        """These constraints with the paper's defaults filled in, and a log line saying what applies."""
        resolved = replace(self, metric=metric)
        if not self.unconstrained:
            return resolved, f"fitness: {metric}"
        if not self.paper_limit:
            return resolved, f"no constraint (--no-constraint): ranking by {metric} alone"
        limit = PAPER_FLOPS_LIMITS.get(space_name)
        if limit is None:
            raise DetnasError(f"space '{space_name}' has no paper FLOPs limit; pass --latency-target, --flops-max "
                              "or --params-max, or --no-constraint to rank by accuracy alone")
        if flops_size != PAPER_FLOPS_SIZE:
            raise DetnasError(f"the paper limit of '{space_name}' ({limit / 1e6:g}M) counts FLOPs at "
                              f"{PAPER_FLOPS_SIZE}x{PAPER_FLOPS_SIZE}, not --flops-size {flops_size}; pass "
                              "--flops-max for that size, or --no-constraint")
        return replace(resolved, flops_max=limit), (
            f"no --latency-target, --flops-max or --params-max: the paper limit of space '{space_name}' applies, "
            f"backbone FLOPs <= {limit / 1e6:g}M at {PAPER_FLOPS_SIZE}x{PAPER_FLOPS_SIZE} (--no-constraint lifts it); "
            f"fitness: {metric}")

    @property
    def rule(self) -> Objective:
        return OBJECTIVES.get(self.objective)()

    @property
    def latency_is_hard(self) -> bool:
        return self.rule.latency_is_hard and self.latency_ms is not None

    def fitness(self, ap: float, latency_ms: float) -> float:
        """Scalar used to rank candidates: AP, or MnasNet's AP * (latency / target) ** w in soft mode."""
        return self.rule.fitness(ap, latency_ms, self)


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


class Objective:
    """A ranking rule: fitness of one candidate, order of many, and the winner. The base ranks by fitness = the
    fitness metric, with the latency target as a hard limit."""

    latency_is_hard = True
    needs_target: str | None = None  # why it needs --latency-target, when it does

    def fitness(self, ap: float, latency_ms: float, constraints: Constraints) -> float:
        return ap

    def rank(self, records: Sequence[Candidate]) -> list[Candidate]:
        """Evaluated candidates best first; ties broken by hash so the order never depends on arrival."""
        return sorted(records, key=lambda r: (-r.fitness, r.hash))

    def best(self, records: Sequence[Candidate], constraints: Constraints) -> Candidate:
        return self.rank(records)[0]


OBJECTIVES: Registry[type[Objective]] = Registry("objective", "--objective")


@OBJECTIVES.register("hard")
class HardLimit(Objective):
    """Reject anything over the latency target; rank the rest by the fitness metric."""


@OBJECTIVES.register("soft")
class SoftReward(Objective):
    """MnasNet's reward AP * (latency / target) ** w: the target pulls instead of cutting."""

    latency_is_hard = False
    needs_target = "rewards AP*(latency/target)^w"

    def fitness(self, ap: float, latency_ms: float, constraints: Constraints) -> float:
        assert constraints.latency_ms is not None  # Constraints refuses soft without a target
        return ap * (latency_ms / constraints.latency_ms) ** constraints.soft_weight


@OBJECTIVES.register("pareto")
class ParetoFront(Objective):
    """NSGA-II order over (fitness metric, median latency); the winner is the best fitness on the front within the
    target. A candidate's fitness here is its fitness metric (COCO AP, or VOC07 mAP on VOC data): the base rule's."""

    def rank(self, records: Sequence[Candidate]) -> list[Candidate]:
        points = [(r.fitness, r.latency.median_ms) for r in records]
        order: list[Candidate] = []
        for front in non_dominated_fronts(points):
            crowd = crowding_distance(points, front)
            order.extend(records[i] for i in sorted(front, key=lambda i: (-crowd[i], -points[i][0], records[i].hash)))
        return order

    def best(self, records: Sequence[Candidate], constraints: Constraints) -> Candidate:
        front = pareto_front(records, constraints.metric)
        if constraints.latency_ms is not None:
            front = [r for r in front if constraints.within_target(r.latency)] or front
        return max(front, key=lambda r: (r.metrics[constraints.metric], r.hash))


def rank_records(records: Sequence[Candidate], objective: str) -> list[Candidate]:
    """Evaluated candidates best first under the registered `objective`."""
    return OBJECTIVES.get(objective)().rank(records)


def pareto_front(records: Sequence[Candidate], metric: str = "AP", target: str | None = None) -> list[Candidate]:
    """The non-dominated candidates (`metric`, the fitness metric, vs median latency of the named target when
    given), fastest first."""
    if not records:
        return []
    ms = [(r.latencies[target] if target else r.latency).median_ms for r in records]
    points = [(r.metrics[metric], m) for r, m in zip(records, ms)]
    return [records[i] for i in sorted(non_dominated_fronts(points)[0], key=lambda i: ms[i])]
