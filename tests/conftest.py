"""Shared fixtures: real data under ../shared/data when present, small threads for a 2-core machine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(os.environ.get("DETNAS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """`mktemp(name)` for a module's shared artefacts, removed when the module ends: the suite's disk peak is then
    about one module's exports and checkpoints (686 MB measured), not the sum of all of them (3.6 GB)."""
    made: list[Path] = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def shared_dataset(name: str) -> Path:
    """Path of a real data set under ../shared/data, or skip with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set '{name}' not found at {path} (set DETNAS_SHARED_DATA to its parent folder)")
    return path


@pytest.fixture
def coco128() -> Path:
    return shared_dataset("coco128")


@pytest.fixture
def coco_mini() -> Path:
    return shared_dataset("coco_mini")


@pytest.fixture
def cifar10() -> Path:
    return shared_dataset("cifar10")


def cuda_or_skip() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none is visible (torch.cuda.is_available() is False)")
