"""Non-maximum suppression as exactly one ONNX NonMaxSuppression with an explicit score threshold.

torchvision's `batched_nms` is scripted when traced (`_script_if_tracing`), so its empty-input guard becomes an
`If` whose branch holds the NMS and a Slice with computed axes (both beyond TensorRT 8.6's ONNX parser), and its
`nms` symbolic passes no score threshold: ONNX keeps every box while TensorRT's INMSLayer drops every box whose
score does not exceed its default threshold of 0 (NvInfer.h, INMSLayer: "ScoreThreshold is the value that a box
score must exceed").
`nms` here states the threshold and the most boxes to keep, and its eager forward is torchvision's `nms` over the
boxes above the threshold, so PyTorch and the exported node compute the same thing: ONNX Runtime and TensorRT
keep only scores strictly above `score_threshold` and return the kept indices in decreasing score order.

TensorRT's INMSLayer considers at most 5,000 boxes per image (NvInfer.h, the hardware-dependent limit K; 2,000
on SM 5.3/6.2); `batched_nms` refuses more, so a caller caps its candidates with a constant-K top-k first.
"""

from __future__ import annotations

import torch
import torchvision

from detnas.errors import DetnasError

NMS_MAX_BOXES = 5000


class _NonMaxSuppression(torch.autograd.Function):
    """Kept indices of `boxes` [N, 4] (xyxy) by `scores` [N], as ONNX NonMaxSuppression emits them."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
                max_output: int) -> torch.Tensor:
        above = torch.where(scores > score_threshold)[0]
        keep = torchvision.ops.nms(boxes[above], scores[above], iou_threshold)
        return above[keep[:max_output]]

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_threshold: float, max_output: int):
        def constant(value, dtype: torch.dtype):
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        batched_boxes = g.op("Unsqueeze", boxes, constant([0], torch.int64))  # [1, N, 4]: one image
        batched_scores = g.op("Unsqueeze", scores, constant([0, 1], torch.int64))  # [1, 1, N]: one class
        selected = g.op("NonMaxSuppression", batched_boxes, batched_scores, constant([max_output], torch.int64),
                        constant([iou_threshold], torch.float32), constant([score_threshold], torch.float32))
        return g.op("Gather", selected, constant(2, torch.int64), axis_i=1)  # rows are (image, class, box)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
        max_output: int) -> torch.Tensor:
    """Indices of the boxes kept, best first: torchvision's NMS over the boxes scoring above `score_threshold`,
    at most `max_output` of them."""
    return _NonMaxSuppression.apply(boxes, scores, float(iou_threshold), float(score_threshold), int(max_output))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float,
                score_threshold: float, max_output: int) -> torch.Tensor:
    """`nms` within each group (class or level) at once, by torchvision's coordinate trick: every group's boxes are
    shifted by group x (largest coordinate + 1), so boxes of different groups never overlap."""
    if boxes.shape[0] > NMS_MAX_BOXES:
        raise DetnasError(f"{boxes.shape[0]} boxes would enter one NMS; TensorRT considers at most {NMS_MAX_BOXES} "
                          "per image, so lower the detector's pre-NMS top-n")
    offsets = groups.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold, score_threshold, max_output)
