"""BN recalibration: a path cut out of a supernet inherits running statistics averaged over *all* paths, which
are wrong for this one; DetNAS re-estimates them on training images before every evaluation. The search scores
paths so and export ships a supernet path so (`recalibrated_path`), which is why it sits in the core.

Two modes. "cumulative" (the default): only the BN layers in train mode, inference inputs, an exact average over
all batches. "detnas": what the official search does (`test_server.py`): the whole detector in training mode with
its targets (so the RPN runs its training path and the box-head BN sees the RoIs sampled for training, not the
test proposals), an exponential average with momentum 0.1, on training images shuffled with a fixed seed, one
image per forward (`detnas_batches`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detnas.arch import Arch
from detnas.detection.supernet_path import SupernetDetector
from detnas.errors import DetnasError
from detnas.progress import track

BN_MODES = ("cumulative", "detnas")
BN_IMAGES = 4000  # training images a path's BN statistics are re-estimated on (DetNAS: 4000)
BN_BATCH = 8
MAX_CACHED_BN_IMAGES = 256
#: the official recalibration's SyncBN momentum; the official loader shuffles with a fixed seed (any fixed seed)
DETNAS_BN_MOMENTUM = 0.1
DETNAS_BN_SEED = 0


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def detnas_batches(dataset: Any, count: int, pixels: Any, device: torch.device | str = "cpu",
                   seed: int = DETNAS_BN_SEED) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """`count` training images of a `DetectionDataset` in an order shuffled with `seed`, one (images, targets)
    pair per image, images as `pixels.to_model_input` gives them: the input of the "detnas" mode."""
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    for index in order[:count]:
        target = dataset.target(index)
        yield ([pixels.to_model_input(dataset.load_image(index)).to(device)],
               [{"boxes": target["boxes"].to(device), "labels": target["labels"].to(device)}])


def _detnas_forward(model: nn.Module, batch: Any) -> Any:
    images, targets = batch
    return model(images, targets)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any],
                   forward: Callable[[nn.Module, Any], Any] | None = None, mode: str = "cumulative") -> int:
    """Reset every BN's running statistics and re-estimate them on `batches`; returns the number of batches.

    "cumulative": only the BN layers are put in train mode (the rest stays in eval mode, so a detector runs its
    inference path and needs no targets), and the momentum is None during the pass, i.e. a cumulative average
    over all batches instead of an exponential one that would forget the first images. "detnas": the whole model
    in train mode, batches are (images, targets) (see `detnas_batches`) unless `forward` says otherwise, momentum
    0.1. Either way the model is left in eval mode with its momenta restored. Do not pass a SyncBatchNorm model
    under torchrun: ranks recalibrate different paths, so their statistics must not be synchronised.
    """
    if mode not in BN_MODES:
        raise ValueError(f"BN recalibration mode '{mode}' is not one of {', '.join(BN_MODES)}")
    layers = batchnorms(model)
    momenta = [bn.momentum for bn in layers]
    if mode == "detnas":
        model.train()
        forward = forward or _detnas_forward
    else:
        model.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = DETNAS_BN_MOMENTUM if mode == "detnas" else None
        bn.train()
    count = 0
    try:
        for batch in batches:
            forward(model, batch) if forward is not None else model(batch)
            count += 1
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
        model.eval()
    return count


class BnRecalibration:
    """A path's detector with its BN statistics re-estimated on `bn_images` training images: the supernet's running
    statistics mix every path, so each path's must be its own before it is scored or shipped."""

    def __init__(self, supernet: SupernetDetector, bn_set: Any, bn_images: int = BN_IMAGES, bn_batch: int = BN_BATCH,
                 device: str = "cpu") -> None:
        if len(bn_set) == 0:
            raise DetnasError(f"empty data set ({bn_set.source}); BN recalibration needs training images")
        self.supernet, self.bn_set = supernet, bn_set
        self.bn_count = min(bn_images, len(bn_set))
        self.bn_batch, self.device = bn_batch, torch.device(device)
        self._bn_cache: list[list[torch.Tensor]] | None = None

    def _read_bn_batches(self) -> Iterator[list[torch.Tensor]]:
        pixels = self.supernet.pixels
        for first in range(0, self.bn_count, self.bn_batch):
            yield [pixels.to_model_input(self.bn_set.load_image(i)).to(self.device)
                   for i in range(first, min(first + self.bn_batch, self.bn_count))]

    def _bn_batches(self) -> Iterable[list[torch.Tensor]]:
        """The first `bn_count` training images as model inputs; decoded once and kept when they are few."""
        if self.bn_count > MAX_CACHED_BN_IMAGES:
            return self._read_bn_batches()
        if self._bn_cache is None:
            self._bn_cache = list(self._read_bn_batches())
        return self._bn_cache

    def recalibrate(self, detector: nn.Module) -> None:
        """A supernet trained in the official detector style is recalibrated as the official search does (training
        mode with targets, shuffled images one at a time, momentum 0.1); others by the exact cumulative average."""
        what = f"BN re-estimation on {self.bn_count} images"
        if self.supernet.style == "detnas":
            batches = detnas_batches(self.bn_set, self.bn_count, self.supernet.pixels, self.device)
            recalibrate_bn(detector, track(batches, f"{what} (one at a time)", self.bn_count), mode="detnas")
        else:
            recalibrate_bn(detector, track(self._bn_batches(), f"{what} (batches of {self.bn_batch})",
                                           -(-self.bn_count // self.bn_batch)))

    def calibrated(self, arch: Arch) -> nn.Module:
        """The detector the search scores for `arch` (materialised, BN re-estimated on the same images in the same
        batches), in eval mode: what ships a search winner, so the shipped weights are the ones the journal scored."""
        detector = self.supernet.materialize(arch).to(self.device)
        self.recalibrate(detector)
        return detector


def recalibrated_path(supernet_path: str | Path, arch: Arch, bn_ann: Path, bn_images: Path, bn_count: int = BN_IMAGES,
                      bn_batch: int = BN_BATCH, proposals: int | None = None, min_size: int | None = None,
                      max_size: int | None = None) -> nn.Module:
    """`arch`'s detector cut from a detection supernet checkpoint with its BN statistics re-estimated on the
    training split as the search does: with the search's count, batch and sizes (the BN images are resized to
    them), the detector it scored."""
    from detnas.data import CocoDetection

    supernet = SupernetDetector.load(supernet_path, min_size, max_size, proposals)
    data = CocoDetection(bn_ann, bn_images)
    supernet.require_classes(data, bn_ann)
    return BnRecalibration(supernet, data, bn_count, bn_batch).calibrated(arch)
