"""Two gloo processes share each generation: disjoint halves evaluated, rank 0's journal equals a single run's."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from detnas.errors import DetnasError
from detnas.search.evolution import EvolutionSettings, Search
from detnas.search.interfaces import BackboneCost
from detnas.search.journal import read_journal, strip_volatile
from detnas.search.objectives import Constraints

from helpers.search import TINY, FakeAccuracy, FakeLatency

SETTINGS = EvolutionSettings(population=6, generations=3, parents=3, mutations=2, crossovers=2, randoms=2, seed=7)


def _search(path, accuracy) -> Search:
    return Search(TINY, SETTINGS, Constraints(latency_ms=6.0), accuracy, FakeLatency(), BackboneCost(64), path)


def _rank(rank: int, world: int, port: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        accuracy = FakeAccuracy()
        _search(f"{tmp}/dist.jsonl", accuracy).run()
        with open(f"{tmp}/calls{rank}.json", "w") as handle:
            json.dump(accuracy.calls, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes under torchrun
def test_two_ranks_split_generations_and_rank0_journals(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    calls = [json.loads((tmp_path / f"calls{r}.json").read_text()) for r in range(2)]
    assert calls[0] and calls[1] and not set(calls[0]) & set(calls[1])
    single = FakeAccuracy()
    _search(tmp_path / "single.jsonl", single).run()
    assert sorted(calls[0] + calls[1]) == sorted(single.calls)
    assert strip_volatile(read_journal(tmp_path / "dist.jsonl")) == strip_volatile(read_journal(tmp_path / "single.jsonl"))


def _rank_refused(rank: int, world: int, port: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))  # a rank left waiting fails instead of hanging the test
    try:
        _search(f"{tmp}/taken.jsonl", FakeAccuracy()).run()
    except DetnasError as exc:
        with open(f"{tmp}/error{rank}.txt", "w") as handle:
            handle.write(str(exc))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes under torchrun
def test_an_error_on_rank0_stops_every_rank(tmp_path) -> None:
    """Rank 0 refuses to overwrite an existing journal; rank 1 hears of it instead of waiting for a plan."""
    (tmp_path / "taken.jsonl").write_text('{"type": "header"}\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_refused, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    assert "a journal already exists" in (tmp_path / "error0.txt").read_text()
    assert (tmp_path / "error1.txt").read_text().startswith("rank 0 stopped: ")
    assert (tmp_path / "taken.jsonl").read_text() == '{"type": "header"}\n'
