"""BN recalibration: a path cut out of a supernet inherits running statistics averaged over *all* paths, which
are wrong for this one; DetNAS re-estimates them on training images before every evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any],
                   forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Reset every BN's running statistics and re-estimate them on `batches`; returns the number of batches.

    Only the BN layers are put in train mode (the rest stays in eval mode, so a detector runs its inference
    path and needs no targets), and the momentum is None during the pass, i.e. a cumulative average over all
    batches instead of an exponential one that would forget the first images. The model is left in eval mode
    with its momenta restored. Do not pass a SyncBatchNorm model under torchrun: ranks recalibrate different
    paths, so their statistics must not be synchronised.
    """
    layers = batchnorms(model)
    momenta = [bn.momentum for bn in layers]
    model.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
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
