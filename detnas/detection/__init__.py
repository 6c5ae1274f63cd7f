"""Detectors around DetNAS backbones: torchvision FPN Faster R-CNN and RetinaNet.

Names are resolved lazily (as in detnas.export), so a command that only reads a default from this package, e.g.
the BN recalibration sizes of `detnas export --help`, does not import torchvision.
"""

from __future__ import annotations

from detnas.lazy import lazy_exports

_EXPORTS = {
    "FPN_CHANNELS": "detnas.detection.backbone",
    "DetectionBackbone": "detnas.detection.backbone",
    "DETECTOR_KINDS": "detnas.detection.build",
    "build_detector": "detnas.detection.build",
    "convert_sync_bn": "detnas.detection.build",
    "detector_style": "detnas.detection.build",
    "set_arch": "detnas.detection.build",
    "LoadedDetector": "detnas.detection.load",
    "load_detection_checkpoint": "detnas.detection.load",
    "load_detector": "detnas.detection.load",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("detnas.detection", _EXPORTS)
