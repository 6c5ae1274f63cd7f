"""`build_detector`: torchvision FPN Faster R-CNN or RetinaNet around a DetNAS backbone, as in the paper.

Label convention: dataset labels are contiguous 1..K and 0 is background, so both detectors are built with
num_classes = K + 1 (RetinaNet never trains class 0 as positive; `detector_predictor` drops it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from detnas.arch import Arch
from detnas.detection.backbone import FPN_CHANNELS, DetectionBackbone
from detnas.errors import DetnasError
from detnas.pixels import DEFAULT_PIXELS, PixelConvention
from detnas.supernet import ChildNet, Supernet

DETECTOR_KINDS = ("fpn", "retinanet")
BOX_HEAD_CONVS = 4
BOX_HEAD_FC = 1024


def _faster_rcnn(backbone_net: Supernet | ChildNet, num_classes: int, **kw: Any) -> FasterRCNN:
    """P2-P6 from C2..C5 (P6 = max-pool of P5, RPN only); box head 4 conv + 1 FC with BN (DetNAS' head)."""
    backbone = DetectionBackbone(backbone_net, ["c2", "c3", "c4", "c5"], LastLevelMaxPool(), ["p6"])
    roi_pool = MultiScaleRoIAlign(featmap_names=["p2", "p3", "p4", "p5"], output_size=7, sampling_ratio=2)
    box_head = FastRCNNConvFCHead((FPN_CHANNELS, 7, 7), [FPN_CHANNELS] * BOX_HEAD_CONVS, [BOX_HEAD_FC],
                                  norm_layer=nn.BatchNorm2d)
    return FasterRCNN(backbone, box_roi_pool=roi_pool, box_head=box_head,
                      box_predictor=FastRCNNPredictor(BOX_HEAD_FC, num_classes), **kw)


def _retinanet(backbone_net: Supernet | ChildNet, num_classes: int, **kw: Any) -> RetinaNet:
    """P3-P7 from C3..C5; P6/P7 are stride-2 convs on P5 (torchvision's LastLevelP6P7)."""
    backbone = DetectionBackbone(backbone_net, ["c3", "c4", "c5"], LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS),
                                 ["p6", "p7"])
    return RetinaNet(backbone, num_classes=num_classes, **kw)


def build_detector(kind: str, backbone: Supernet | ChildNet, num_classes: int, min_size: int | tuple[int, ...] = 800,
                   max_size: int = 1333, pixels: PixelConvention = DEFAULT_PIXELS, **kw: Any) -> nn.Module:
    """A torchvision detector ("fpn" = FPN Faster R-CNN, "retinanet") around `backbone`.

    `backbone` is a `Supernet` (choose the path with `set_arch` before each forward) or a `ChildNet`, both built
    with num_classes=None. `num_classes` = K + 1 for a dataset with labels 1..K (0 = background). Images are
    given as `pixels.to_model_input(...)`; the detector normalises them with `pixels.mean/std` and resizes
    to short side `min_size`, long side <= `max_size`. Extra keyword arguments go to the torchvision class.
    """
    if kind not in DETECTOR_KINDS:
        raise DetnasError(f"detector kind '{kind}' is unknown; choose one of {', '.join(DETECTOR_KINDS)}")
    if num_classes < 2:
        raise DetnasError(f"num_classes={num_classes}: pass K + 1 (K dataset classes plus background), so >= 2")
    make = _faster_rcnn if kind == "fpn" else _retinanet
    detector = make(backbone, num_classes, min_size=min_size, max_size=max_size,
                    image_mean=list(pixels.mean), image_std=list(pixels.std), **kw)
    detector.detnas_kind = kind
    detector.pixels = pixels
    return detector


def set_arch(detector: nn.Module, arch: Arch) -> nn.Module:
    """Choose the supernet path the detector runs from now on (a no-op check for a fixed architecture)."""
    backbone = getattr(detector, "backbone", None)
    if not isinstance(backbone, DetectionBackbone):
        raise DetnasError("set_arch expects a detector made by build_detector")
    backbone.set_arch(arch)
    return detector


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """BN -> SyncBN when torch.distributed is running (DetNAS trains with synchronised BN); otherwise unchanged."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
