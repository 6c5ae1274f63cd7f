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
MAX_UNMATCHED_ROWS = 0.05  # real RoI rows whose proposal a float32 near-tie swapped out (see `compare_rows`)


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
    unmatched_diff: float = 0.0  # the worst unmatched row's difference to the candidate row at its position

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


def compare_rows(name: str, reference: np.ndarray, candidate: np.ndarray, real: np.ndarray | None = None
                 ) -> TensorParity:
    """Per-RoI rows (class logits, box deltas): each reference row must have a partner candidate row within float32
    rounding; memory O(n·d), never all rows against all.

    `real` (a mask over the reference rows) leaves out the rows of padding proposals, which no detection comes from
    and which are arbitrary boxes that differ between runtimes (`DeployableDetector._proposals`): they were a third
    of the rows of a faithful 1,000-proposal export at 128 px, all 'unmatched'. Real rows keep their order in both
    runtimes except where two proposals' objectness ties to float32 rounding, which swaps them or, at the proposal
    cut, their membership; so rows are first matched in place, the rest to a free candidate row within `tol`
    (`_match_free`), and a few without a partner are tolerated (`MAX_UNMATCHED_ROWS`): a changed graph moves every
    row. An unmatched row's reported difference is to the candidate row at its own position."""
    tol = rounding_tol(float(np.abs(reference).max(initial=0.0)))
    if reference.ndim != 2 or candidate.ndim != 2 or reference.shape[1] != candidate.shape[1]:
        return TensorParity(f"{name} (shape {list(candidate.shape)} vs {list(reference.shape)})", len(reference),
                            float("inf"), tol)
    wanted = np.ones(len(reference), bool) if real is None else np.asarray(real, bool).ravel()
    if len(wanted) != len(reference):
        return TensorParity(f"{name} ({len(wanted)} RoI masks for {len(reference)} rows)", len(reference),
                            float("inf"), tol)
    in_place = np.full(len(reference), np.inf)  # each row's difference to the candidate row at its position
    for first in range(0, min(len(reference), len(candidate)), _CHUNK_ROWS):
        last = min(len(reference), len(candidate), first + _CHUNK_ROWS)
        in_place[first:last] = np.abs(reference[first:last] - candidate[first:last].astype(np.float64)).max(
            axis=1, initial=0.0)
    paired = wanted & (in_place <= tol)
    free = np.ones(len(candidate), bool)
    free[np.flatnonzero(paired)] = False
    rest = np.flatnonzero(wanted & ~paired)
    found = _match_free(reference[rest], candidate, free, tol)
    max_diff = max(float(in_place[paired].max(initial=0.0)), float(found[np.isfinite(found)].max(initial=0.0)))
    missed = rest[~np.isfinite(found)]
    return TensorParity(name, int(wanted.sum()), max_diff, tol, len(missed), float(in_place[missed].max(initial=0.0)))


_CHUNK_ROWS = 1024  # rows per block of a vectorised difference: memory _CHUNK_ROWS x d, whatever the row count


def _match_free(rows: np.ndarray, candidate: np.ndarray, free: np.ndarray, tol: float) -> np.ndarray:
    """Each of `rows` in turn takes the nearest `free` candidate row within `tol` (largest absolute difference);
    returns that difference per row, inf where none is left within `tol`.

    A hash by sort: keys are `_KEYS` projections whose weights sum to 1 in absolute value, so two rows within `tol`
    have every key within `tol`. Candidates are sorted by the most spread key, which bounds each search to a window;
    the other keys screen that window before any full row is compared (a wrong graph's rows mostly find it empty).
    Memory O(n·d) for any n."""
    out = np.full(len(rows), np.inf)
    if not len(rows):
        return out
    weights = np.random.default_rng(0).uniform(-1.0, 1.0, (candidate.shape[1], _KEYS))
    weights /= np.abs(weights).sum(axis=0)
    keys, row_keys = candidate.astype(np.float64) @ weights, rows @ weights
    spread = int(np.argmax(keys.std(axis=0)))
    order = np.argsort(keys[:, spread], kind="stable")
    sorted_keys = keys[order, spread]
    bounds = zip(np.searchsorted(sorted_keys, row_keys[:, spread] - tol, "left"),
                 np.searchsorted(sorted_keys, row_keys[:, spread] + tol, "right"))
    for i, (low, high) in enumerate(bounds):
        best, taken = np.inf, -1
        for first in range(int(low), int(high), _CHUNK_ROWS):
            window = order[first:min(int(high), first + _CHUNK_ROWS)]
            window = window[free[window] & (np.abs(keys[window] - row_keys[i]) <= tol).all(axis=1)]
            if window.size:
                diff = np.abs(candidate[window].astype(np.float64) - rows[i]).max(axis=1)
                j = int(np.argmin(diff))
                if diff[j] < best:
                    best, taken = float(diff[j]), int(window[j])
        if best <= tol:
            out[i], free[taken] = best, False
    return out


_KEYS = 8  # projections per row that screen candidates before a full comparison
