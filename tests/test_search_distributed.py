"""Two gloo processes share each generation: disjoint halves evaluated, rank 0's journal equals a single run's."""

from __future__ import annotations

import json
import socket

import torch.distributed as dist
import torch.multiprocessing as mp
from test_search_fakes import TINY, FakeAccuracy, FakeLatency

from detnas.search.evolution import EvolutionSettings, Search
from detnas.search.interfaces import BackboneCost
from detnas.search.journal import read_journal, strip_volatile
from detnas.search.objectives import Constraints

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
