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
from detnas.flops import block_flops, flops_table, width_table
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


class CostModel:
    """MACs of every path of a space's detector as table look-ups, for counting many paths at once.

    Genes are held as an integer matrix (one row per path: op index per block, width index per block, depth per
    stage, detector gene indices, in `gene_options` order); `macs` counts rows with numpy, and `sample_under`
    draws uniform paths and keeps those under a MACs limit (the rejection sampling a constrained search starts
    from). Equal to `detector_macs` path by path (tested)."""

    def __init__(self, space: SearchSpace, kind: str, num_classes: int, base: tuple[int, int] = REFERENCE_HW) -> None:
        import numpy as np

        from detnas.arch import gene_options

        self.space, self.kind, self.num_classes, self.base = space, kind, num_classes, base
        self.options = gene_options(space)
        n = space.num_blocks
        widths = space.width_choices
        det_options = [allowed for _, allowed in space.detector.items()] if space.detector else [(v,) for v in
                                                                                                  _paper_values()]
        sizes = det_options[-1]
        self.blocks = np.zeros((len(sizes), n, len(space.choices), len(widths)), dtype=np.int64)
        self.stem = np.zeros(len(sizes), dtype=np.int64)
        for s, input_size in enumerate(sizes):
            hw = path_hw(input_size, base)
            self.stem[s] = flops_table(space, hw, 0)[0]
            table = width_table(space, hw)
            for b in range(n):
                for i, c in enumerate(space.choices):
                    for j, w in enumerate(widths):
                        self.blocks[s, b, i, j] = table[b][c, w]
        shape = tuple(len(o) for o in det_options)
        self.heads = np.zeros(shape, dtype=np.int64)
        for index in np.ndindex(*shape):
            det = DetectorPath(*(o[k] for o, k in zip(det_options, index)))
            self.heads[index] = sum(_head_macs(space, path_hw(det.input_size, base), kind, num_classes, det)[:3])
        stage = np.array(space.stage_of_block())
        self.position = np.arange(n) - np.array([sum(space.stage_depths[:s]) for s in stage])
        self.stage = stage

    def macs(self, genes: object) -> object:
        """MACs of every row of an index matrix (see the class docstring); returns an int64 array."""
        import numpy as np

        g = np.asarray(genes)
        n, space = self.space.num_blocks, self.space
        ops = g[:, :n]
        widths = g[:, n:2 * n] if space.width_multipliers else np.zeros_like(ops)
        col = n + (n if space.width_multipliers else 0)
        if space.min_depths:
            depths = g[:, col:col + len(space.stage_depths)]
            active = self.position[None, :] < depths[:, self.stage]
            col += len(space.stage_depths)
        else:
            active = np.ones_like(ops, dtype=bool)
        det = g[:, col:] if space.detector is not None else np.zeros((len(g), 5), dtype=np.int64)
        size = det[:, -1]
        blocks = self.blocks[size[:, None], np.arange(n)[None, :], ops, widths]
        return self.stem[size] + (blocks * active).sum(1) + self.heads[tuple(det.T)]

    def sample_genes(self, count: int, rng: object) -> object:
        """`count` uniform paths as an index matrix (depths as values, every other gene as an index)."""
        import numpy as np

        columns = []
        for k, allowed in enumerate(self.options):
            is_depth = self.space.min_depths and self._is_depth_column(k)
            columns.append(rng.choice(np.array(allowed), count) if is_depth else rng.integers(0, len(allowed), count))
        return np.stack(columns, axis=1)

    def _is_depth_column(self, k: int) -> bool:
        n = self.space.num_blocks * (2 if self.space.width_multipliers else 1)
        return n <= k < n + len(self.space.stage_depths)

    def to_arch(self, row: object) -> Arch:
        genes = tuple(int(v) if self._is_depth_column(k) and self.space.min_depths else allowed[int(v)]
                      for k, (v, allowed) in enumerate(zip(row, self.options)))
        return Arch.from_genes(self.space, genes)

    def sample_under(self, limit: int, count: int, seed: int, batch: int = 4096) -> tuple[list[Arch], int]:
        """`count` uniform paths with at most `limit` MACs, and how many paths were drawn to find them."""
        import numpy as np

        rng, kept, drawn = np.random.default_rng(seed), [], 0
        while len(kept) < count:
            genes = self.sample_genes(batch, rng)
            drawn += batch
            kept.extend(genes[self.macs(genes) <= limit][:count - len(kept)])
            if drawn > 1000 * batch and not kept:
                raise DetnasError(f"no path of space '{self.space.name}' within {drawn} draws has at most "
                                  f"{limit / 1e9:.1f} GMACs; raise the limit")
        return [self.to_arch(row) for row in kept], drawn


def _paper_values() -> tuple[int, ...]:
    from dataclasses import astuple

    return astuple(PAPER_DETECTOR)
