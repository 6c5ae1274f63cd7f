"""Single-path sampling for one-shot training: one path per iteration, identical on every rank.

`UniformPathSampler` draws each block's choice uniformly (DetNAS). `FlopsBinSampler` first picks a FLOPs bin
uniformly, then rejection-samples a uniform path that falls into it (SPOS), so light and heavy paths are trained
equally often instead of concentrating on the middle of the FLOPs range.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

import torch

from detnas.arch import Arch, sample_arch
from detnas.flops import count_flops
from detnas.space import SearchSpace


class PathSampler(Protocol):
    space: SearchSpace

    def sample(self) -> Arch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list[Any]) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


class UniformPathSampler:
    """Every block's choice uniform and independent; a private seeded generator, so resume replays it."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.rng = random.Random(seed)

    def sample(self) -> Arch:
        return sample_arch(self.space, self.rng)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _set_rng_state(self.rng, state["rng"])


class FlopsBinSampler(UniformPathSampler):
    """A uniform bin of backbone FLOPs, then a uniform path inside it.

    Bins split the range between the 0.5% and 99.5% quantiles of uniformly drawn paths (estimated from a fixed
    seed), because the extreme paths are so rare under uniform sampling that rejection would never reach them;
    paths outside that range land in the first or last bin. A bin that stays empty after `max_tries` draws is
    replaced by another uniformly drawn bin.
    """

    def __init__(self, space: SearchSpace, seed: int, bins: int = 10, size: int = 224, max_tries: int = 2000,
                 estimate_samples: int = 4000) -> None:
        super().__init__(space, seed)
        self.bins, self.size, self.max_tries = bins, size, max_tries
        probe = random.Random(12345)
        flops = sorted(count_flops(sample_arch(space, probe), size) for _ in range(estimate_samples))
        self.low = flops[int(0.005 * (len(flops) - 1))]
        self.high = flops[int(0.995 * (len(flops) - 1))]

    def bin_of(self, arch: Arch) -> int:
        if self.high <= self.low:
            return 0
        fraction = (count_flops(arch, self.size) - self.low) / (self.high - self.low)
        return min(self.bins - 1, max(0, int(fraction * self.bins)))

    def sample(self) -> Arch:
        while True:
            target = self.rng.randrange(self.bins)
            for _ in range(self.max_tries):
                arch = sample_arch(self.space, self.rng)
                if self.bin_of(arch) == target:
                    return arch


def make_sampler(kind: str, space: SearchSpace, seed: int, bins: int = 10) -> PathSampler:
    return FlopsBinSampler(space, seed, bins) if kind == "flops-bins" else UniformPathSampler(space, seed)


def broadcast_arch(arch: Arch, device: torch.device) -> Arch:
    """Every rank takes rank 0's path: the supernet's weights only stay in sync if all ranks run the same path."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return arch
    choices = torch.tensor(arch.choices, dtype=torch.int64, device=device)
    dist.broadcast(choices, src=0)
    return Arch(arch.space, tuple(int(c) for c in choices.tolist()))
