"""Parity of a reduced-precision file: the share of detections matched within the precision's tolerance, both ways
(of the FP32 ONNX file's detections, and of the reduced file's own: a file that keeps every FP32 detection but adds
as many spurious ones is no match); never judged over zero detections."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from detnas.errors import DetnasError
from detnas.export.parity import Detections


@dataclass(frozen=True)
class Tolerance:
    """How close a reduced-precision detection must be to its FP32 partner (same label, box IoU at least `min_iou`,
    score within `score`), and the share of detections that must find one, both ways. IoU, not pixels: an absolute pixel
    bound is loose on large boxes and strict on small ones, and failed INT8 files of a 128 px detector whose AP was
    unchanged."""

    min_iou: float
    score: float
    min_share: float


#: FP16 keeps ~3 significant digits through the network, INT8 ~2; both keep post-processing in FP32, so a detection
#: near the score threshold or an NMS tie may flip: judged by the share of detections matched within tolerance.
#: Measured (share of the FP32 ONNX detections at these tolerances, before the share was two-sided): FP16 0.96-0.98
#: on the demo's winner and a coco128-trained COCO-FPN-300M; INT8 0.62-0.71 on files whose AP held (drop -0.001 and
#: 0.018), 0.23-0.24 on files calibrated on images the detector never fit (AP drop 0.29-0.36).
#: TF32 (a TensorRT engine's FP32 layers when asked for) rounds each multiply's inputs to FP16's 10-bit mantissa and
#: accumulates in FP32: FP16's bounds.
TOLERANCES = {"fp16": Tolerance(min_iou=0.9, score=0.01, min_share=0.9),
              "tf32": Tolerance(min_iou=0.9, score=0.01, min_share=0.9),
              "int8": Tolerance(min_iou=0.5, score=0.1, min_share=0.5)}


@dataclass
class PrecisionParity:
    """The reduced file vs the FP32 ONNX on the same images: `matched` pairs of the same label within the
    precision's tolerance, out of the FP32 file's `detections` and the reduced file's `candidates`."""

    precision: str
    images: int
    detections: int
    matched: int
    tolerance: Tolerance
    candidates: int

    @property
    def share(self) -> float:
        """The smaller of the two matched shares (of the FP32 detections, of the reduced file's)."""
        return min(self.matched / self.detections, self.matched / self.candidates if self.candidates else 0.0)

    @property
    def passed(self) -> bool:
        return self.share >= self.tolerance.min_share

    def summary(self) -> str:
        t = self.tolerance
        return (f"{self.precision} vs FP32 ONNX on {self.images} images: {self.matched} matched of {self.detections} "
                f"FP32 and {self.candidates} {self.precision} detections ({100 * self.share:.1f} % the smaller "
                f"share, need {100 * t.min_share:.0f} %) with box IoU >= {t.min_iou:g} and score within {t.score:g}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share, "passed": self.passed}


def _matched(ref: Detections, cand: Detections, tol: Tolerance) -> int:
    """Greedy in FP32 score order: each FP32 detection takes the free candidate of its label with the highest IoU
    within tolerance."""
    from torchvision.ops import box_iou

    free = np.ones(len(cand[1]), dtype=bool)
    if not len(cand[1]) or not len(ref[1]):
        return 0
    overlap = box_iou(torch.as_tensor(ref[0], dtype=torch.float64), torch.as_tensor(cand[0], dtype=torch.float64)).numpy()
    matched = 0
    for i in np.argsort(-ref[1], kind="stable"):
        ok = free & (cand[2] == ref[2][i]) & (overlap[i] >= tol.min_iou) & (np.abs(cand[1] - ref[1][i]) <= tol.score)
        if ok.any():
            free[np.flatnonzero(ok)[np.argmax(overlap[i][ok])]] = False
            matched += 1
    return matched


def precision_parity(reference: list[Detections], candidate: list[Detections], precision: str) -> PrecisionParity:
    """Compare per-image detections; zero FP32 detections is an error, not a pass."""
    detections = sum(len(r[1]) for r in reference)
    if detections == 0:
        raise DetnasError(f"{precision} parity compared 0 detections: the FP32 model detects nothing on the "
                          f"{len(reference)} parity images; pass --parity-images images it detects objects on")
    tol = TOLERANCES[precision]
    matched = sum(_matched(r, c, tol) for r, c in zip(reference, candidate))
    candidates = sum(len(c[1]) for c in candidate)
    return PrecisionParity(precision, len(reference), detections, matched, tol, candidates)

