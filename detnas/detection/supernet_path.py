"""A detection supernet checkpoint, loaded, and the standalone detector of one of its paths: what the search scores
and what export ships from a supernet, so it sits in the core both use."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from detnas.arch import Arch
from detnas.checkpoint import checkpoint_paths
from detnas.errors import DetnasError
from detnas.io import file_sha256
from detnas.pixels import PixelConvention
from detnas.space import SearchSpace, register_space
from detnas.supernet import materialize


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
        parameters per candidate; the supernet itself is never touched.
        """
        supernet_body = self.detector.backbone.body
        child = copy.deepcopy(self.detector, memo={id(supernet_body): materialize(supernet_body, arch)})
        return child.eval()
