"""The elastic supernet detector: the widest detector's weights held once, each path run as a slice of them.

A path of an elastic space is a plain detector (its `ChildNet` body at the path's block widths and depths, FPN
width, head and proposals, built by `build_detector`). `ElasticDetector` runs it with `functional_call` on the
leading slices of the widest detector's tensors (`detnas.supernet.path_tensors`): training updates the shared
widest weights (BN statistics too, sliced), and `extract_child` copies the same slices into a standalone detector
that computes exactly what the path computed, ready to evaluate, export and time.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detnas.arch import Arch
from detnas.errors import DetnasError
from detnas.supernet import block_key, path_tensors

_BOX_HEAD_KEY = re.compile(r"^roi_heads\.box_head\.(?P<index>\d+)\.")
_CACHED_PATHS = 4  # BN recalibration and evaluation run one path many times; training draws a new one each step
#: torch.nn.init's in-place initialisers, which `_uninitialised` turns off while a path's module is built
_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def _uninitialised() -> Iterator[None]:
    """Modules built in the block keep their tensors as allocated (torch.nn.init's initialisers do nothing).

    For a path's module, whose every parameter and buffer is replaced right after (a strict state load, or
    `functional_call(strict=True)`): drawing random weights for the ~15M box-head parameters was most of building
    one (0.3-1.0 s against 0.05 s without, measured on the demo's supernet), paid by every training step that draws a
    new path and twice per extracted child. The initialisers are module attributes that torch's and torchvision's
    modules look up at call time, so swapping them is enough (Hugging Face's `no_init_weights` does the same)."""
    init = torch.nn.init
    saved = {name: getattr(init, name) for name in _INITIALISERS}
    for name in _INITIALISERS:
        setattr(init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


def path_key(arch: Arch, widest_convs: int, path_convs: int) -> Callable[[str], str]:
    """Child key -> widest-detector key: the body's blocks live under their chosen candidate, and the box head's
    FC (after `path_convs` convs and a flatten) is the widest head's FC (after `widest_convs`)."""
    blocks = block_key(arch)

    def key_of(key: str) -> str:
        match = _BOX_HEAD_KEY.match(key)
        if match and int(match["index"]) > path_convs:
            key = f"roi_heads.box_head.{int(match['index']) - path_convs + widest_convs}.{key[match.end():]}"
        return blocks(key)
    return key_of


class ElasticDetector(nn.Module):
    """A weight-sharing detector over an elastic space; `set_arch` picks the path the next forward runs.

    `widest` is the detector built at every gene's widest value around the `Supernet`; `make_child(arch)` builds a
    path's plain detector. Inputs and outputs are those of the torchvision detector (images, targets -> losses or
    detections)."""

    def __init__(self, widest: nn.Module, make_child: Callable[[Arch], nn.Module]) -> None:
        super().__init__()
        self.widest = widest
        self.make_child = make_child
        self.arch: Arch | None = None
        self._children: OrderedDict[Arch, nn.Module] = OrderedDict()
        self.detnas_style = getattr(widest, "detnas_style", None)
        self.pixels = getattr(widest, "pixels", None)

    @property
    def space(self) -> Any:
        return self.widest.backbone.body.space

    def set_arch(self, arch: Arch) -> None:
        self.widest.backbone.body.check_arch(arch)
        self.arch = arch

    def _child(self, arch: Arch) -> nn.Module:
        """The path's module, built once per path (its own weights are replaced by the slices at every call)."""
        if arch not in self._children:
            with _uninitialised():  # `forward` runs it on the widest weights' slices, every tensor replaced
                child = self.make_child(arch)
            if any(isinstance(m, nn.SyncBatchNorm) for m in self.widest.modules()):
                # training under torchrun converted the supernet's BN (`convert_sync_bn`), but the forward runs the
                # path's own modules on the widest tensors: they must synchronise across ranks too
                child = nn.SyncBatchNorm.convert_sync_batchnorm(child)
            momentum = {type(m): m.momentum for m in self.widest.modules() if isinstance(m, _BatchNorm)}
            for module in child.modules():
                if isinstance(module, _BatchNorm):
                    module.momentum = momentum.get(type(module), module.momentum)
            self._children[arch] = child
            while len(self._children) > _CACHED_PATHS:
                self._children.popitem(last=False)
        self._children.move_to_end(arch)
        return self._children[arch]

    def path_tensors(self, arch: Arch) -> dict[str, torch.Tensor]:
        child = self._child(arch)
        widest_convs = _box_head_convs(self.widest)
        return path_tensors(self.widest, child, path_key(arch, widest_convs, _box_head_convs(child)))

    def forward(self, images: Any, targets: Any = None) -> Any:
        if self.arch is None:
            raise DetnasError("elastic supernet detector has no active path; call set_arch(detector, arch) first")
        child = self._child(self.arch).train(self.training)
        return torch.func.functional_call(child, self.path_tensors(self.arch), (images, targets), strict=True)


def _box_head_convs(detector: nn.Module) -> int:
    head = getattr(getattr(detector, "roi_heads", None), "box_head", None)
    return sum(isinstance(m, nn.Conv2d) for m in head.modules()) if head is not None else 0


def extract_child(elastic: ElasticDetector, arch: Arch) -> nn.Module:
    """The path as a standalone plain detector: a copy of the widest weights' slices (the supernet is untouched)."""
    elastic.set_arch(arch)
    with _uninitialised():  # the strict load below replaces every tensor
        child = elastic.make_child(arch)
    with torch.no_grad():
        state = {key: value.detach().clone() for key, value in elastic.path_tensors(arch).items()}
    child.load_state_dict(state, strict=True)
    device = next(elastic.widest.parameters()).device
    return child.to(device).train(elastic.training)
