"""Backbone adapter: a DetNAS network (supernet path or standalone child) plus an FPN, as torchvision expects.

torchvision's detectors call `backbone(images)` with no extra argument, so the supernet's path lives on the
adapter (`arch`) and is set per call with `set_arch`; a supernet without a path is refused instead of guessed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from detnas.arch import Arch
from detnas.errors import DetnasError
from detnas.supernet import ChildNet, Supernet

FPN_CHANNELS = 256


class DetectionBackbone(nn.Module):
    """Runs the body, feeds the chosen stages (e.g. c2..c5) to an FPN and names the levels p2, p3, ..."""

    def __init__(self, body: Supernet | ChildNet, stages: list[str], extra: ExtraFPNBlock,
                 extra_names: list[str], norm_layer: Callable[..., nn.Module] | None = None,
                 fpn_width: int = FPN_CHANNELS) -> None:
        super().__init__()
        if body.head is not None:
            raise DetnasError("detector backbones are built with num_classes=None (no classification head)")
        self.body = body
        self.stages = stages
        in_channels = [body.out_channels[int(s[1:]) - 2] for s in stages]
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_width, extra_blocks=extra, norm_layer=norm_layer)
        self.level_names = [f"p{s[1:]}" for s in stages] + extra_names
        self.out_channels = fpn_width
        self.arch: Arch | None = body.arch if isinstance(body, ChildNet) else None

    def set_arch(self, arch: Arch) -> None:
        if not isinstance(self.body, Supernet):
            if arch != self.arch:
                raise DetnasError(f"this detector is a fixed architecture ({self.arch.compact()}); "
                                  "set_arch only switches paths of a supernet detector")
            return
        self.body.check_arch(arch)
        self.arch = arch

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if isinstance(self.body, Supernet):
            if self.arch is None:
                raise DetnasError("supernet detector has no active path; call set_arch(detector, arch) first")
            features = self.body(x, self.arch)
        else:
            features = self.body(x)
        pyramid = self.fpn(OrderedDict((s, features[s]) for s in self.stages))
        return OrderedDict(zip(self.level_names, pyramid.values()))
