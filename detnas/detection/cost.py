"""Exact analytic MACs of a whole detector path: backbone, FPN, RPN or dense head, box head.

Multiply-adds of convs and linears (DetNAS' convention; what `torch.utils.flop_counter` counts, halved) of the
deployable graph (`detnas.detection.deployable`), which runs the box head on a fixed number of proposals per
image: min(proposals, the RPN's candidates = sum over levels of min(1000, anchors of the level)). Feature sizes
follow the convs' arithmetic, so any input size is exact. Per-(space, size) tables make one count a short sum,
fast enough to reject paths over a MACs limit by sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from detnas.arch import PAPER_DETECTOR, Arch, DetectorPath
from detnas.errors import DetnasError
from detnas.flops import block_flops, flops_table
from detnas.sizes import REFERENCE_HW, path_hw
from detnas.space import SearchSpace

RPN_ANCHORS = 3  # torchvision's FPN anchor generator: one size per level x 3 aspect ratios
RPN_PRE_NMS_TEST = 1000  # torchvision's rpn_pre_nms_top_n_test, per level
RETINANET_ANCHORS = 9  # 3 scales x 3 aspect ratios per location
ROI_SIZE = 7


@dataclass(frozen=True)
class DetectorMacs:
    """MACs of one detector path by part; `total` is their sum. `dense_head` is FPN's RPN head or RetinaNet's
    head; `box_head` the FPN RoI head on `rois` proposals (0 for RetinaNet)."""

    backbone: int
    fpn: int
    dense_head: int
    box_head: int
    rois: int
    size: tuple[int, int]

    @property
    def total(self) -> int:
        return self.backbone + self.fpn + self.dense_head + self.box_head


def _half(n: int) -> int:
    """Output side of a 3x3 (or odd k, pad k // 2) stride-2 conv, and of the P6 max-pool (kernel 1, stride 2)."""
    return (n - 1) // 2 + 1


@lru_cache(maxsize=256)
def stage_sizes(space: SearchSpace, size: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """(h, w) of C2..C5: the stem and every stage's first block halve the input."""
    h, w = _half(size[0]), _half(size[1])
    out = []
    for _ in space.stage_depths:
        h, w = _half(h), _half(w)
        out.append((h, w))
    return tuple(out)


def path_size(arch: Arch, base: tuple[int, int] = REFERENCE_HW) -> tuple[int, int]:
    """The input a path runs at when the paper detector runs at `base` (its `input_size` gene scales it)."""
    return path_hw(arch.detector.input_size, base) if arch.detector is not None else base


def detector_macs(arch: Arch, kind: str, num_classes: int, size: tuple[int, int] | None = None,
                  base: tuple[int, int] = REFERENCE_HW) -> DetectorMacs:
    """MACs of `arch`'s detector of `kind` ("fpn" or "retinanet") at `size` (default: the path's own size when
    the paper detector runs at `base`). A paper arch is the paper's detector (FPN 256, 4 convs + FC 1024, 1,000
    proposals)."""
    hw = tuple(size) if size is not None else path_size(arch, base)
    det = arch.detector or PAPER_DETECTOR
    backbone = flops_table(arch.space, hw, 0)[0] + sum(block_flops(arch, hw))
    fpn, dense, box, rois = _head_macs(arch.space, hw, kind, num_classes, det)
    return DetectorMacs(backbone, fpn, dense, box, rois, hw)


@lru_cache(maxsize=4096)
def _head_macs(space: SearchSpace, hw: tuple[int, int], kind: str, num_classes: int,
               det: DetectorPath) -> tuple[int, int, int, int]:
    sizes = stage_sizes(space, hw)
    f = det.fpn_width
    if kind == "fpn":
        inputs = list(zip(space.stage_widths, sizes))
        levels = [hw_ for _, hw_ in inputs] + [(_half(sizes[-1][0]), _half(sizes[-1][1]))]
        fpn = sum(cin * f * h * w + f * f * 9 * h * w for cin, (h, w) in inputs)
        dense = sum(h * w * (f * f * 9 + f * RPN_ANCHORS * 5) for h, w in levels)
        candidates = sum(min(RPN_PRE_NMS_TEST, RPN_ANCHORS * h * w) for h, w in levels)
        rois = min(det.proposals, candidates)
        area = ROI_SIZE * ROI_SIZE
        per_roi = det.head_convs * f * f * 9 * area + f * area * det.head_fc + det.head_fc * num_classes * 5
        return fpn, dense, rois * per_roi, rois
    if kind == "retinanet":
        inputs = list(zip(space.stage_widths[1:], sizes[1:]))
        p6 = (_half(sizes[-1][0]), _half(sizes[-1][1]))
        p7 = (_half(p6[0]), _half(p6[1]))
        fpn = sum(cin * f * h * w + f * f * 9 * h * w for cin, (h, w) in inputs)
        fpn += f * f * 9 * (p6[0] * p6[1] + p7[0] * p7[1])
        levels = [hw_ for _, hw_ in inputs] + [p6, p7]
        per_pixel = 2 * det.head_convs * f * f * 9 + f * RETINANET_ANCHORS * (num_classes + 4) * 9
        return fpn, sum(h * w * per_pixel for h, w in levels), 0, 0
    raise DetnasError(f"detector kind '{kind}' has no analytic MACs count; choose fpn or retinanet")
