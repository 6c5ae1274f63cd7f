"""BN recalibration: a path cut out of a supernet inherits running statistics averaged over *all* paths, which
are wrong for this one; DetNAS re-estimates them on training images before every evaluation.

Two modes. "cumulative" (the default): only the BN layers in train mode, inference inputs, an exact average over
all batches. "detnas": what the official search does (`test_server.py`): the whole detector in training mode with
its targets (so the RPN runs its training path and the box-head BN sees the RoIs sampled for training, not the
test proposals), an exponential average with momentum 0.1, on training images shuffled with a fixed seed, one
image per forward (`detnas_batches`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BN_MODES = ("cumulative", "detnas")
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
