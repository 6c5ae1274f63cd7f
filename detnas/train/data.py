"""Resumable data order: batch t of a run is a pure function of (seed, t), and so is each sample's augmentation.

The index stream is an endless sequence of per-epoch permutations (epoch e shuffled with seed + e); iteration t
takes the global batch at stream positions [t*B, (t+1)*B) and rank r its slice, which shards exactly like
`DistributedSampler` but can start at any iteration. Each sample's random augmentation runs under a seed
derived from its stream position, so a resumed run (or a run with workers) sees the very same pixels.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, position: int) -> int:
    return (seed * _MIX + position * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)


class SeededBatchSampler:
    """Yields this rank's batches of (index, sample seed) from iteration `start` on, forever."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.start = rank, world, start
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=generator)
        return int(self._perm[offset])

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        first = (iteration * self.world + self.rank) * self.batch_size
        return [(self._index(p), sample_seed(self.seed, p)) for p in range(first, first + self.batch_size)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration = self.start
        while True:
            yield self.batch(iteration)
            iteration += 1


class SeededDataset(Dataset):
    """Runs the wrapped dataset's random transforms under a per-sample seed, leaving the caller's RNGs alone."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(saved)
