"""Every fixture the test modules share, and the markers' skips in one place: real data under ../shared/data when
present, small threads for a 2-core machine, the tiny search supernet; `gpu` / `tensorrt` tests skip here with the
reason when the machine lacks them (builders and test doubles are in tests/helpers/)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from helpers.data import shared_dataset

# pytest-xdist runs one worker per core (README's `-n auto`): each then keeps to its share of the cores, so two
# workers do not oversubscribe 2 cores with 2 threads each
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))
# Off a terminal, a step that runs longer than this prints progress lines on stderr; on a loaded machine any step
# may, so tests that count stderr lines would depend on the load. Tests of the lines themselves set it to 0.
os.environ.setdefault("DETNAS_PROGRESS_INTERVAL", "3600")


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist hands out whole modules (`--dist loadfile`) starting, by default, with the modules of most tests;
    the few `heavy` modules then started last and ran on after the rest had finished (1,089 s for the suite on 2
    workers). Collection order decides instead, and `heavy` modules come first there."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


#: module fixtures that train or export end to end: every test that uses one is `slow`, so the fast tier
#: (`-m "not slow"`) never pays for them (test_precision's trained detector and its INT8 export: 873 s of setup in a
#: fast-tier run on 2 loaded cores)
SLOW_FIXTURES = {"trained", "int8_export"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on an end-to-end fixture (`SLOW_FIXTURES`) are `slow`; `heavy` modules first (see `pytest_configure`);
    `gpu` tests need a CUDA GPU, `tensorrt` tests TensorRT and a CUDA GPU: skipped with the reason otherwise."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
    missing = [] if torch.cuda.is_available() else ["needs a CUDA GPU; none is visible (torch.cuda.is_available() is False)"]
    reasons = {"gpu": missing, "tensorrt": missing + ([] if importlib.util.find_spec("tensorrt") else
                                                      ["needs TensorRT; the Python package 'tensorrt' is not installed"])}
    for item in items:
        for marker, why in reasons.items():
            if why and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason="; ".join(why)))


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


@pytest.fixture
def coco128() -> Path:
    return shared_dataset("coco128")


@pytest.fixture
def coco_mini() -> Path:
    return shared_dataset("coco_mini")


@pytest.fixture
def cifar10() -> Path:
    return shared_dataset("cifar10")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP spin contention (restored after)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def search_setup(module_tmp: Callable[[str], Path]) -> dict[str, Path]:
    """The untrained tiny search supernet and its coco_mini split (`helpers.search.tiny_search_supernet`)."""
    from helpers.search import tiny_search_supernet

    return tiny_search_supernet(shared_dataset("coco_mini"), module_tmp("search_e2e"))
