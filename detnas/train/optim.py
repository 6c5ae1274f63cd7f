"""SGD as DetNAS trains it: ImageNet decay on conv/FC weights only, detection groups as maskrcnn-benchmark makes
them, schedules as pure functions of the iteration, and no update at all for supernet parameters off the sampled
path.

The learning rate is recomputed from the iteration every step instead of living in a scheduler object, so the
"scheduler state" of a checkpoint is just the iteration and resume cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detnas.arch import Arch
from detnas.supernet import Supernet
from detnas.train.recipes import TrainConfig

#: maskrcnn-benchmark's SOLVER.BIAS_LR_FACTOR (and WEIGHT_DECAY_BIAS = 0)
DETECTRON_BIAS_LR_FACTOR = 2.0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups (the ImageNet recipe): conv and linear weights decay; BN affine parameters and every bias do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_weight = name == "weight" and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))
            (decay if is_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def detectron_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups as the official detection training (maskrcnn-benchmark `make_optimizer`): every bias at twice the
    learning rate without decay; every other parameter, BN weights included, with decay."""
    biases: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            (biases if name.endswith("bias") else rest).append(param)
    return [{"params": rest, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": 0.0, "lr_factor": DETECTRON_BIAS_LR_FACTOR}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    groups = detectron_param_groups if cfg.param_groups == "detectron" else param_groups
    return torch.optim.SGD(groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)


def lr_at(cfg: TrainConfig, iteration: int) -> float:
    """Linear decay to 0 at `iterations`, or /10 at each milestone; optional linear warm-up from warmup_factor."""
    if cfg.schedule == "linear":
        factor = max(0.0, 1.0 - iteration / cfg.iterations)
    else:
        factor = 0.1 ** sum(iteration >= m for m in cfg.milestones)
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1.0 - alpha) + alpha
    return cfg.lr * factor


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate, times a group's `lr_factor` (detection biases)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)


def freeze_bn_affine(model: nn.Module) -> list[nn.Parameter]:
    """Take every BN gamma/beta out of training (they keep their values; statistics still update) and return them.

    The official supernet fine-tuning re-enables gradients per iteration only for Conv2d, Linear and BatchNorm2d
    modules; its BN layers are SyncBN, not BatchNorm2d, so no BN affine parameter of the supernet detector learns.
    """
    frozen = [p for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False)]
    for param in frozen:
        param.requires_grad_(False)
    return frozen


def drop_grads(params: Iterable[nn.Parameter]) -> None:
    """Forget gradients so SGD skips these parameters entirely: no weight decay, no momentum step, buffer kept."""
    for param in params:
        param.grad = None


class OffPath:
    """Lists the supernet parameters a path does not use, from per-(block, choice) lists built once."""

    def __init__(self, supernet: Supernet) -> None:
        self.per_choice = [{int(c): list(m.parameters()) for c, m in layer.candidates.items()}
                           for layer in supernet.blocks]
        self.supernet = supernet

    def __call__(self, arch: Arch) -> list[nn.Parameter]:
        """Every candidate but the chosen one; every candidate of a block the path's depth skips."""
        self.supernet.check_arch(arch)
        skipped = set(arch.skipped_blocks())
        return [p for block, (table, chosen) in enumerate(zip(self.per_choice, arch.choices))
                for c, params in table.items() if c != chosen or block in skipped for p in params]
