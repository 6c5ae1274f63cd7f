"""`build_detector`: torchvision FPN Faster R-CNN or RetinaNet around a DetNAS backbone, as in the paper.

Label convention: dataset labels are contiguous 1..K and 0 is background, so both detectors are built with
num_classes = K + 1 (RetinaNet never trains class 0 as positive; `detector_predictor` drops it).

Two styles: "torchvision" (its defaults; the cpu-* recipes) and "detnas", what the official code builds (the paper-*
recipes): BN after every FPN lateral and output conv of the FPN detector, RetinaNet's box coder weights, loss
normalisation and test settings of maskrcnn-benchmark, and BN momentum 0.01 in final detectors (0.1 in supernets). A
checkpoint's recipe records the style (`detector_style`), so loaders rebuild the same modules.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead, RetinaNetRegressionHead
from torchvision.ops import MultiScaleRoIAlign, sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from detnas.arch import Arch, DetectorPath, extreme_arch
from detnas.detection import deployable
from detnas.detection.backbone import FPN_CHANNELS, DetectionBackbone
from detnas.detection.kinds import DETECTOR_KINDS, DetectorKind, HeadOutput, detector_kind
from detnas.errors import DetnasError
from detnas.pixels import DEFAULT_PIXELS, PixelConvention
from detnas.sizes import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, path_sizes
from detnas.space import SearchSpace
from detnas.supernet import ChildNet, Supernet

DETECTOR_STYLES = ("torchvision", "detnas")
BOX_HEAD_CONVS = 4
BOX_HEAD_FC = 1024
# maskrcnn-benchmark's RetinaNet (the official DetNAS RetinaNet): box coder, BBOX_REG_BETA, NMS_TH, DETECTIONS_PER_IMG
RETINANET_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
RETINANET_SMOOTH_L1_BETA = 0.11
RETINANET_TEST = {"nms_thresh": 0.4, "detections_per_img": 100}
# official BN momentum: DistributedSyncBN's 0.01, raised to 0.1 for supernets ('search' backbones) and the search
BN_MOMENTUM_SUPERNET = 0.1
BN_MOMENTUM_FINAL = 0.01


class OfficialRetinaNetRegression(RetinaNetRegressionHead):
    """Box regression as maskrcnn-benchmark trains it: smooth-L1 (beta 0.11) summed over the batch's positive
    anchors and divided by 4 x their number (torchvision: L1, per image / its positives, then averaged)."""

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__(in_channels, num_anchors)
        self.box_coder = BoxCoder(weights=RETINANET_BOX_WEIGHTS)

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     anchors: list[torch.Tensor], matched_idxs: list[torch.Tensor]) -> torch.Tensor:
        predicted, wanted = [], []
        for target, regression, image_anchors, matched in zip(targets, head_outputs["bbox_regression"], anchors,
                                                              matched_idxs):
            positive = torch.where(matched >= 0)[0]
            predicted.append(regression[positive])
            wanted.append(self.box_coder.encode_single(target["boxes"][matched[positive]], image_anchors[positive]))
        predicted_all = torch.cat(predicted)
        loss = F.smooth_l1_loss(predicted_all, torch.cat(wanted), reduction="sum", beta=RETINANET_SMOOTH_L1_BETA)
        return loss / max(1, predicted_all.numel())


class OfficialRetinaNetClassification(RetinaNetClassificationHead):
    """Focal loss normalised as maskrcnn-benchmark does: summed over the batch's anchors (those between the IoU
    thresholds left out) and divided by (positive anchors + images) (torchvision: per image / its positives)."""

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     matched_idxs: list[torch.Tensor]) -> torch.Tensor:
        total, positives = head_outputs["cls_logits"].new_zeros(()), 0
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs):
            positive = matched >= 0
            wanted = torch.zeros_like(logits)
            wanted[positive, target["labels"][matched[positive]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            total = total + sigmoid_focal_loss(logits[valid], wanted[valid], reduction="sum")
            positives += int(positive.sum())
        return total / (positives + len(targets))


def _faster_rcnn(backbone_net: Supernet | ChildNet, num_classes: int, style: str, fpn_width: int = FPN_CHANNELS,
                 head_convs: int = BOX_HEAD_CONVS, head_fc: int = BOX_HEAD_FC, **kw: Any) -> FasterRCNN:
    """P2-P6 from C2..C5 (P6 = max-pool of P5, RPN only); box head 4 conv + 1 FC with BN (DetNAS' head); the
    detnas style puts BN after the FPN's convs (official FPN.USE_SYNCBN). An elastic path sets the FPN width and
    the box head's convs and FC width."""
    norm = nn.BatchNorm2d if style == "detnas" else None
    backbone = DetectionBackbone(backbone_net, ["c2", "c3", "c4", "c5"], LastLevelMaxPool(), ["p6"], norm, fpn_width)
    roi_pool = MultiScaleRoIAlign(featmap_names=["p2", "p3", "p4", "p5"], output_size=7, sampling_ratio=2)
    box_head = FastRCNNConvFCHead((fpn_width, 7, 7), [fpn_width] * head_convs, [head_fc], norm_layer=nn.BatchNorm2d)
    return FasterRCNN(backbone, box_roi_pool=roi_pool, box_head=box_head,
                      box_predictor=FastRCNNPredictor(head_fc, num_classes), **kw)


def _retinanet(backbone_net: Supernet | ChildNet, num_classes: int, style: str, fpn_width: int = FPN_CHANNELS,
               head_convs: int = 4, head_fc: int | None = None, **kw: Any) -> RetinaNet:
    """P3-P7 from C3..C5; P6/P7 are stride-2 convs on P5 (torchvision's LastLevelP6P7). The official RetinaNet
    FPN has no norm layer (its configs leave FPN.USE_SYNCBN off). An elastic path sets the FPN width and keeps
    the first `head_convs` of each head tower's 4 convs (`head_fc`: RetinaNet has no FC, ignored)."""
    backbone = DetectionBackbone(backbone_net, ["c3", "c4", "c5"], LastLevelP6P7(fpn_width, fpn_width),
                                 ["p6", "p7"], fpn_width=fpn_width)
    if style != "detnas":
        detector = RetinaNet(backbone, num_classes=num_classes, **kw)
    else:
        detector = RetinaNet(backbone, num_classes=num_classes, **{**RETINANET_TEST, **kw})
        num_anchors = detector.anchor_generator.num_anchors_per_location()[0]
        detector.head = RetinaNetHead(fpn_width, num_anchors, num_classes)
        detector.head.classification_head = OfficialRetinaNetClassification(fpn_width, num_anchors, num_classes)
        detector.head.regression_head = OfficialRetinaNetRegression(fpn_width, num_anchors)
        detector.box_coder = BoxCoder(weights=RETINANET_BOX_WEIGHTS)
    for tower in (detector.head.classification_head, detector.head.regression_head):
        tower.conv = tower.conv[:head_convs]
    return detector


def _rpn_outputs(detector: nn.Module, features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """FPN Faster R-CNN's dense part is its RPN head (the RoI head needs NMS-selected proposals)."""
    objectness, deltas = detector.rpn.head(features)
    return (*objectness, *deltas)


def _retinanet_outputs(detector: nn.Module, features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    out = detector.head(features)
    return out["cls_logits"], out["bbox_regression"]


DETECTOR_KINDS.register("fpn")(DetectorKind(
    model=FasterRCNN, build=_faster_rcnn, dense_outputs=_rpn_outputs,
    deploy=lambda graph, images: graph._faster_rcnn(images), postprocessor=lambda detector: detector.roi_heads,
    limits=lambda detector: {"pre_nms_top_k": deployable.ROI_PRE_NMS_TOP_K,
                             "rpn_proposals": detector.rpn.post_nms_top_n()},
    proposals_option="rpn_post_nms_top_n_test", elastic_proposals_option="rpn_post_nms_top_n_test",
    train_options=lambda cfg: {"box_batch_size_per_image": cfg.roi_batch},
    head_outputs=(HeadOutput("RPN objectness", "rpn.head.cls_logits"), HeadOutput("RPN box deltas", "rpn.head.bbox_pred"),
                  HeadOutput("RoI class logits", "roi_heads.box_predictor.cls_score", rows=True),
                  HeadOutput("RoI box deltas", "roi_heads.box_predictor.bbox_pred", rows=True))))
DETECTOR_KINDS.register("retinanet")(DetectorKind(
    model=RetinaNet, build=_retinanet, dense_outputs=_retinanet_outputs,
    deploy=lambda graph, images: graph._retinanet(images), elastic_proposals_option="topk_candidates",
    head_outputs=(HeadOutput("class logits", "head.classification_head.cls_logits"),
                  HeadOutput("box deltas", "head.regression_head.bbox_reg"))))


def widest_detector(space: SearchSpace) -> DetectorPath:
    """The detector genes an elastic supernet holds: the widest of each (all of them at once)."""
    return extreme_arch(space, (space.choices[0],) * space.num_blocks, widest=True).detector


def build_detector(kind: str, backbone: Supernet | ChildNet, num_classes: int,
                   min_size: int | tuple[int, ...] = DEFAULT_MIN_SIZE, max_size: int = DEFAULT_MAX_SIZE,
                   pixels: PixelConvention = DEFAULT_PIXELS, style: str = "torchvision", proposals: int | None = None,
                   **kw: Any) -> nn.Module:
    """A detector of a registered kind ("fpn" = FPN Faster R-CNN, "retinanet", see `kinds`) around `backbone`, in `style`
    ("torchvision" or "detnas", see the module docstring; a checkpoint's is its `CheckpointMeta.detector_style`).

    `backbone` is a `Supernet` (choose the path with `set_arch` before each forward) or a `ChildNet`, both built
    with num_classes=None. `num_classes` = K + 1 for a dataset with labels 1..K (0 = background). Images are
    given as `pixels.to_model_input(...)`; the detector normalises them with `pixels.mean/std` and resizes
    to short side `min_size`, long side <= `max_size`. `proposals` caps the RPN proposals per image at test time
    (the kind's `proposals_option`: FPN's, default 1000 as in torchvision and DetNAS; a RetinaNet has none, so it is
    ignored there). Extra
    keyword arguments go to the torchvision class.
    """
    kind_spec = detector_kind(kind)
    base_size, base_kw = (min_size, max_size), dict(kw)
    if style not in DETECTOR_STYLES:
        raise DetnasError(f"detector style '{style}' is unknown; choose one of {', '.join(DETECTOR_STYLES)}")
    if num_classes < 2:
        raise DetnasError(f"num_classes={num_classes}: pass K + 1 (K dataset classes plus background), so >= 2")
    if proposals and kind_spec.proposals_option:
        kw[kind_spec.proposals_option] = proposals
    if backbone.space.detector is not None:
        path = backbone.arch.detector if isinstance(backbone, ChildNet) else widest_detector(backbone.space)
        min_size, max_size = path_sizes(path.input_size, min_size, max_size)
        if kind_spec.elastic_proposals_option is None:
            raise DetnasError(f"detector kind '{kind}' has no proposals option; an elastic space's detector genes "
                              "need one (choose fpn or retinanet)")
        kw.update(fpn_width=path.fpn_width, head_convs=path.head_convs, head_fc=path.head_fc,
                  **{kind_spec.elastic_proposals_option: path.proposals})
    detector = kind_spec.build(backbone, num_classes, style, min_size=min_size, max_size=max_size,
                               image_mean=list(pixels.mean), image_std=list(pixels.std), **kw)
    if style == "detnas":
        momentum = BN_MOMENTUM_SUPERNET if isinstance(backbone, Supernet) else BN_MOMENTUM_FINAL
        for module in detector.modules():
            if isinstance(module, _BatchNorm):
                module.momentum = momentum
    detector.detnas_style = style
    detector.pixels = pixels
    if isinstance(backbone, Supernet) and backbone.space.elastic:
        from detnas.detection.elastic import ElasticDetector

        return ElasticDetector(detector, lambda arch: build_detector(
            kind, ChildNet(arch), num_classes, base_size[0], base_size[1], pixels, style, proposals, **base_kw))
    return detector


def set_arch(detector: nn.Module, arch: Arch) -> nn.Module:
    """Choose the supernet path the detector runs from now on (a no-op check for a fixed architecture)."""
    from detnas.detection.elastic import ElasticDetector

    backbone = getattr(detector, "backbone", None)
    if isinstance(detector, ElasticDetector):
        detector.set_arch(arch)
        return detector
    if not isinstance(backbone, DetectionBackbone):
        raise DetnasError("set_arch expects a detector made by build_detector")
    backbone.set_arch(arch)
    return detector


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """BN -> SyncBN when torch.distributed is running (DetNAS trains with synchronised BN); otherwise unchanged."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
