"""The real `AccuracyEvaluator`: COCO AP of one path of a detection supernet, the DetNAS way.

Per candidate: materialise the path as a standalone detector (the supernet is never modified), re-estimate
every BN's statistics on training images, then COCO-evaluate on the search-validation split.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detnas.arch import Arch
from detnas.checkpoint import checkpoint_paths
from detnas.errors import DetnasError
from detnas.io import file_sha256
from detnas.pixels import PixelConvention
from detnas.search.bn import detnas_batches, recalibrate_bn
from detnas.space import SearchSpace, register_space
from detnas.supernet import materialize

MAX_CACHED_BN_IMAGES = 256
BN_IMAGES = 4000  # training images a path's BN statistics are re-estimated on (DetNAS: 4000)
BN_BATCH = 8


@dataclass
class SupernetDetector:
    """A detection supernet checkpoint, loaded: the detector, its space and what its sidecar says."""

    detector: nn.Module
    space: SearchSpace
    detector_kind: str  # "fpn" or "retinanet"
    num_classes: int  # K + 1, as the detector was built
    pixels: PixelConvention
    min_size: int
    max_size: int
    classes: list[str]
    digest: str  # identifies the weights in the journal configuration
    style: str = "torchvision"  # the recipe's detector style; "detnas" supernets get the official BN recalibration

    @classmethod
    def load(cls, path: str | Path, min_size: int | None = None, max_size: int | None = None,
             proposals: int | None = None) -> SupernetDetector:
        """Read a `supernet-det` checkpoint; a classification or child checkpoint is a one-line error.

        `proposals` caps the RPN's test-time proposals of an FPN detector (torchvision and DetNAS: 1000); the
        4-conv box head runs on each, so a CPU search may lower it (the same for every candidate).
        """
        from detnas.detection import load_detection_checkpoint

        loaded = load_detection_checkpoint(path, min_size=min_size, max_size=max_size, proposals=proposals,
                                           accept=("supernet-det",), needed_by="the search")
        return cls(loaded.detector, register_space(loaded.space), loaded.detector_kind, loaded.num_classes,
                   loaded.pixels, loaded.min_size, loaded.max_size, loaded.classes,
                   file_sha256(checkpoint_paths(path)[0])[:16], loaded.style)

    def require_classes(self, dataset: Any, path: str | Path) -> None:
        """A data set scored or recalibrated on this supernet must name its classes in the same order."""
        if list(dataset.classes) != list(self.classes):
            raise DetnasError(f"{path}: its {len(dataset.classes)} classes differ from the supernet checkpoint's "
                              f"{len(self.classes)}; use the split the supernet was fine-tuned with")

    def materialize(self, arch: Arch) -> nn.Module:
        """A standalone detector of `arch`: the path cut out of the supernet body, copies of FPN and heads.

        Deep-copying the detector with the supernet body mapped to the materialised child (copy's memo) gives
        exactly `build_detector(kind, child)` with the trained weights, without re-initialising ~15M head
        parameters per candidate; the supernet itself is never touched. An elastic supernet's path is a slice of
        its widest weights, copied into the path's own plain detector (`extract_child`).
        """
        from detnas.detection.elastic import ElasticDetector, extract_child

        if isinstance(self.detector, ElasticDetector):
            return extract_child(self.detector, arch).eval()
        supernet_body = self.detector.backbone.body
        child = copy.deepcopy(self.detector, memo={id(supernet_body): materialize(supernet_body, arch)})
        return child.eval()


class BnRecalibration:
    """A path's detector with its BN statistics re-estimated on `bn_images` training images: the supernet's running
    statistics mix every path, so each path's must be its own before it is scored or shipped."""

    def __init__(self, supernet: SupernetDetector, bn_set: Any, bn_images: int = BN_IMAGES, bn_batch: int = BN_BATCH,
                 device: str = "cpu") -> None:
        if len(bn_set) == 0:
            raise DetnasError(f"empty data set ({bn_set.source}); BN recalibration needs training images")
        self.supernet, self.bn_set = supernet, bn_set
        self.bn_count = min(bn_images, len(bn_set))
        self.bn_batch, self.device = bn_batch, torch.device(device)
        self._bn_cache: list[list[torch.Tensor]] | None = None

    def _read_bn_batches(self) -> Iterator[list[torch.Tensor]]:
        pixels = self.supernet.pixels
        for first in range(0, self.bn_count, self.bn_batch):
            yield [pixels.to_model_input(self.bn_set.load_image(i)).to(self.device)
                   for i in range(first, min(first + self.bn_batch, self.bn_count))]

    def _bn_batches(self) -> Iterable[list[torch.Tensor]]:
        """The first `bn_count` training images as model inputs; decoded once and kept when they are few."""
        if self.bn_count > MAX_CACHED_BN_IMAGES:
            return self._read_bn_batches()
        if self._bn_cache is None:
            self._bn_cache = list(self._read_bn_batches())
        return self._bn_cache

    def recalibrate(self, detector: nn.Module) -> None:
        """A supernet trained in the official detector style is recalibrated as the official search does (training
        mode with targets, shuffled images one at a time, momentum 0.1); others by the exact cumulative average."""
        if self.supernet.style == "detnas":
            batches = detnas_batches(self.bn_set, self.bn_count, self.supernet.pixels, self.device)
            recalibrate_bn(detector, batches, mode="detnas")
        else:
            recalibrate_bn(detector, self._bn_batches())

    def calibrated(self, arch: Arch) -> nn.Module:
        """The detector the search scores for `arch` (materialised, BN re-estimated on the same images in the same
        batches), in eval mode: what ships a search winner, so the shipped weights are the ones the journal scored."""
        detector = self.supernet.materialize(arch).to(self.device)
        self.recalibrate(detector)
        return detector


def recalibrated_path(supernet_path: str | Path, arch: Arch, bn_ann: Path, bn_images: Path, bn_count: int = BN_IMAGES,
                      bn_batch: int = BN_BATCH, proposals: int | None = None) -> nn.Module:
    """`arch`'s detector cut from a detection supernet checkpoint with its BN statistics re-estimated on the
    training split as the search does: with the search's count and batch, the detector it scored."""
    from detnas.data import CocoDetection

    supernet = SupernetDetector.load(supernet_path, proposals=proposals)
    data = CocoDetection(bn_ann, bn_images)
    supernet.require_classes(data, bn_ann)
    return BnRecalibration(supernet, data, bn_count, bn_batch).calibrated(arch)


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

