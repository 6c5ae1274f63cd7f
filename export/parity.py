"""Parity of two detectors on the same inputs: every detection must have a partner with the same label, a box
within `box_tol` pixels and a score within `score_tol`.

Detections are matched, not compared row by row: two scores that differ in the 7th digit may swap places in
the sorted output without either model being wrong. Count differences, unmatched detections and the largest
differences are all reported, so a failure says by how much.

A comparison over nothing proves nothing: parity fails below `min_detections` compared detections, and the
raw head outputs before NMS (`TensorParity`) are compared too, so a graph that changes them while yielding no
detections is caught. Tolerances come from float32 rounding relative to each value's magnitude (`rounding_tol`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from detnas.errors import DetnasError

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [n, 4], scores [n], labels [n]

BOX_TOL = 1e-3
SCORE_TOL = 1e-4
MIN_DETECTIONS = 20
FLOAT32_EPS = float(np.finfo(np.float32).eps)
ROUNDING_ULPS = 1024  # float32 rounding accumulated through a deep network, in units of the value's last place
MAX_UNMATCHED_ROWS = 0.05  # RoI rows whose proposal a float32 near-tie swapped (see `compare_rows`)


def rounding_tol(magnitude: float) -> float:
    """The largest difference float32 rounding explains for values of `magnitude` (2^10 ulps: ~1.2e-4 relative).

    Rounding errors grow with a value's magnitude and with the number of accumulated operations, not as a fixed
    number of pixels; a wrong graph (a changed op, swapped weights) moves values by percent, far beyond this."""
    return ROUNDING_ULPS * FLOAT32_EPS * max(float(magnitude), 1.0)


@dataclass
class TensorParity:
    """One raw head output (before NMS) of the candidate vs the reference: `items` values or rows compared."""

    name: str
    items: int
    max_diff: float
    tol: float
    unmatched: int = 0  # rows without a partner within `tol` (RoI rows only)
    unmatched_diff: float = 0.0  # how far the worst unmatched row is from its nearest candidate row

    @property
    def passed(self) -> bool:
        return self.items > 0 and self.max_diff <= self.tol and self.unmatched <= MAX_UNMATCHED_ROWS * self.items

    def summary(self) -> str:
        text = f"{self.name}: {self.items} compared, max diff {self.max_diff:.3g} (tol {self.tol:.3g})"
        return text + (f", {self.unmatched} rows unmatched (off by up to {self.unmatched_diff:.3g})" if self.unmatched
                       else "")


@dataclass
class ParityReport:
    """The outcome of `compare`; `passed` is the verdict, the rest says by how much."""

    reference: str
    candidate: str
    images: int
    detections: int
    max_box_diff: float
    max_score_diff: float
    unmatched: int
    count_mismatches: list[tuple[int, int, int]] = field(default_factory=list)  # (image, reference n, candidate n)
    box_tol: float = BOX_TOL
    score_tol: float = SCORE_TOL
    min_detections: int = 0  # `check` refuses a comparison over fewer detections
    tensors: list[TensorParity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (not self.unmatched and not self.count_mismatches and self.max_box_diff <= self.box_tol
                and self.max_score_diff <= self.score_tol and self.detections >= self.min_detections
                and all(t.passed for t in self.tensors)
                and (self.detections > 0 or bool(self.tensors)))  # never a pass over nothing compared

    def summary(self) -> str:
        required = f" (at least {self.min_detections} required)" if self.min_detections else ""
        text = (f"{self.candidate} vs {self.reference} on {self.images} images, {self.detections} detections "
                f"compared{required}: max box diff {self.max_box_diff:.3g} px "
                f"(tol {self.box_tol:.3g}), max score diff {self.max_score_diff:.3g} (tol {self.score_tol:.3g}), "
                f"unmatched {self.unmatched}")
        if self.count_mismatches:
            image, ref_n, cand_n = self.count_mismatches[0]
            text += (f", detection counts differ on {len(self.count_mismatches)} images (first: image {image} "
                     f"has {ref_n} vs {cand_n})")
        if self.tensors:
            text += "; before NMS: " + "; ".join(t.summary() for t in self.tensors)
        return text

    def check(self) -> ParityReport:
        """Raise a one-line DetnasError unless the parity holds."""
        if not self.passed:
            raise DetnasError(f"parity FAILED: {self.summary()}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "summary": self.summary()}


def _match(ref: Detections, cand: Detections, box_tol: float, score_tol: float) -> tuple[float, float, int]:
    """Greedy matching in reference score order; returns (max box diff, max score diff, unmatched count)."""
    ref_boxes, ref_scores, ref_labels = ref
    cand_boxes, cand_scores, cand_labels = cand
    free = np.ones(len(cand_scores), dtype=bool)
    max_box = max_score = 0.0
    unmatched = 0
    for i in np.argsort(-ref_scores, kind="stable"):
        options = np.flatnonzero(free & (cand_labels == ref_labels[i]))
        if options.size == 0:
            unmatched += 1
            continue
        box_diff = np.abs(cand_boxes[options] - ref_boxes[i]).max(axis=1)
        score_diff = np.abs(cand_scores[options] - ref_scores[i])
        best = int(np.argmin(box_diff / box_tol + score_diff / score_tol))
        free[options[best]] = False
        max_box, max_score = max(max_box, float(box_diff[best])), max(max_score, float(score_diff[best]))
    return max_box, max_score, unmatched + int(free.sum())


def compare(reference: list[Detections], candidate: list[Detections], reference_name: str, candidate_name: str,
            box_tol: float = BOX_TOL, score_tol: float = SCORE_TOL, min_detections: int = 0) -> ParityReport:
    """Match the two detectors' outputs image by image (see the module docstring)."""
    if len(reference) != len(candidate):
        raise DetnasError(f"parity: {len(reference)} reference results but {len(candidate)} candidate results")
    report = ParityReport(reference_name, candidate_name, len(reference), 0, 0.0, 0.0, 0, [], box_tol, score_tol,
                          min_detections)
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        report.detections += len(ref[1])
        if len(ref[1]) != len(cand[1]):
            report.count_mismatches.append((index, len(ref[1]), len(cand[1])))
        box, score, unmatched = _match(ref, cand, box_tol, score_tol)
        report.max_box_diff = max(report.max_box_diff, box)
        report.max_score_diff = max(report.max_score_diff, score)
        report.unmatched += unmatched
    return report


def compare_values(name: str, reference: np.ndarray, candidate: np.ndarray) -> TensorParity:
    """A dense head output (one value per anchor and level): element by element, tolerance from its magnitude."""
    if reference.shape != candidate.shape:
        return TensorParity(f"{name} (shape {list(candidate.shape)} vs {list(reference.shape)})", reference.size,
                            float("inf"), 0.0)
    diff = float(np.abs(candidate.astype(np.float64) - reference).max()) if reference.size else 0.0
    return TensorParity(name, int(reference.size), diff, rounding_tol(float(np.abs(reference).max(initial=0.0))))


def compare_rows(name: str, reference: np.ndarray, candidate: np.ndarray) -> TensorParity:
    """Per-RoI rows (class logits, box deltas): each reference row is matched to its nearest candidate row, since a
    proposal whose objectness ties another's to float32 rounding may swap places or membership; a few such rows
    are tolerated (`MAX_UNMATCHED_ROWS`), a changed graph moves every row."""
    tol = rounding_tol(float(np.abs(reference).max(initial=0.0)))
    if reference.ndim != 2 or candidate.ndim != 2 or reference.shape[1] != candidate.shape[1]:
        return TensorParity(f"{name} (shape {list(candidate.shape)} vs {list(reference.shape)})", len(reference),
                            float("inf"), tol)
    distance = np.abs(reference[:, None, :] - candidate[None, :, :].astype(np.float64)).max(axis=2)
    free = np.ones(len(candidate), dtype=bool)
    max_diff = worst = 0.0
    unmatched = len(reference) - min(len(reference), len(candidate))
    for row in np.argsort(distance.min(axis=1, initial=np.inf), kind="stable"):
        options = np.flatnonzero(free)
        if options.size == 0:
            break
        best = options[int(np.argmin(distance[row, options]))]
        if distance[row, best] > tol:
            unmatched, worst = unmatched + 1, max(worst, float(distance[row, best]))
            continue
        free[best] = False
        max_diff = max(max_diff, float(distance[row, best]))
    return TensorParity(name, len(reference), max_diff, tol, unmatched, worst)
