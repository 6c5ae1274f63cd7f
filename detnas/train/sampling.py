"""Single-path sampling for one-shot training: one path per iteration, identical on every rank.

`UniformPathSampler` draws each block's choice uniformly. `DetnasBinSampler` is what the official ImageNet supernet
training does (DetNAS and SPOS alike): one of 7 fixed bins of full-network FLOPs uniformly, then up to 500 uniform
draws until a path falls into it, else a plain uniform path. `FlopsBinSampler` spreads bins over the space's own
FLOPs range instead, for spaces the fixed bins do not fit; both train light and heavy paths about equally often
instead of concentrating on the middle of the FLOPs range. `SandwichSampler` is for elastic spaces (the sandwich
rule of BigNAS/OFA, spread over consecutive iterations): the widest path, the narrowest, then `random` uniform
paths, in a fixed cycle, so the largest and smallest networks the supernet shares are trained as often as any.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

import torch

from detnas.arch import Arch, extreme_arch, gene_options, sample_arch
from detnas.errors import DetnasError
from detnas.flops import count_flops, flops_table
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


#: the official bins: [290, 300], [300, 310], ..., [350, 360] MFLOPs of the whole classification network at 224
#: (1000 classes, the op table's convention), inclusive at both ends
DETNAS_BINS_MFLOPS: tuple[tuple[int, int], ...] = tuple((low, low + 10) for low in range(290, 360, 10))
DETNAS_BIN_TRIES = 500
DETNAS_BIN_CLASSES = 1000


class DetnasBinSampler(UniformPathSampler):
    """The official sampler: a uniform bin, up to `DETNAS_BIN_TRIES` uniform paths into it, else a uniform path.

    The bins were made for the 300M space; a space none of whose paths reaches them is refused rather than
    silently sampled uniformly (use `flops-bins` there).
    """

    def __init__(self, space: SearchSpace, seed: int) -> None:
        super().__init__(space, seed)
        lightest, heaviest = (count_flops(Arch(space, tuple(pick(space.choices, key=lambda c: table[c])
                                                            for table in flops_table(space, (224, 224), 0)[1])),
                                          224, DETNAS_BIN_CLASSES) for pick in (min, max))
        low, high = DETNAS_BINS_MFLOPS[0][0] * 1e6, DETNAS_BINS_MFLOPS[-1][1] * 1e6
        if heaviest < low or lightest > high:
            raise DetnasError(f"sampler 'detnas-bins': the official bins ({low / 1e6:.0f}-{high / 1e6:.0f} MFLOPs) "
                              f"lie outside space '{space.name}' ({lightest / 1e6:.0f}-{heaviest / 1e6:.0f} MFLOPs);"
                              " use --set sampler=flops-bins (bins over this space's range) or uniform")

    def sample(self) -> Arch:
        low, high = DETNAS_BINS_MFLOPS[self.rng.randrange(len(DETNAS_BINS_MFLOPS))]
        for _ in range(DETNAS_BIN_TRIES):
            arch = sample_arch(self.space, self.rng)
            if low * 1e6 <= count_flops(arch, 224, DETNAS_BIN_CLASSES) <= high * 1e6:
                return arch
        return sample_arch(self.space, self.rng)


class SandwichSampler(UniformPathSampler):
    """Iteration i of every cycle of 2 + `random`: 0 the widest path, 1 the narrowest, then uniform paths.

    The op choices of the two extremes are drawn uniformly (width and depth are what the sandwich bounds); the
    position in the cycle is part of the state, so a resumed run draws the same paths."""

    def __init__(self, space: SearchSpace, seed: int, random_paths: int = 2) -> None:
        super().__init__(space, seed)
        if not space.elastic:
            raise DetnasError(f"sampler 'sandwich' bounds widths, depths and detector genes; space '{space.name}' has "
                              "none (use uniform, flops-bins or detnas-bins)")
        self.cycle = 2 + random_paths
        self.step = 0

    def sample(self) -> Arch:
        position, self.step = self.step % self.cycle, self.step + 1
        if position >= 2:
            return sample_arch(self.space, self.rng)
        choices = tuple(self.rng.choice(self.space.choices) for _ in range(self.space.num_blocks))
        return extreme_arch(self.space, choices, widest=position == 0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.step = int(state["step"])


def make_sampler(kind: str, space: SearchSpace, seed: int, bins: int = 10) -> PathSampler:
    if kind == "detnas-bins":
        return DetnasBinSampler(space, seed)
    if kind == "sandwich":
        return SandwichSampler(space, seed)
    return FlopsBinSampler(space, seed, bins) if kind == "flops-bins" else UniformPathSampler(space, seed)


def broadcast_arch(arch: Arch, device: torch.device) -> Arch:
    """Every rank takes rank 0's path: the supernet's weights only stay in sync if all ranks run the same path."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return arch
    if arch.space.elastic:  # every gene (width multiples are floats; float64 holds them and the integers exactly)
        genes = torch.tensor(arch.genes(), dtype=torch.float64, device=device)
        dist.broadcast(genes, src=0)
        options = [type(allowed[0]) for allowed in gene_options(arch.space)]
        return Arch.from_genes(arch.space, tuple(kind(g) for kind, g in zip(options, genes.tolist())))
    choices = torch.tensor(arch.choices, dtype=torch.int64, device=device)
    dist.broadcast(choices, src=0)
    return Arch(arch.space, tuple(int(c) for c in choices.tolist()))
