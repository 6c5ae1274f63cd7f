"""Detectors around DetNAS backbones: torchvision FPN Faster R-CNN and RetinaNet."""

from detnas.detection.backbone import FPN_CHANNELS, DetectionBackbone
from detnas.detection.build import DETECTOR_KINDS, build_detector, convert_sync_bn, detector_style, set_arch
from detnas.detection.load import LoadedDetector, load_detection_checkpoint, load_detector

__all__ = ["DETECTOR_KINDS", "FPN_CHANNELS", "DetectionBackbone", "LoadedDetector", "build_detector", "convert_sync_bn",
           "detector_style", "load_detection_checkpoint", "load_detector", "set_arch"]
