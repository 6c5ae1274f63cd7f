"""FLOPs and params in DetNAS' convention: multiply-adds of conv and FC weights (no BN, bias, pooling, adds).

The count is analytic: each candidate's convs are read off a module built on the meta device (no memory, no
init cost) and multiplied out at its output resolution; a per-(space, size) table makes one arch a short sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch
from torch import nn

from detnas.arch import Arch
from detnas.blocks import ClassifierHead, Stem, make_block
from detnas.jsonout import JsonRecord
from detnas.space import SearchSpace, middle_width
from detnas.supernet import ChildNet, _block_io


def _out_size(size: tuple[int, int], conv: nn.Conv2d) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - k) // s + 1 for n, p, k, s in zip(size, conv.padding, conv.kernel_size, conv.stride)
    )


def _sequence_macs(module: nn.Module, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """MACs of the convs and linears of a feed-forward module, in registration order, and the output size."""
    macs = 0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            size = _out_size(size, layer)
            kh, kw = layer.kernel_size
            macs += layer.out_channels * (layer.in_channels // layer.groups) * kh * kw * size[0] * size[1]
        elif isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features
    return macs, size


def _block_macs(block: nn.Module, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Both branches of a choice block start from the block input."""
    macs, out = _sequence_macs(block.main, size)
    if block.proj is not None:
        macs += _sequence_macs(block.proj, size)[0]
    return macs, out


@lru_cache(maxsize=64)
def flops_table(space: SearchSpace, size: tuple[int, int], num_classes: int) -> tuple[int, tuple[dict[int, int], ...], int]:
    """(stem MACs, per-block {choice: MACs}, head MACs) at an input size; head is 0 when num_classes is 0."""
    with torch.device("meta"):
        stem_macs, size = _sequence_macs(Stem(space.stem_width), size)
        per_block = []
        for cin, cout, stride in _block_io(space):
            costs = {c: _block_macs(make_block(c, cin, cout, stride), size) for c in space.choices}
            per_block.append({c: macs for c, (macs, _) in costs.items()})
            size = next(iter(costs.values()))[1]
        head = ClassifierHead(space.stage_widths[-1], space.head_width, num_classes) if num_classes else None
        head_macs = _sequence_macs(head, size)[0] if head is not None else 0
    return stem_macs, tuple(per_block), head_macs


def _pixel_terms(module: nn.Module) -> tuple[int, int]:
    """(MACs per input pixel, MACs per output pixel) of a feed-forward sequence with one stride-2 conv at most:
    convs before the stride run at the input size, the strided one and those after at the output size."""
    before = after = 0
    strided = False
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            strided = strided or layer.stride != (1, 1)
            kh, kw = layer.kernel_size
            macs = layer.out_channels * (layer.in_channels // layer.groups) * kh * kw
            if strided:
                after += macs
            else:
                before += macs
    return before, after


@lru_cache(maxsize=16)
def _block_terms(space: SearchSpace) -> tuple[dict[tuple[int, float], tuple[int, int]], ...]:
    """Per block {(choice, width multiple): (MACs per input pixel, per output pixel)}, size-free, built once."""
    per_block = []
    with torch.device("meta"):
        for cin, cout, stride in _block_io(space):
            terms = {}
            for c in space.choices:
                for m in space.width_choices:
                    block = make_block(c, cin, cout, stride, middle_width(cout, m))
                    main = _pixel_terms(block.main)
                    proj = _pixel_terms(block.proj) if block.proj is not None else (0, 0)
                    terms[c, m] = (main[0] + proj[0], main[1] + proj[1])
            per_block.append(terms)
    return tuple(per_block)


@lru_cache(maxsize=64)
def width_table(space: SearchSpace, size: tuple[int, int]) -> tuple[dict[tuple[int, float], int], ...]:
    """Per block {(choice, width multiple): MACs} at an input size: the elastic space's block table."""
    per_block, size = [], _sequence_macs(Stem(space.stem_width), size)[1]
    for (_, _, stride), terms in zip(_block_io(space), _block_terms(space)):
        out = ((size[0] - 1) // 2 + 1, (size[1] - 1) // 2 + 1) if stride == 2 else size
        per_block.append({key: a * size[0] * size[1] + b * out[0] * out[1] for key, (a, b) in terms.items()})
        size = out
    return tuple(per_block)


def block_flops(arch: Arch, size: int | tuple[int, int] = 224) -> list[int]:
    """MACs of every choice block of `arch` (0 for a block its depth skips)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if not arch.space.elastic:
        return [table[c] for table, c in zip(flops_table(arch.space, hw, 0)[1], arch.choices)]
    skipped = set(arch.skipped_blocks())
    return [0 if i in skipped else table[c, w]
            for i, (table, c, w) in enumerate(zip(width_table(arch.space, hw), arch.choices, arch.block_widths()))]


def count_flops(arch: Arch, size: int | tuple[int, int] = 224, num_classes: int = 0) -> int:
    """Multiply-adds of the backbone (num_classes=0) or of the classification network (e.g. 1000)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    stem, per_block, head = flops_table(arch.space, hw, num_classes)
    if arch.space.elastic:
        return stem + head + sum(block_flops(arch, hw))
    return stem + head + sum(table[c] for table, c in zip(per_block, arch.choices))


def count_params(arch: Arch, num_classes: int = 0) -> int:
    """Parameters of the real module (conv, BN, FC, biases), built on the meta device."""
    with torch.device("meta"):
        model = ChildNet(arch, num_classes or None)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class StageCost:
    stage: int
    width: int
    blocks: int
    choices: tuple[str, ...]
    mflops_224: float


@dataclass(frozen=True)
class ArchCost(JsonRecord):
    """What `detnas arch show` reports: per-stage and total FLOPs (multiply-adds) and params of one arch."""

    SCHEMA: ClassVar[str] = "detnas.arch/1"
    name: str
    space: str
    hash: str
    choices: str
    stages: tuple[StageCost, ...]
    flops_224_classification: int
    flops_224_backbone: int
    detection_size: tuple[int, int]
    flops_detection_backbone: int
    params_classification: int
    params_backbone: int
    num_classes: int


def arch_cost(name: str, arch: Arch, detection_size: tuple[int, int], num_classes: int = 1000) -> ArchCost:
    """Stage table at 224 and totals at 224 (classification network, backbone) and at `detection_size` (backbone)."""
    from detnas.space import CHOICE_NAMES

    per_block = block_flops(arch, 224)
    stages, start = [], 0
    for s, stage in enumerate(arch.per_stage()):
        macs = sum(per_block[start:start + len(stage)])
        stages.append(StageCost(s + 1, arch.space.stage_widths[s], len(stage), tuple(CHOICE_NAMES[c] for c in stage),
                                macs / 1e6))
        start += len(stage)
    return ArchCost(name, arch.space.name, arch.hash, arch.compact(), tuple(stages), count_flops(arch, 224, num_classes),
                    count_flops(arch, 224), tuple(detection_size), count_flops(arch, detection_size),
                    count_params(arch, num_classes), count_params(arch), num_classes)
