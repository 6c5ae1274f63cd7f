"""Parity of two detectors on the same inputs: every detection must have a partner with the same label, a box
within `box_tol` pixels and a score within `score_tol`.

Detections are matched, not compared row by row: two scores that differ in the 7th digit may swap places in
the sorted output without either model being wrong. Count differences, unmatched detections and the largest
differences are all reported, so a failure says by how much.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from detnas.errors import DetnasError

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [n, 4], scores [n], labels [n]

BOX_TOL = 1e-3
SCORE_TOL = 1e-4


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

    @property
    def passed(self) -> bool:
        return (not self.unmatched and not self.count_mismatches and self.max_box_diff <= self.box_tol
                and self.max_score_diff <= self.score_tol)

    def summary(self) -> str:
        text = (f"{self.candidate} vs {self.reference} on {self.images} images, {self.detections} detections: "
                f"max box diff {self.max_box_diff:.3g} px (tol {self.box_tol:g}), max score diff "
                f"{self.max_score_diff:.3g} (tol {self.score_tol:g}), unmatched {self.unmatched}")
        if self.count_mismatches:
            image, ref_n, cand_n = self.count_mismatches[0]
            text += (f", detection counts differ on {len(self.count_mismatches)} images (first: image {image} "
                     f"has {ref_n} vs {cand_n})")
        return text

    def check(self) -> ParityReport:
        """Raise a one-line DetnasError unless the parity holds."""
        if not self.passed:
            raise DetnasError(f"parity FAILED: {self.summary()}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


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
            box_tol: float = BOX_TOL, score_tol: float = SCORE_TOL) -> ParityReport:
    """Match the two detectors' outputs image by image (see the module docstring)."""
    if len(reference) != len(candidate):
        raise DetnasError(f"parity: {len(reference)} reference results but {len(candidate)} candidate results")
    report = ParityReport(reference_name, candidate_name, len(reference), 0, 0.0, 0.0, 0, [], box_tol, score_tol)
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        report.detections += len(ref[1])
        if len(ref[1]) != len(cand[1]):
            report.count_mismatches.append((index, len(ref[1]), len(cand[1])))
        box, score, unmatched = _match(ref, cand, box_tol, score_tol)
        report.max_box_diff = max(report.max_box_diff, box)
        report.max_score_diff = max(report.max_score_diff, score)
        report.unmatched += unmatched
    return report
