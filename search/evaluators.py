"""The real `AccuracyEvaluator`: COCO AP of one path of a detection supernet, the DetNAS way.

Per candidate: materialise the path as a standalone detector (the supernet is never modified), re-estimate
every BN's statistics on training images, then COCO-evaluate on the search-validation split.
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from detnas.arch import Arch
from detnas.detection.recalibrate import BN_BATCH, BN_IMAGES, BnRecalibration
from detnas.detection.supernet_path import SupernetDetector
from detnas.errors import DetnasError


class DetectionAP:
    """COCO metrics of a path: materialise, recalibrate BN on `bn_images` training images, evaluate."""

    def __init__(self, supernet: SupernetDetector, bn_set: Any, val_set: Any, bn_images: int = BN_IMAGES,
                 bn_batch: int = BN_BATCH, val_images: int | None = None, device: str = "cpu") -> None:
        if len(bn_set) == 0 or len(val_set) == 0:
            raise DetnasError(f"empty data set ({bn_set.source if len(bn_set) == 0 else val_set.source}); "
                              "BN recalibration and evaluation both need images")
        self.bn = BnRecalibration(supernet, bn_set, bn_images, bn_batch, device)
        self.supernet, self.val_set, self.val_images, self.device = supernet, val_set, val_images, self.bn.device
        self.last_timing: dict[str, float] = {}
        self.calls = 0

    def calibrated(self, arch: Arch) -> nn.Module:
        """`BnRecalibration.calibrated`: the detector `evaluate` scores."""
        return self.bn.calibrated(arch)

    def evaluate(self, arch: Arch) -> dict[str, float]:
        from detnas.evaluation import METRICS, detector_predictor, evaluate

        self.calls += 1
        start = time.perf_counter()
        detector = self.supernet.materialize(arch).to(self.device)
        materialized = time.perf_counter()
        self.bn.recalibrate(detector)
        calibrated = time.perf_counter()
        metrics = evaluate(detector_predictor(detector, self.device), self.val_set, max_images=self.val_images)
        self.last_timing = {"materialize_s": materialized - start, "bn_s": calibrated - materialized,
                            "eval_s": time.perf_counter() - calibrated}
        return {k: metrics[k] for k in METRICS}

