"""The small interfaces the search talks to, so the algorithm never knows how AP or latency is obtained.

Real implementations live in `detnas.search.evaluators` (supernet + COCO AP) and `detnas.search.latency`
(the bench oracle or a device profile); tests pass deterministic functions of the arch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Protocol

import torch

from detnas.arch import Arch
from detnas.flops import count_flops
from detnas.search.records import Latency
from detnas.space import SearchSpace
from detnas.supernet import Supernet


class AccuracyEvaluator(Protocol):
    """COCO metrics of one path by name, at least 'AP' (and usually AP50, AP75, APs, APm, APl, ...).

    `last_timing` says where the last `evaluate` spent its time (seconds by phase, e.g. bn_s, eval_s; empty when
    the evaluator does not break it down); the search journals it beside the metrics."""

    last_timing: Mapping[str, float]

    def evaluate(self, arch: Arch) -> dict[str, float]: ...


class LatencyEstimator(Protocol):
    """Latency of one arch: measured statistics or a predicted median (`Latency`).

    `source` is 'measured' or 'predicted'; `fingerprint` names the environment the numbers belong to.
    """

    source: str
    fingerprint: str

    def latency(self, arch: Arch) -> Latency: ...


class FreshTimer(Protocol):
    """Times archs again from scratch (never from the cache the search filled), in `rounds` interleaved rounds:
    the check of the winner and the runner-up after the search."""

    source: str
    fingerprint: str

    def fresh(self, archs: Sequence[Arch], rounds: int) -> list[Latency]: ...


@lru_cache(maxsize=16)
def _params_table(space: SearchSpace) -> tuple[int, tuple[dict[int, int], ...]]:
    """(stem params, per-block {choice: params}) read once off a meta-device supernet."""
    with torch.device("meta"):
        supernet = Supernet(space)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return count(supernet.stem), tuple({int(c): count(m) for c, m in layer.candidates.items()}
                                       for layer in supernet.blocks)


class BackboneCost:
    """FLOPs (DetNAS convention, at `size`) and params of the backbone, from per-block tables.

    Analytic and cheap (microseconds), so the limits are checked before any latency is measured; the result
    equals `detnas.flops.count_flops` / `count_params`, which build a whole network per call.
    """

    def __init__(self, size: int | tuple[int, int] = 224) -> None:
        self.size = size

    def __call__(self, arch: Arch) -> tuple[int, int]:
        stem, per_block = _params_table(arch.space)
        return count_flops(arch, self.size), stem + sum(table[c] for table, c in zip(per_block, arch.choices))
