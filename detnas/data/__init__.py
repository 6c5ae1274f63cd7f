"""Datasets (COCO, VOC, ImageFolder), detection transforms, the paper's split and the embedded demo data."""

from detnas.data.coco import CocoDetection, read_coco_json
from detnas.data.detection import DetectionDataset, ImageRecord, collate
from detnas.data.transforms import Compose, RandomHorizontalFlip, Resize, detection_transforms

__all__ = [
    "CocoDetection", "Compose", "DetectionDataset", "ImageRecord", "RandomHorizontalFlip", "Resize", "collate",
    "detection_transforms", "read_coco_json",
]
