"""The search's typed records: a candidate's latency, a planned generation, an evaluated candidate and the
winner's fresh timing, each with the JSON line the journal stores.

The JSON is the journal's version-1 format with fields added (a candidate's `latencies` per named target, the
final line's fresh timing and target), so journals written by earlier detnas versions read back into the same
records; an arch is stored as `Arch.to_dict()` and checked against its stored hash on reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detnas.arch import Arch
from detnas.bench.stats import TimingStats
from detnas.errors import DetnasError


@dataclass(frozen=True)
class Latency:
    """One arch's latency as the search knows it: measured (bench's `TimingStats`) or predicted (a median alone).

    `upper_ms` is the one-sided 95 % upper confidence bound of the median (from the timed runs, or for a prediction
    from the profile's held-out errors) that `--feasibility ucb95` holds against the target; None where it is
    unknown (lines of an older detnas). `convert_seconds` is what quantizing or converting the exported detector
    cost when it was timed at a reduced precision (a cache hit repeats the stored figure)."""

    median_ms: float
    stats: TimingStats | None = None
    convert_seconds: float | None = None
    upper_ms: float | None = None

    @classmethod
    def measured(cls, stats: TimingStats, convert_seconds: float | None = None,
                 upper_ms: float | None = None) -> Latency:
        return cls(stats.median_ms, stats, convert_seconds, upper_ms)

    @classmethod
    def predicted(cls, median_ms: float, upper_ms: float | None = None) -> Latency:
        return cls(float(median_ms), upper_ms=None if upper_ms is None else float(upper_ms))

    def to_json(self) -> dict[str, Any]:
        data = self.stats.to_dict() if self.stats else {"median_ms": self.median_ms}
        if self.convert_seconds is not None:
            data["convert_seconds"] = self.convert_seconds
        if self.upper_ms is not None:
            data["upper_ms"] = self.upper_ms
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Latency:
        convert, upper = data.get("convert_seconds"), data.get("upper_ms")
        convert = None if convert is None else float(convert)
        upper = None if upper is None else float(upper)
        if all(name in data for name in TimingStats.__dataclass_fields__):
            return cls.measured(TimingStats.from_dict(data), convert, upper)
        return cls(float(data["median_ms"]), None, convert, upper)


def _latencies_json(latencies: dict[str, Latency]) -> dict[str, Any]:
    return {name: latency.to_json() for name, latency in latencies.items()}


def _latencies(data: dict[str, Any]) -> dict[str, Latency]:
    return {name: Latency.from_json(value) for name, value in (data.get("latencies") or {}).items()}


def _arch(data: dict[str, Any], source: str) -> Arch:
    arch = Arch.from_dict(data["arch"], source=source)
    if data.get("hash", arch.hash) != arch.hash:
        raise DetnasError(f"{source}: record hash {data['hash']} does not match its arch ({arch.hash})")
    return arch


@dataclass(frozen=True)
class Proposal:
    """A drawn architecture with its analytic cost and, once the cheap limits pass, its latency; `reason` says why
    it was rejected (None for a planned one)."""

    arch: Arch
    origin: str
    flops: int
    params: int
    latency: Latency | None = None
    reason: str | None = None
    latencies: dict[str, Latency] = field(default_factory=dict)  # per named target (several-target searches)

    @property
    def hash(self) -> str:
        return self.arch.hash

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"hash": self.hash, "arch": self.arch.to_dict(), "origin": self.origin,
                                "flops": self.flops, "params": self.params}
        if self.latency is not None:
            data["latency"] = self.latency.to_json()
        if self.latencies:
            data["latencies"] = _latencies_json(self.latencies)
        if self.reason is not None:
            data["reason"] = self.reason
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Proposal:
        latency = Latency.from_json(data["latency"]) if "latency" in data else None
        return cls(_arch(data, source), data["origin"], int(data["flops"]), int(data["params"]), latency,
                   data.get("reason"), _latencies(data))


@dataclass
class Plan:
    """One generation as planned before any evaluation: the proposals kept and rejected, and from which parents."""

    generation: int
    planned: list[Proposal] = field(default_factory=list)
    rejected: list[Proposal] = field(default_factory=list)
    duplicates: int = 0
    parents: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"type": "generation", "generation": self.generation,
                "planned": [p.to_json() for p in self.planned], "rejected": [p.to_json() for p in self.rejected],
                "duplicates": self.duplicates, "parents": list(self.parents), "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        source = f"journal generation {data['generation']}"
        return cls(int(data["generation"]), [Proposal.from_json(p, source) for p in data["planned"]],
                   [Proposal.from_json(p, source) for p in data["rejected"]], int(data["duplicates"]),
                   list(data["parents"]), float(data.get("wall_s", 0.0)))


@dataclass(frozen=True)
class Candidate:
    """An evaluated architecture: its metrics (COCO AP, AP50, ... by name), latency, cost and fitness, and where
    the evaluation's time went (`timing`: accuracy_s, materialize_s, bn_s, eval_s)."""

    index: int
    generation: int
    origin: str
    arch: Arch
    metrics: dict[str, float]
    latency: Latency
    flops: int
    params: int
    fitness: float
    seed: int
    fingerprint: str
    wall_s: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)
    latencies: dict[str, Latency] = field(default_factory=dict)  # per named target (several-target searches)

    @property
    def hash(self) -> str:
        return self.arch.hash

    def to_json(self) -> dict[str, Any]:
        data = {"type": "candidate", "index": self.index, "generation": self.generation, "origin": self.origin,
                "hash": self.hash, "arch": self.arch.to_dict(), "metrics": dict(self.metrics),
                "latency": self.latency.to_json(), "flops": self.flops, "params": self.params,
                "fitness": self.fitness, "seed": self.seed, "fingerprint": self.fingerprint, "wall_s": self.wall_s,
                "timing": dict(self.timing)}
        return {**data, "latencies": _latencies_json(self.latencies)} if self.latencies else data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(int(data["index"]), int(data["generation"]), data["origin"],
                   _arch(data, f"journal candidate #{data['index']}"),
                   {k: float(v) for k, v in data["metrics"].items()}, Latency.from_json(data["latency"]),
                   int(data["flops"]), int(data["params"]), float(data["fitness"]), int(data["seed"]),
                   str(data["fingerprint"]), float(data.get("wall_s", 0.0)),
                   {k: float(v) for k, v in (data.get("timing") or {}).items()}, _latencies(data))


@dataclass(frozen=True)
class Retimed:
    """A candidate timed afresh beside the winner: its search-time latency and the fresh one."""

    arch: Arch
    search_latency: Latency
    latency: Latency
    meets_target: bool | None

    @property
    def hash(self) -> str:
        return self.arch.hash

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "arch": self.arch.to_dict(), "search_latency": self.search_latency.to_json(),
                "latency": self.latency.to_json(), "meets_target": self.meets_target}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Retimed:
        return cls(_arch(data, "journal final runner-up"), Latency.from_json(data["search_latency"]),
                   Latency.from_json(data["latency"]), data.get("meets_target"))


@dataclass(frozen=True)
class Final:
    """The winner timed afresh by a measuring backend (uncached, `rounds` interleaved rounds with the runner-up),
    its search-time latency beside it, and whether the fresh median meets the target. `rounds` is None on lines of
    an older detnas, which re-measured through the search's own cache (a repeat of the search-time figure)."""

    arch: Arch
    latency: Latency
    source: str
    fingerprint: str
    latency_target_ms: float | None
    meets_target: bool | None
    search_latency: Latency | None = None
    rounds: int | None = None
    runner_up: Retimed | None = None
    target: str | None = None  # the named target this winner is for (several-target searches)

    @property
    def hash(self) -> str:
        return self.arch.hash

    @property
    def fresh(self) -> bool:
        return self.rounds is not None

    def to_json(self) -> dict[str, Any]:
        data = {"type": "final", "hash": self.hash, "arch": self.arch.to_dict(), "latency": self.latency.to_json(),
                "source": self.source, "fingerprint": self.fingerprint, "latency_target_ms": self.latency_target_ms,
                "meets_target": self.meets_target}
        if self.search_latency is not None:
            data["search_latency"] = self.search_latency.to_json()
        if self.rounds is not None:
            data["rounds"] = self.rounds
        if self.runner_up is not None:
            data["runner_up"] = self.runner_up.to_json()
        if self.target is not None:
            data["target"] = self.target
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Final:
        search = data.get("search_latency")
        runner = data.get("runner_up")
        return cls(_arch(data, "journal final"), Latency.from_json(data["latency"]), data["source"],
                   str(data["fingerprint"]), data.get("latency_target_ms"), data.get("meets_target"),
                   None if search is None else Latency.from_json(search),
                   None if data.get("rounds") is None else int(data["rounds"]),
                   None if runner is None else Retimed.from_json(runner), data.get("target"))


Record = Plan | Candidate | Final
_DECODERS = {"generation": Plan.from_json, "candidate": Candidate.from_json, "final": Final.from_json}


def decode_record(data: dict[str, Any], where: str) -> Record:
    """A journal line (after the header) as its record; a line of an unknown type or missing a field is refused."""
    decoder = _DECODERS.get(data.get("type", ""))
    if decoder is None:
        raise DetnasError(f"{where}: record type '{data.get('type')}' is not one of {', '.join(_DECODERS)}")
    try:
        return decoder(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise DetnasError(f"{where}: {data.get('type')} record lacks or garbles field {exc}; the journal is "
                          "corrupted or was written by an incompatible detnas") from None
