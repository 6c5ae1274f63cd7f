"""The main job's summary as a record: what `detnas demo` writes to summary.json, draws as report.md and prints as
its last lines, from one place.

Its JSON is what the main job has always written (the same keys and values, AP keys in capitals as COCO names
them), so a results folder of an older run reads back (`MainJobSummary.from_dict`); readers use attributes.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from detnas.arch import Arch
from detnas.jsonout import JsonRecord
from detnas.search.records import Candidate

SHIPPED_TARGET = "tight"  # the demo ships this target's winner (its plots and report lines are named after it)


class PlanFields(Protocol):
    """What the summary reads of the plan it was made with: a `MainJobPlan` (a dataclass, written as its fields),
    named by its fields here because its module imports this one."""

    det_size: int


@dataclass(frozen=True)
class TargetRow:
    """One target's winner: its search-time and fresh latency, verdict, and its Pareto front's size and span."""

    latency_ms: float
    arch: Arch | None
    ap: float | None
    search_ms: float | None
    fresh_ms: float | None
    meets_target: bool | None
    verdict: str
    front: int
    front_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "arch": None if self.arch is None else self.arch.to_dict(), "AP": self.ap,
                "search_ms": self.search_ms, "fresh_ms": self.fresh_ms, "meets_target": self.meets_target,
                "verdict": self.verdict, "front": self.front, "front_ratio": self.front_ratio}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetRow:
        arch = None if data["arch"] is None else Arch.from_dict(data["arch"], "summary.json target arch")
        return cls(data["latency_ms"], arch, data["AP"], data["search_ms"], data["fresh_ms"], data["meets_target"],
                   data["verdict"], data["front"], data["front_ratio"])


@dataclass(frozen=True)
class FrontSpan:
    """How far a target's Pareto front reaches: its fastest and slowest member (compact choices), their search-time
    latencies and ratio, and each member's AP from fastest to slowest; all None / empty for an empty front."""

    members: int
    fastest_ms: float | None
    slowest_ms: float | None
    ratio: float | None
    ap: tuple[float, ...]
    fastest: str | None
    slowest: str | None

    def to_dict(self) -> dict[str, Any]:
        data = {"members": self.members, "fastest_ms": self.fastest_ms, "slowest_ms": self.slowest_ms,
                "ratio": self.ratio, "AP": list(self.ap), "fastest": self.fastest, "slowest": self.slowest}
        if not self.members:
            del data["AP"]  # an empty front has always been written without it
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontSpan:
        return cls(data["members"], data["fastest_ms"], data["slowest_ms"], data["ratio"], tuple(data.get("AP", ())),
                   data["fastest"], data["slowest"])


@dataclass(frozen=True)
class ShippedAccuracy:
    """AP on the search-validation split of what ships (the saved weights, the exported file) beside the journal's
    AP of the same arch, and whether both are within `tolerance` of it."""

    journal_ap: float
    weights_ap: float
    onnx_ap: float
    tolerance: float
    images: int
    within_tolerance: bool

    def to_dict(self) -> dict[str, Any]:
        return {"journal_AP": self.journal_ap, "weights_AP": self.weights_ap, "onnx_AP": self.onnx_ap,
                "tolerance": self.tolerance, "images": self.images, "within_tolerance": self.within_tolerance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShippedAccuracy:
        return cls(data["journal_AP"], data["weights_AP"], data["onnx_AP"], data["tolerance"], data["images"],
                   data["within_tolerance"])


@dataclass(frozen=True)
class ValidationMetrics:
    """COCO metrics of the exported file on a split (`detnas eval --model`'s, by name) and the boxes they are over."""

    metrics: dict[str, float]
    annotations: int

    @property
    def ap(self) -> float:
        return self.metrics["AP"]

    @property
    def ap50(self) -> float:
        return self.metrics["AP50"]

    @property
    def images(self) -> int:
        return int(self.metrics["images"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "annotations": self.annotations}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationMetrics:
        return cls({k: float(v) for k, v in data.items() if k != "annotations"}, data["annotations"])


@dataclass(frozen=True)
class ReleasedRow:
    """The released DetNAS arch of the space (compact choices), evaluated and timed as the search's candidates."""

    name: str
    arch: str
    ap: float
    latency_ms: float
    meets_target: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "AP": self.ap, "latency_ms": self.latency_ms,
                "meets_target": self.meets_target}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleasedRow:
        return cls(data["name"], data["arch"], data["AP"], data["latency_ms"], data["meets_target"])


@dataclass(frozen=True)
class Versus:
    """The winner's AP against the search's first generation (uniformly random archs, evaluated the same way) and
    the released arch (None where the space has none)."""

    winner_ap: float
    random_count: int
    random_median_ap: float | None
    random_best_ap: float | None
    released: ReleasedRow | None

    @classmethod
    def of(cls, candidates: list[Candidate], best: Candidate, released: ReleasedRow | None) -> Versus:
        first = [r.metrics["AP"] for r in candidates if r.generation == 0]
        return cls(best.metrics["AP"], len(first), statistics.median(first) if first else None,
                   max(first) if first else None, released)

    def to_dict(self) -> dict[str, Any]:
        return {"winner_AP": self.winner_ap, "random_count": self.random_count, "random_median_AP": self.random_median_ap,
                "random_best_AP": self.random_best_ap, "released": None if self.released is None else self.released.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Versus:
        released = None if data["released"] is None else ReleasedRow.from_dict(data["released"])
        return cls(data["winner_AP"], data["random_count"], data["random_median_AP"], data["random_best_AP"], released)


@dataclass(frozen=True)
class LatencySpread(JsonRecord):
    """How far apart the candidates' latencies are (`spread`: max - min over the median), against how noisy one
    measurement is (their median CV)."""

    min_ms: float
    max_ms: float
    median_ms: float
    spread: float
    median_cv: float

    @classmethod
    def of(cls, candidates: list[Candidate]) -> LatencySpread:
        medians = [r.latency.median_ms for r in candidates]
        cvs = [r.latency.stats.cv for r in candidates if r.latency.stats is not None]
        middle = statistics.median(medians)
        return cls(min(medians), max(medians), middle, (max(medians) - min(medians)) / middle,
                   statistics.median(cvs) if cvs else float("nan"))

    @property
    def beyond_noise(self) -> bool:
        """Candidates differ by more than twice the measurement noise, so the search's latency ranking means something."""
        return self.spread > 2 * self.median_cv


@dataclass(frozen=True)
class ExportSummary:
    """The shipped ONNX file's node count and its parity check, as the export reports it (`ParityReport.to_dict`)."""

    nodes: int
    parity: dict[str, Any] | None

    @property
    def parity_line(self) -> str:
        return self.parity["summary"] if self.parity else "not checked"

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "parity": self.parity}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportSummary:
        return cls(data["nodes"], data["parity"])


@dataclass(frozen=True)
class BenchmarkSummary:
    """The shipped detector benchmarked at its input `size` (network + NMS, ONNX Runtime CPU, batch 1) beside the
    search's fresh figure of it (`searched_ms` at `searched_scope`; `searched_share` is their ratio)."""

    median_ms: float
    p90_ms: float
    cv: float
    images_per_s: float
    size: tuple[int, int]
    searched_ms: float
    searched_scope: str
    searched_share: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkSummary:
        return cls(**{**data, "size": tuple(data["size"])})


@dataclass(frozen=True)
class MainJobSummary:
    """What the main job found and shipped (summary.json): the winner and the target it was searched under, each
    target's row, the shipped target's front, the accuracy of what ships, the comparison with random and released
    archs, the latency spread, the export's parity, the benchmark, each step's seconds and the plan."""

    arch: Arch
    latency_target_ms: float
    latency_scope: str
    targets: dict[str, TargetRow]
    front_span: FrontSpan
    search_best: Candidate
    shipped: ShippedAccuracy
    onnx_val: ValidationMetrics
    versus: Versus
    latency_spread: LatencySpread
    export: ExportSummary
    benchmark: BenchmarkSummary
    seconds: dict[str, float]
    plan: PlanFields

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "latency_target_ms": self.latency_target_ms,
                "latency_scope": self.latency_scope, "targets": {k: v.to_dict() for k, v in self.targets.items()},
                "front_span": self.front_span.to_dict(), "search_best": self.search_best.to_json(),
                "shipped": self.shipped.to_dict(), "onnx_val": self.onnx_val.to_dict(), "versus": self.versus.to_dict(),
                "latency_spread": self.latency_spread.to_dict(), "export": self.export.to_dict(),
                "benchmark": self.benchmark.to_dict(), "seconds": dict(self.seconds), "plan": asdict(self.plan)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any], plan: PlanFields) -> MainJobSummary:
        """The record of a summary.json as `to_dict` (and every main job before the record) wrote it, with its
        `plan` read by the plan's own record (`MainJobPlan.from_dict(data["plan"])`)."""
        return cls(Arch.from_dict(data["arch"], "summary.json arch"), data["latency_target_ms"], data["latency_scope"],
                   {k: TargetRow.from_dict(v) for k, v in data["targets"].items()}, FrontSpan.from_dict(data["front_span"]),
                   Candidate.from_json(data["search_best"]), ShippedAccuracy.from_dict(data["shipped"]),
                   ValidationMetrics.from_dict(data["onnx_val"]), Versus.from_dict(data["versus"]),
                   LatencySpread.from_dict(data["latency_spread"]), ExportSummary.from_dict(data["export"]),
                   BenchmarkSummary.from_dict(data["benchmark"]), dict(data["seconds"]), plan)

    def highlights(self) -> list[str]:
        """The lines `detnas demo` ends with: the shipped file's accuracy, its parity, each target's verdict."""
        val, shipped = self.onnx_val, self.shipped
        lines = [f"exported detector on the demo validation split: AP50 {val.ap50:.3f}, AP@[.5:.95] {val.ap:.3f}; "
                 f"search-validation AP: journal {shipped.journal_ap:.4f}, shipped weights {shipped.weights_ap:.4f}, "
                 f"ONNX {shipped.onnx_ap:.4f}", f"parity: {self.export.parity_line}"]
        for name, row in self.targets.items():  # one search, one winner per target, each timed afresh
            span = "" if row.front_ratio is None else f" spanning {row.front_ratio:.2f}x {self.latency_scope} latency"
            lines.append(f"target {name}: {row.verdict}; front of {row.front} candidates{span}")
        return lines

    def report(self, files: dict[str, Path], out: Path) -> str:
        """report.md: what won, against what, how accurate the shipped file is, how fast, and where the files are."""
        best, shipped, val, versus = self.search_best, self.shipped, self.onnx_val, self.versus
        bench, spread, released = self.benchmark, self.latency_spread, self.versus.released
        scope, front = self.latency_scope, self.front_span
        size = "x".join(map(str, bench.size))
        lines = [
            "# detnas main job", "",
            f"Winner: `{self.arch.compact()}` (space {self.arch.space.name}), generation {best.generation}, "
            f"{scope} latency {best.latency.median_ms:.3f} ms against a target of {self.latency_target_ms} ms "
            f"(ONNX Runtime CPU; it runs at {size} px, its input-size gene's share of the demo's "
            f"{self.plan.det_size} px).", "",
            f"Pareto front of the {SHIPPED_TARGET} target (`search/pareto.{SHIPPED_TARGET}.png`): {front.members} "
            f"candidates from {_ms(front.fastest_ms)} (`{front.fastest}`) to {_ms(front.slowest_ms)} "
            f"(`{front.slowest}`), a latency span of **{_ratio(front.ratio)}** at {scope}.", "",
            "## Accuracy", "",
            f"- **Exported file on the demo validation split** ({val.images} images, {val.annotations} boxes, "
            f"`detnas eval --model`): AP50 **{val.ap50:.3f}**, AP@[.5:.95] **{val.ap:.3f}**.",
            f"- What ships is what was scored, on the search-validation split ({shipped.images} images): journal AP "
            f"{shipped.journal_ap:.4f}, shipped weights {shipped.weights_ap:.4f}, ONNX file {shipped.onnx_ap:.4f} "
            f"(tolerance {shipped.tolerance}: {'within' if shipped.within_tolerance else 'OUTSIDE'}).",
            f"- Winner vs random architectures evaluated the same way (the search's first generation is uniformly "
            f"random, {versus.random_count} archs): winner AP {versus.winner_ap:.3f}, random median "
            f"{_ap(versus.random_median_ap)}, best random {_ap(versus.random_best_ap)} (search-validation AP of the "
            "supernet paths, BN recalibrated).",
        ]
        if released:
            lines.append(f"- Released DetNAS arch {released.name} (`{released.arch}`), same evaluation: AP "
                         f"{released.ap:.3f}, {scope} latency {released.latency_ms:.3f} ms "
                         f"({'meets' if released.meets_target else 'does not meet'} the target).")
        lines += [
            "", "## Speed (ONNX Runtime CPU, batch 1, a shared and busy machine)", "",
            f"- Shipped detector (network + NMS) at {size} px: median {bench.median_ms:.2f} ms, p90 "
            f"{bench.p90_ms:.2f} ms, {bench.images_per_s:.1f} images/s (CV {bench.cv:.1%}); the search timed it "
            f"afresh at {bench.searched_scope}: {bench.searched_ms:.2f} ms.",
            f"- Candidates' {scope} latencies span {spread.min_ms:.3f}-{spread.max_ms:.3f} ms, a spread of "
            f"{spread.spread:.0%} of their median, against a median measurement CV of {spread.median_cv:.1%}: "
            + ("candidates differ by more than the noise." if spread.beyond_noise else
               "candidates do NOT differ clearly beyond the measurement noise, so the latency ranking is weak."),
            "", "## Targets (one search, both winners timed afresh)", "",
            *[f"- {name} ({row.latency_ms:g} ms): winner `{row.arch.compact() if row.arch else '-'}`, AP "
              f"{_ap(row.ap)}, {scope} {_ms(row.search_ms)} in the search, {_ms(row.fresh_ms)} fresh: "
              f"{'meets' if row.meets_target else 'does NOT meet'} it; front of {row.front} candidates spanning "
              f"{_ratio(row.front_ratio)} (`search/pareto.{name}.png`)" for name, row in self.targets.items()],
            "", "## Checks", "",
            f"- ONNX parity: {self.export.parity_line}",
            "", "## Plots", "", *[f"![Pareto {name}](search/pareto.{name}.png)" for name in self.targets], "",
            "![Convergence](search/convergence.png)", "",
            "![Predictions](predict/grid.png)", "",
            "| step | seconds |", "|---|---|",
            *[f"| {name} | {sec} |" for name, sec in self.seconds.items()], "",
            "Files:", *[f"- {name}: `{path.relative_to(out)}`" for name, path in files.items()], "",
            "The demo data are generated shapes: the numbers show the pipeline works, not what DetNAS reaches on COCO.",
        ]
        return "\n".join(lines) + "\n"


def _ap(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"
