"""Datasets (COCO, VOC, ImageFolder), detection transforms, the paper's split and the embedded demo data."""

from detnas.data.classification import image_folder
from detnas.data.coco import CocoDetection, read_coco_json
from detnas.data.demo import DemoDetection, make_demo_classification, make_demo_detection
from detnas.data.detection import DetectionDataset, ImageRecord, collate
from detnas.data.split import split_coco
from detnas.data.transforms import Compose, RandomHorizontalFlip, Resize, detection_transforms
from detnas.data.voc import VOC_CLASSES, VocDetection

__all__ = [
    "VOC_CLASSES", "CocoDetection", "Compose", "DemoDetection", "DetectionDataset", "ImageRecord",
    "RandomHorizontalFlip", "Resize", "VocDetection", "collate", "detection_transforms", "image_folder",
    "make_demo_classification", "make_demo_detection", "read_coco_json", "split_coco",
]
