"""The one-shot supernet and `materialize`, which cuts one path out of it as a standalone backbone.

Both networks share the same module classes and key layout up to the choice level, so a child's weights are
the supernet's weights on that path and their outputs match exactly in eval mode.

In an elastic space the supernet holds every block at its widest middle width; a path's block is the first k
channels of it (`path_tensors`: every tensor of the child is the leading slice of the supernet's), and a path runs
as its child module called on those slices (`torch.func.functional_call`), so gradients and BN statistics land in
the shared widest weights and the child extracted by `materialize` computes exactly what the path computed.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import lru_cache
from itertools import chain

import torch
from torch import nn

from detnas.arch import Arch
from detnas.blocks import ClassifierHead, Stem, make_block
from detnas.errors import DetnasError
from detnas.space import SearchSpace, middle_width

_CHILD_BLOCK_KEY = re.compile(r"(?P<head>^|\.)blocks\.(?P<block>\d+)\.")

def _block_io(space: SearchSpace) -> list[tuple[int, int, int]]:
    """(cin, cout, stride) of every choice block in forward order."""
    io, cin = [], space.stem_width
    for width, depth in zip(space.stage_widths, space.stage_depths):
        for b in range(depth):
            io.append((cin, width, 2 if b == 0 else 1))
            cin = width
    return io


def _widest_mid(space: SearchSpace, cout: int) -> int | None:
    return middle_width(cout, max(space.width_multipliers)) if space.width_multipliers else None


def _child_mid(arch: Arch, block: int, cout: int) -> int | None:
    return middle_width(cout, arch.widths[block]) if arch.widths else None


def sliced(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading `shape` slice of a widest tensor (a view: gradients and in-place BN updates reach the base)."""
    return value if value.shape == shape else value[tuple(slice(0, n) for n in shape)]


def path_tensors(widest: nn.Module, child: nn.Module, key_of: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of `child` as the leading slice of `widest`'s tensor `key_of(child key)`."""
    source: Mapping[str, torch.Tensor] = dict(chain(widest.named_parameters(), widest.named_buffers()))
    return {key: sliced(source[key_of(key)], value.shape)
            for key, value in chain(child.named_parameters(), child.named_buffers())}


def block_key(arch: Arch) -> Callable[[str], str]:
    """Child key -> supernet key: a block's modules live under the chosen candidate (`blocks.i.candidates.c.`)."""
    def key_of(key: str) -> str:
        return _CHILD_BLOCK_KEY.sub(lambda m: f"{m['head']}blocks.{m['block']}.candidates.{arch.choices[int(m['block'])]}.",
                                    key, count=1)
    return key_of


class ChoiceLayer(nn.Module):
    """All candidates of one choice block (at the space's widest middle width); the arch says which one runs."""

    def __init__(self, space: SearchSpace, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = _widest_mid(space, cout)
        self.candidates = nn.ModuleDict({str(c): make_block(c, cin, cout, stride, mid) for c in space.choices})

    def forward(self, x: torch.Tensor, choice: int) -> torch.Tensor:
        return self.candidates[str(choice)](x)


class _Network(nn.Module):
    """Shared skeleton: stem, blocks grouped into stages, optional classification head.

    Stage outputs are named c2, c3, ... (strides 4, 8, 16, 32 for the four DetNAS stages).
    """

    def __init__(self, space: SearchSpace, num_classes: int | None) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.stem = Stem(space.stem_width)
        ends = [sum(space.stage_depths[: s + 1]) - 1 for s in range(len(space.stage_depths))]
        self.feature_at = {end: f"c{s + 2}" for s, end in enumerate(ends)}
        self.out_channels: list[int] = list(space.stage_widths)
        self.head = ClassifierHead(space.stage_widths[-1], space.head_width, num_classes) if num_classes else None

    def _run(self, x: torch.Tensor, blocks: list[tuple[nn.Module, int | None]]) -> torch.Tensor | OrderedDict:
        x = self.stem(x)
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, (block, choice) in enumerate(blocks):
            x = block(x) if choice is None else block(x, choice)
            if i in self.feature_at:
                features[self.feature_at[i]] = x
        return self.head(x) if self.head is not None else features


class Supernet(_Network):
    """All candidates of every block; `forward(x, arch)` runs exactly one path.

    Returns logits when built with `num_classes`, else an ordered dict of C2..C5 feature maps.
    """

    def __init__(self, space: SearchSpace, num_classes: int | None = None) -> None:
        super().__init__(space, num_classes)
        self.blocks = nn.ModuleList(ChoiceLayer(space, *io) for io in _block_io(space))

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor | OrderedDict:
        self.check_arch(arch)
        if self.space.elastic:
            child = _path_module(arch, self.num_classes).train(self.training)
            return torch.func.functional_call(child, path_tensors(self, child, block_key(arch)), (x,), strict=True)
        return self._run(x, list(zip(self.blocks, arch.choices)))

    def check_arch(self, arch: Arch) -> None:
        if arch.space.digest != self.space.digest:
            raise DetnasError(f"arch is of space '{arch.space.name}' but the supernet is '{self.space.name}'")


class ChildNet(_Network):
    """A standalone network with one fixed block per position; what gets retrained, exported and timed."""

    def __init__(self, arch: Arch, num_classes: int | None = None) -> None:
        super().__init__(arch.space, num_classes)
        self.arch = arch
        skipped = set(arch.skipped_blocks())
        self.blocks = nn.ModuleList(nn.Identity() if i in skipped else make_block(c, *io, _child_mid(arch, i, io[1]))
                                    for i, (c, io) in enumerate(zip(arch.choices, _block_io(arch.space))))

    def forward(self, x: torch.Tensor) -> torch.Tensor | OrderedDict:
        return self._run(x, [(block, None) for block in self.blocks])


def official_classifier_(net: Supernet | ChildNet) -> None:
    """Make a classification network as the official ImageNet training does: convs N(0, 1/(in_channels/groups)),
    the stem conv N(0, 0.01), biases 0, BN gamma 1 / beta 1e-4, FC N(0, 0.01), and channel-wise dropout
    (Dropout2d) before the pooling. Module layout and state-dict keys stay the same."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            std = 0.01 if name.startswith("stem.") else 1.0 / module.weight.shape[1]
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.constant_(module.bias, 1e-4)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
    if net.head is not None:
        for index, module in enumerate(net.head):
            if type(module) is nn.Dropout:
                net.head[index] = nn.Dropout2d(module.p)


def materialize(supernet: Supernet, arch: Arch, with_head: bool | None = None) -> ChildNet:
    """Cut `arch`'s path out of the supernet: an independent copy of exactly the chosen modules and weights."""
    supernet.check_arch(arch)
    keep_head = supernet.head is not None if with_head is None else with_head
    if keep_head and supernet.head is None:
        raise DetnasError("materialize(with_head=True) needs a supernet built with num_classes")
    child = ChildNet(arch, supernet.num_classes if keep_head else None)
    with torch.no_grad():
        state = {key: value.detach().clone() for key, value in path_tensors(supernet, child, block_key(arch)).items()}
    child.load_state_dict(state, strict=True)
    return child.to(next(supernet.parameters()).device).train(supernet.training)


@lru_cache(maxsize=8)
def _path_module(arch: Arch, num_classes: int | None) -> ChildNet:
    """The module a supernet path runs as (its own weights are never used: the call passes the supernet's slices);
    kept for the next steps on the same path, as BN recalibration and evaluation run one path many times."""
    with torch.device("meta"):
        return ChildNet(arch, num_classes)
