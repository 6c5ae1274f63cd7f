"""The deployable graph: a torchvision detector with fixed input size and fixed, padded outputs.

torchvision's detectors take a list of images, resize them and return a list of variable-length dicts; a
deployment runtime wants one tensor in and fixed tensors out. `DeployableDetector` calls the detector's own
modules (backbone, RPN head, RoI heads or RetinaNet head and post-processing) so the maths is torchvision's; two
steps are spelled out here for the runtimes' sake: the RPN's proposal filter ranks by logit (see `_proposals`)
and the multi-scale RoI pooling merges its levels without scatters (see `_pool_boxes`). It skips the resize (the
input already has the model size) and pads every image's detections to `max_detections`.
It is traced by the TorchScript exporter, where torchvision maps `nms` to ONNX NonMaxSuppression and
`roi_align` to RoiAlign.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _setup_scales

from detnas.errors import DetnasError
from detnas.pixels import Normalize, PixelConvention

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "labels")
PAD_LABEL = -1


class DeployableDetector(nn.Module):
    """images float [B, 3, H, W] RGB in [0, 1] -> num_dets [B], boxes [B, K, 4], scores [B, K], labels [B, K].

    Boxes are xyxy in pixels of the model input; rows past num_dets are padding (boxes 0, scores 0, label -1).
    """

    def __init__(self, detector: nn.Module, pixels: PixelConvention, max_detections: int) -> None:
        super().__init__()
        if not isinstance(detector, FasterRCNN | RetinaNet):
            raise DetnasError(f"cannot export a {type(detector).__name__}; expected a detector from build_detector")
        self.detector = detector
        self.normalize = Normalize(pixels)
        self.max_detections = max_detections
        heads = detector.roi_heads if isinstance(detector, FasterRCNN) else detector
        heads.detections_per_img = max_detections
        self.eval()  # the exporter restores the wrapper's mode afterwards, so the wrapper itself must be in eval

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.normalize(images)
        height, width = x.shape[-2:]
        image_list = ImageList(x, [(int(height), int(width))] * x.shape[0])
        if isinstance(self.detector, FasterRCNN):
            detections = self._faster_rcnn(image_list)
        else:
            detections = self._retinanet(image_list)
        return self._pad(detections)

    def _faster_rcnn(self, images: ImageList) -> list[dict[str, torch.Tensor]]:
        features = self.detector.backbone(images.tensors)
        proposals = self._proposals(images, features)
        # One zero-area guard RoI per image keeps every tensor of the RoI head non-empty (ONNX Runtime cannot
        # reshape an empty tensor with -1, so an image without proposals would fail); it can never become a
        # detection, since the head drops zero-area boxes before NMS.
        proposals = [torch.cat([p, p.new_zeros(1, 4)]) for p in proposals]
        heads = self.detector.roi_heads  # RoIHeads.forward's eval path for boxes, with our RoI pooling
        box_features = heads.box_head(self._pool_boxes(features, proposals, images.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals,
                                                             images.image_sizes)
        return [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]

    def _pool_boxes(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                    image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        """torchvision's MultiScaleRoIAlign with the levels merged by one concatenation and one gather.

        When traced, torchvision merges the levels with a ScatterElements per level whose int64 indices are
        expanded to the full [N, C, 7, 7] output; in ONNX Runtime on a CPU that merge cost more than the RoiAlign
        kernels themselves. The pooled values are the same RoiAlign results, only placed differently."""
        pool = self.detector.roi_heads.box_roi_pool
        levels = [features[name] for name in pool.featmap_names]
        if pool.scales is None or pool.map_levels is None:
            pool.scales, pool.map_levels = _setup_scales(levels, image_sizes, pool.canonical_scale,
                                                         pool.canonical_level)
        rois = _convert_to_roi_format(proposals)
        if len(levels) == 1:
            return roi_align(levels[0], rois, pool.output_size, pool.scales[0], pool.sampling_ratio)
        level_of_roi = pool.map_levels(proposals)
        pooled, members = [], []
        for level, (feature, scale) in enumerate(zip(levels, pool.scales)):
            index = torch.where(level_of_roi == level)[0]
            pooled.append(roi_align(feature, rois[index], pool.output_size, scale, pool.sampling_ratio))
            members.append(index)
        order = torch.cat(members)
        # Undo the grouping by level with the inverse permutation, written by a scatter of N indices: an argsort
        # would export as a TopK with a data-dependent k, which TensorRT's ONNX parser rejects.
        position = torch.empty_like(order)
        position[order] = torch.arange(order.shape[0], device=order.device)
        return torch.cat(pooled)[position]

    def _proposals(self, images: ImageList, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """torchvision's RPN at inference (`forward` + `filter_proposals`) with one change: NMS ranks proposals by
        objectness logit instead of sigmoid probability. The order is the same (sigmoid is monotonic), but ONNX
        Runtime's CPU Sigmoid loses relative precision, and monotonicity, below a logit of about -8, so it
        reordered low-objectness proposals and changed which of them survive the post-NMS top-n cut."""
        rpn = self.detector.rpn
        levels = list(features.values())
        objectness, deltas = rpn.head(levels)
        anchors = rpn.anchor_generator(images, levels)
        per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
        objectness = objectness.reshape(len(anchors), -1)
        level_ids = torch.cat([torch.full((n,), i, dtype=torch.int64, device=objectness.device)
                               for i, n in enumerate(per_level)])
        top = rpn._get_top_n_idx(objectness, per_level)
        batch_index = torch.arange(len(anchors), device=objectness.device)[:, None]
        objectness, proposals = objectness[batch_index, top], proposals[batch_index, top]
        kept = []
        for boxes, logits, level, size in zip(proposals, objectness, level_ids[top], images.image_sizes):
            boxes = box_ops.clip_boxes_to_image(boxes, size)
            keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
            boxes, logits, level = boxes[keep], logits[keep], level[keep]
            keep = torch.where(torch.sigmoid(logits) >= rpn.score_thresh)[0]
            boxes, logits, level = boxes[keep], logits[keep], level[keep]
            keep = box_ops.batched_nms(boxes, logits, level, rpn.nms_thresh)[: rpn.post_nms_top_n()]
            kept.append(boxes[keep])
        return kept

    def _retinanet(self, images: ImageList) -> list[dict[str, torch.Tensor]]:
        """RetinaNet.forward's eval branch without the transform (the level split it does before post-processing)."""
        features = list(self.detector.backbone(images.tensors).values())
        head_outputs = self.detector.head(features)
        anchors = self.detector.anchor_generator(images, features)
        per_level = [f.size(2) * f.size(3) for f in features]
        anchors_per_location = head_outputs["cls_logits"].size(1) // sum(per_level)
        per_level = [n * anchors_per_location for n in per_level]
        split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        return self.detector.postprocess_detections(split_outputs, split_anchors, images.image_sizes)

    def _pad(self, detections: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        """Every image's detections as exactly `max_detections` rows, by a gather of fixed size: rows past num_dets
        read one appended fill row. Padding with F.pad(K - n) would leave output sizes that ONNX shape inference
        cannot resolve, which TensorRT treats as data-dependent (an engine it cannot bind fixed buffers to)."""
        counts, boxes, scores, labels = [], [], [], []
        for det in detections:
            count = torch.ones_like(det["labels"]).sum()  # a shape-derived count that tracing keeps dynamic
            rows = torch.minimum(torch.arange(self.max_detections, device=count.device), count)
            counts.append(count)
            boxes.append(torch.cat([det["boxes"], det["boxes"].new_zeros(1, 4)])[rows])
            scores.append(torch.cat([det["scores"], det["scores"].new_zeros(1)])[rows])
            labels.append(torch.cat([det["labels"], det["labels"].new_full((1,), PAD_LABEL)])[rows])
        return torch.stack(counts), torch.stack(boxes), torch.stack(scores), torch.stack(labels)
