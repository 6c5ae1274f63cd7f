"""The four DetNAS choice blocks (spec section 2) and the fixed stem and head around them."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    """Conv (no bias) + BN (+ ReLU); depthwise convs are called with relu=False, as in ShuffleNetV2."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def shuffle_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel shuffle + split as in the released backbones: even channels pass, odd channels are processed."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 2, 2, h, w)
    return x[:, :, 0], x[:, :, 1]


class ChoiceBlock(nn.Module):
    """Base of the four candidates: stride 1 splits the input, stride 2 adds a projection branch."""

    def __init__(self, cin: int, cout: int, stride: int, project_kernel: int, mid: int | None = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and cin != cout:
            raise ValueError(f"a stride-1 block keeps its width, got {cin} -> {cout}")
        self.stride = stride
        self.mid = cout // 2 if mid is None else mid  # the paper's C/2; an elastic space's width gene sets another
        self.main_in = cin // 2 if stride == 1 else cin
        self.main_out = cout // 2 if stride == 1 else cout - cin
        self.proj = None
        if stride == 2:
            self.proj = nn.Sequential(
                *conv_bn(cin, cin, project_kernel, 2, groups=cin, relu=False), *conv_bn(cin, cin)
            )
        self.main: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            identity, rest = shuffle_split(x)
            return torch.cat((identity, self.main(rest)), 1)
        return torch.cat((self.proj(x), self.main(x)), 1)


class ShuffleBlock(ChoiceBlock):
    """ShuffleNetV2 unit: 1x1 -> depthwise kxk -> 1x1 (choices 0, 1, 2 with k = 3, 5, 7)."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, mid: int | None = None) -> None:
        super().__init__(cin, cout, stride, project_kernel=kernel, mid=mid)
        self.main = nn.Sequential(
            *conv_bn(self.main_in, self.mid),
            *conv_bn(self.mid, self.mid, kernel, stride, groups=self.mid, relu=False),
            *conv_bn(self.mid, self.main_out),
        )


class XceptionBlock(ChoiceBlock):
    """Xception-style unit: three (depthwise 3x3 -> 1x1) pairs, the first depthwise carrying the stride (choice 3)."""

    def __init__(self, cin: int, cout: int, stride: int, mid: int | None = None) -> None:
        super().__init__(cin, cout, stride, project_kernel=3, mid=mid)
        self.main = nn.Sequential(
            *conv_bn(self.main_in, self.main_in, 3, stride, groups=self.main_in, relu=False),
            *conv_bn(self.main_in, self.mid),
            *conv_bn(self.mid, self.mid, 3, 1, groups=self.mid, relu=False),
            *conv_bn(self.mid, self.mid),
            *conv_bn(self.mid, self.mid, 3, 1, groups=self.mid, relu=False),
            *conv_bn(self.mid, self.main_out),
        )


def make_block(choice: int, cin: int, cout: int, stride: int, mid: int | None = None) -> ChoiceBlock:
    """Choice index -> module (0/1/2: ShuffleNetV2 3x3/5x5/7x7, 3: Xception); `mid` overrides the middle width C/2."""
    if choice in (0, 1, 2):
        return ShuffleBlock(cin, cout, stride, kernel=3 + 2 * choice, mid=mid)
    if choice == 3:
        return XceptionBlock(cin, cout, stride, mid=mid)
    raise ValueError(f"unknown choice {choice}")


class Stem(nn.Sequential):
    """3x3 stride-2 conv with bias + BN + ReLU; DetNAS has no max-pool."""

    def __init__(self, width: int) -> None:
        super().__init__(nn.Conv2d(3, width, 3, 2, 1, bias=True), nn.BatchNorm2d(width), nn.ReLU(inplace=True))


class ClassifierHead(nn.Sequential):
    """1x1 conv (+bias) + BN + ReLU, dropout 0.2, global average pool, FC."""

    def __init__(self, cin: int, width: int, num_classes: int) -> None:
        super().__init__(
            nn.Conv2d(cin, width, 1, bias=True), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width, num_classes),
        )
