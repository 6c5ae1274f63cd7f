"""Shared by the export / predict tests: a tiny real detector whose scores are spread enough to detect.

A freshly initialised network in eval mode has BN running statistics of 0/1, which leaves all detection scores
at the head's prior; the helper re-estimates BN statistics on real images (as DetNAS does before evaluating a
path) and gives the classification head a He initialisation so there are many well-separated detections.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from detnas.arch import sample_arch
from detnas.checkpoint import save_checkpoint
from detnas.detection import build_detector
from detnas.export.preprocess import letterbox
from detnas.images import read_image
from detnas.pixels import DEFAULT_PIXELS, Normalize
from detnas.space import SearchSpace, register_space
from detnas.supernet import ChildNet

SIZE = 128
CLASSES = ["person", "bicycle", "car"]
CATEGORY_IDS = {1: 1, 2: 2, 3: 3}
TINY = SearchSpace("tiny-export-test", 8, (16, 32, 64, 128), (1, 1, 2, 1), 64)


def val_images(coco_mini: Path, count: int = 4) -> list[Path]:
    return sorted((coco_mini / "val2017").glob("*.jpg"))[:count]


def tiny_detector(kind: str, images: list[Path], seed: int = 0, proposals: int = 20) -> tuple[nn.Module, object]:
    register_space(TINY)
    torch.manual_seed(seed)
    arch = sample_arch(TINY, seed)
    budget = {"rpn_pre_nms_top_n_test": max(100, proposals), "rpn_post_nms_top_n_test": proposals} if kind == "fpn" \
        else {}
    detector = build_detector(kind, ChildNet(arch), len(CLASSES) + 1, SIZE, SIZE, **budget)
    if kind == "retinanet":
        for m in detector.head.classification_head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        nn.init.normal_(detector.head.classification_head.cls_logits.weight, 0.0, 0.02)
        nn.init.constant_(detector.head.classification_head.cls_logits.bias, -3.0)
    batch = torch.stack([letterbox(read_image(p), SIZE, SIZE, DEFAULT_PIXELS)[0] for p in images])
    for m in detector.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration pass
    detector.train()
    with torch.no_grad():
        detector.backbone(Normalize(DEFAULT_PIXELS)(batch))
    return detector.eval(), arch


def save_child_checkpoint(detector: nn.Module, arch, kind: str, path: Path) -> Path:
    meta = {"kind": "child-det", "space": TINY.to_dict(), "arch": arch.to_dict(), "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": CLASSES, "num_classes": len(CLASSES), "detector": kind,
            "label_to_cat_id": {str(k): v for k, v in CATEGORY_IDS.items()},
            "recipe": {"name": "test", "min_size": SIZE, "max_size": SIZE}}
    return save_checkpoint(path, detector.state_dict(), meta)
