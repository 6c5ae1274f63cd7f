"""Plugging things in: a toy latency backend through `detnas bench latency`, a toy search algorithm through the
search loop, and the one error line a wrong name gets."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence

import pytest
import torch
from test_search_fakes import TINY, FakeAccuracy, FakeLatency

from detnas.arch import Arch
from detnas.bench.backends import LATENCY_BACKENDS, LatencyBackend, Prepared
from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.registry import Registry
from detnas.search.algorithms import ALGORITHMS, SearchAlgorithm
from detnas.search.evolution import EvolutionSettings, Search, best_record
from detnas.search.interfaces import BackboneCost
from detnas.search.journal import read_journal
from detnas.search.objectives import OBJECTIVES, Constraints, Objective

TOY_ARCH = json.dumps({"space": "registry-toy", "choices": "0|3", "space_spec": {
    "name": "registry-toy", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [1, 1], "head_width": 32,
    "choices": [0, 3]}})


def test_registry_refuses_clashes_and_lists_names() -> None:
    things: Registry[int] = Registry("thing", "--thing")
    things.register("a")(1)
    things.register("b")(2)
    with pytest.raises(DetnasError, match="thing 'a' is already registered"):
        things.register("a")(3)
    with pytest.raises(DetnasError) as err:
        things.get("c")
    assert str(err.value) == "--thing: unknown thing 'c'; choose one of a, b"


class _PythonLoop(LatencyBackend):
    """Toy runtime: the torch module in a Python loop, counting its runs."""

    title = "a Python loop"
    runs = 0

    def prepare_module(self, module, inputs, *, precision, protocol, options, calibration=None) -> Prepared:
        model = module.eval()

        def call(i: int) -> None:
            type(self).runs += 1
            with torch.inference_mode():
                model(inputs[i])

        return Prepared(call=call, n_inputs=len(inputs), details={"runtime": "toy python loop"})


@pytest.fixture
def toy_backend() -> Iterator[type[_PythonLoop]]:
    LATENCY_BACKENDS.register("toy-loop")(_PythonLoop)
    _PythonLoop.runs = 0
    yield _PythonLoop
    LATENCY_BACKENDS.unregister("toy-loop")


def test_a_registered_backend_times_through_bench_latency(toy_backend, tmp_path, capsys) -> None:
    out = tmp_path / "toy.json"
    code = main(["bench", "latency", "--arch", TOY_ARCH, "--backend", "toy-loop", "--size", "32", "--runs", "3",
                 "--warmup", "1", "--no-cache", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["backend"] == "toy-loop" and result["stats"]["n"] == 3 and result["stats"]["median_ms"] > 0
    assert result["details"]["runtime"] == "toy python loop" and toy_backend.runs == 4  # 1 warm-up + 3 timed
    assert main(["bench", "latency", "--arch", TOY_ARCH, "--backend", "nope", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'nope'; choose one of torch, ort, trt, toy-loop" in err and len(err.strip().splitlines()) == 1
    from detnas.bench.oracle import measure_onnx

    (tmp_path / "x.onnx").write_bytes(b"an ONNX file")
    with pytest.raises(DetnasError, match="the toy-loop backend times torch modules; use --backend ort or trt"):
        measure_onnx(tmp_path / "x.onnx", [torch.zeros(1, 3, 8, 8)], backend="toy-loop")


class _UniformBlocks(SearchAlgorithm):
    """Toy algorithm: every block takes one choice, a different one per generation, then random fill-ins."""

    def quotas(self, generation: int) -> list[tuple[str, int]]:
        return [("uniform", 1), ("random", self.settings.population - 1)]

    def propose(self, origin: str, rng: random.Random, parents: Sequence[Arch]) -> Arch:
        if origin == "uniform":
            return Arch(self.space, (self.space.choices[rng.randrange(len(self.space.choices))],) * self.space.num_blocks)
        return super().propose(origin, rng, parents)


def test_a_registered_algorithm_runs_in_the_search_loop(tmp_path) -> None:
    ALGORITHMS.register("toy-uniform")(_UniformBlocks)
    try:
        settings = EvolutionSettings(algorithm="toy-uniform", population=3, generations=3, seed=2)
        accuracy = FakeAccuracy()
        search = Search(TINY, settings, Constraints(latency_ms=1e3), accuracy, FakeLatency(), BackboneCost(64),
                        tmp_path / "toy.jsonl")
        candidates = search.run()
        uniform = [c for c in candidates if c.origin == "uniform"]
        assert len(candidates) == 9 and len(accuracy.calls) == 9 and len({c.hash for c in candidates}) == 9
        assert len(uniform) == 3 and all(len(set(c.arch.choices)) == 1 for c in uniform)
        assert read_journal(tmp_path / "toy.jsonl")[0]["config"]["algorithm"] == "toy-uniform"
    finally:
        ALGORITHMS.unregister("toy-uniform")
    with pytest.raises(DetnasError, match="--algorithm: unknown search algorithm 'toy-uniform'; choose one of "
                                          "evolution, random"):
        EvolutionSettings(algorithm="toy-uniform")


class _Fastest(Objective):
    """Toy objective: the fastest candidate wins, whatever its AP."""

    def fitness(self, ap: float, latency_ms: float, constraints: Constraints) -> float:
        return -latency_ms


def test_a_registered_objective_ranks_the_search(tmp_path) -> None:
    OBJECTIVES.register("toy-fastest")(_Fastest)
    try:
        constraints = Constraints(objective="toy-fastest", latency_ms=1e3)
        settings = EvolutionSettings(population=4, generations=2, parents=2, mutations=2, crossovers=1, randoms=1)
        search = Search(TINY, settings, constraints, FakeAccuracy(), FakeLatency(), BackboneCost(64),
                        tmp_path / "fastest.jsonl")
        candidates = search.run()
        winner = best_record(candidates, constraints)
        assert winner.latency.median_ms == min(c.latency.median_ms for c in candidates)
        assert winner.metrics["AP"] < max(c.metrics["AP"] for c in candidates)  # AP alone would pick another
    finally:
        OBJECTIVES.unregister("toy-fastest")
