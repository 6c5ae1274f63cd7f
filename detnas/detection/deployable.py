"""The deployable graph: a torchvision detector with fixed input size and fixed, padded outputs.

torchvision's detectors take a list of images, resize them and return a list of variable-length dicts; a
deployment runtime wants one tensor in and fixed tensors out. `DeployableDetector` calls the detector's own
modules (backbone, RPN head, RoI heads or RetinaNet head, box coders, anchor generators) and spells out their
post-processing in a form that TensorRT's ONNX parsers (8.6, 10, 11) accept as well as ONNX Runtime: every top-k
has a constant K <= 3840, every NMS is one NonMaxSuppression node with an explicit score threshold and at most
5,000 boxes (`detnas.detection.nms`), no `If` and no `Loop`. It skips the resize (the input already has the model
size) and pads every image's detections to `max_detections`.

The detections are torchvision's with one stated exception: the FPN RoI head ranks its (proposal, class) pairs
and passes only the best `pre_nms_top_k` (3840, the largest constant K TensorRT's TopK takes) to NMS, where
torchvision passes every pair above the score threshold. The two agree whenever at most 3840 pairs of an image
score above the threshold; the cap is recorded in the exported file's metadata (`thresholds.pre_nms_top_k`).
It is traced by the TorchScript exporter, which maps `roi_align` to RoiAlign.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _setup_scales

from detnas.detection.kinds import kind_of
from detnas.detection.nms import batched_nms
from detnas.errors import DetnasError
from detnas.pixels import Normalize, PixelConvention

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "labels")
PAD_LABEL = -1
TOPK_MAX_K = 3840  # TensorRT's TopK: "Currently only values of K up to 3840 are supported" (NvInfer.h, ITopKLayer)
ROI_PRE_NMS_TOP_K = TOPK_MAX_K
MIN_BOX_SIDE = 1e-2  # torchvision's RoIHeads.postprocess_detections drops boxes with a side below this


def top_k(values: torch.Tensor, k: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` largest of a 1-D or 2-D tensor along its last dim, with `k` a constant in the graph (<= TOPK_MAX_K)."""
    k = min(int(k), int(values.shape[-1]))
    if k > TOPK_MAX_K:
        raise DetnasError(f"{what}: top-{k} is more than the {TOPK_MAX_K} that TensorRT's TopK takes; lower it to "
                          f"at most {TOPK_MAX_K}")
    return values.topk(k, dim=-1)


def scattered(values: torch.Tensor, index: torch.Tensor, fill: float) -> torch.Tensor:
    """1-D `values` at the positions `index` (a data-dependent count such as NMS's kept indices), `fill` elsewhere.

    A scatter of gathered values (ONNX GatherElements + ScatterElements), not `out[index] = values[index]`: traced on
    an image where NMS kept exactly one index, torch's exporter wrote that assignment's updates as a scalar expanded
    to the index, and the file then failed in ONNX Runtime ("cannot be reshaped") on every image keeping another
    count (a trained demo path's RPN did, at the search's fastest probe)."""
    return torch.full_like(values, fill).scatter(0, index, values.gather(0, index))


class DeployableDetector(nn.Module):
    """images float [B, 3, H, W] RGB in [0, 1] -> num_dets [B], boxes [B, K, 4], scores [B, K], labels [B, K].

    Boxes are xyxy in pixels of the model input; rows past num_dets are padding (boxes 0, scores 0, label -1).
    """

    def __init__(self, detector: nn.Module, pixels: PixelConvention, max_detections: int) -> None:
        super().__init__()
        self.kind = kind_of(detector)  # refuses a detector of no registered kind
        self.detector = detector
        self.normalize = Normalize(pixels)
        self.max_detections = max_detections
        self.kind.postprocessor(detector).detections_per_img = max_detections
        # Called on each image's mask of real RoIs (not padding, see `_proposals`): a no-op in the graph, where the
        # export's parity hooks in to compare only real RoI rows, as padding proposals are arbitrary boxes.
        self.real_rois = nn.Identity()
        self.eval()  # the exporter restores the wrapper's mode afterwards, so the wrapper itself must be in eval

    def limits(self) -> dict[str, int]:
        """The graph's own caps (its kind's `limits`: e.g. an FPN's RoI cap and test-time RPN proposals), recorded in
        the export's metadata so the file's PyTorch twin can be rebuilt with the same values."""
        return dict(self.kind.limits(self.detector))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.normalize(images)
        height, width = x.shape[-2:]
        image_list = ImageList(x, [(int(height), int(width))] * x.shape[0])
        return self._pad(self.kind.deploy(self, image_list))

    def _faster_rcnn(self, images: ImageList) -> list[dict[str, torch.Tensor]]:
        """RoIHeads.forward's eval path for boxes, over a fixed number of proposals per image (see `_proposals`)."""
        features = self.detector.backbone(images.tensors)
        proposals, real = self._proposals(images, features)
        for mask in real:
            self.real_rois(mask)
        heads = self.detector.roi_heads
        box_features = heads.box_head(self._pool_boxes(features, proposals, images.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        return self._roi_detections(class_logits, box_regression, proposals, real, images.image_sizes)

    def _roi_detections(self, class_logits: torch.Tensor, box_regression: torch.Tensor, proposals: list[torch.Tensor],
                        real: list[torch.Tensor], image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """RoIHeads.postprocess_detections with fixed sizes: pairs of padding proposals score 0, the best
        ROI_PRE_NMS_TOP_K (proposal, class) pairs go on, and the score threshold, the small-box filter (as a zero
        score) and the detection cut are the NMS node's score threshold and output limit."""
        heads = self.detector.roi_heads
        classes = int(class_logits.shape[-1]) - 1  # without background
        counts = [int(p.shape[0]) for p in proposals]
        all_boxes = heads.box_coder.decode(box_regression, proposals).split(counts)
        all_scores = F.softmax(class_logits, -1).split(counts)
        detections = []
        for boxes, scores, is_real, size in zip(all_boxes, all_scores, real, image_sizes):
            boxes = box_ops.clip_boxes_to_image(boxes, size)[:, 1:].reshape(-1, 4)
            scores = torch.where(is_real[:, None], scores[:, 1:], 0.0).reshape(-1)
            scores, pairs = top_k(scores, ROI_PRE_NMS_TOP_K, "RoI head pre-NMS candidates")
            boxes, labels = boxes[pairs], pairs % classes + 1
            wide = (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_BOX_SIDE)
            keep = batched_nms(boxes, torch.where(wide, scores, 0.0), labels, heads.nms_thresh, heads.score_thresh,
                               self.max_detections)
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections

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

    def _proposals(self, images: ImageList, features: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor],
                                                                                          list[torch.Tensor]]:
        """torchvision's RPN at inference (`forward` + `filter_proposals`), as a fixed number of proposals per
        image: boxes [K, 4] with K = min(post_nms_top_n, candidates) and a mask [K] of the real ones (a prefix;
        the rest are padding when NMS keeps fewer than K). The real ones are exactly torchvision's, in its order;
        the padding ones are whichever candidates a top-k over tied -inf values returns, which differs between
        runtimes (their scores are zeroed, so no detection comes from them).

        Why the same: torchvision takes each level's top pre_nms_top_n by objectness, clips, drops small boxes
        and, with the score threshold on sigmoid(logit), runs NMS per level, then keeps the best post_nms_top_n
        by objectness. Here the level's top-k (constant K, sorted by logit) gives each candidate a rank score
        (k - i) / (k + 1) in (0, 1), strictly decreasing down the level's order, and 0 if torchvision would drop
        it; the NMS (threshold 0, levels kept apart by the coordinate offset) then visits each level's boxes in
        torchvision's order and keeps the same set. The best post_nms_top_n of the kept are then chosen by a
        constant-K top-k on their logits. Ranking by logit, not by sigmoid(logit), matters: ONNX Runtime's CPU
        Sigmoid loses relative precision, and monotonicity, below a logit of about -8, which reordered
        low-objectness proposals; rank scores and logits are compared exactly by every runtime."""
        rpn = self.detector.rpn
        levels = list(features.values())
        objectness, deltas = rpn.head(levels)
        anchors = rpn.anchor_generator(images, levels)
        per_level = [int(o[0].numel()) for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
        objectness = objectness.reshape(len(anchors), -1)
        candidates, rank_scores, level_ids, start = [], [], [], 0
        for level, count in enumerate(per_level):
            top = top_k(objectness[:, start:start + count], rpn.pre_nms_top_n(), "RPN pre-NMS top-n per level")[1]
            k = int(top.shape[1])
            candidates.append(top + start)
            rank_scores.append(torch.arange(k, 0, -1, dtype=objectness.dtype, device=objectness.device) / (k + 1))
            level_ids.append(torch.full((k,), level, dtype=torch.int64, device=objectness.device))
            start += count
        top = torch.cat(candidates, dim=1)
        rank_score, level_id = torch.cat(rank_scores), torch.cat(level_ids)
        batch_index = torch.arange(len(anchors), device=objectness.device)[:, None]
        kept_boxes, kept_real = [], []
        for boxes, logits, size in zip(proposals[batch_index, top], objectness[batch_index, top], images.image_sizes):
            boxes = box_ops.clip_boxes_to_image(boxes, size)
            real = ((boxes[:, 2] - boxes[:, 0] >= rpn.min_size) & (boxes[:, 3] - boxes[:, 1] >= rpn.min_size)
                    & (torch.sigmoid(logits) >= rpn.score_thresh))
            keep = batched_nms(boxes, torch.where(real, rank_score, 0.0), level_id, rpn.nms_thresh, 0.0,
                               int(boxes.shape[0]))
            ranked = scattered(logits, keep, float("-inf"))  # the kept proposals' logits, as float: TensorRT's
            # scatters take no bool data (onnx-tensorrt operators.md)
            best_logits, best = top_k(ranked, rpn.post_nms_top_n(), "RPN proposals")
            kept_boxes.append(boxes[best])
            kept_real.append(best_logits > float("-inf"))
        return kept_boxes, kept_real

    def _retinanet(self, images: ImageList) -> list[dict[str, torch.Tensor]]:
        """RetinaNet.forward's eval branch without the transform, and its postprocess_detections with a constant
        K: each level's top `topk_candidates` scores (all of them, not only those above the score threshold,
        whose count is data-dependent) go on, and the score threshold is the NMS node's. The same detections,
        since every score above the threshold outranks every score below it."""
        net = self.detector
        features = list(net.backbone(images.tensors).values())
        head_outputs = net.head(features)
        anchors = net.anchor_generator(images, features)
        per_level = [f.size(2) * f.size(3) for f in features]
        anchors_per_location = head_outputs["cls_logits"].size(1) // sum(per_level)
        per_level = [int(n * anchors_per_location) for n in per_level]
        class_logits = head_outputs["cls_logits"].split(per_level, dim=1)
        box_regression = head_outputs["bbox_regression"].split(per_level, dim=1)
        detections = []
        for index, (image_anchors, size) in enumerate(zip(anchors, images.image_sizes)):
            boxes, scores, labels = [], [], []
            for logits, regression, level_anchors in zip(class_logits, box_regression, image_anchors.split(per_level)):
                classes = int(logits.shape[-1])
                level_scores, flat = top_k(torch.sigmoid(logits[index]).flatten(), net.topk_candidates,
                                           "RetinaNet candidates per level")
                anchor = torch.div(flat, classes, rounding_mode="floor")
                level_boxes = net.box_coder.decode_single(regression[index][anchor], level_anchors[anchor])
                boxes.append(box_ops.clip_boxes_to_image(level_boxes, size))
                scores.append(level_scores)
                labels.append(flat % classes)
            boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = batched_nms(boxes, scores, labels, net.nms_thresh, net.score_thresh, self.max_detections)
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections

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
