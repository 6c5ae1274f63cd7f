"""Plugging things in: a toy latency backend through `detnas bench latency`, a toy detector kind through `bench
latency` and `export_onnx`, a toy search algorithm and objective through the search loop, and the one error line a
wrong name gets."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence

import pytest
import torch
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detnas.arch import Arch
from detnas.bench.backends import LATENCY_BACKENDS, LatencyBackend, Prepared
from detnas.cli.main import main
from detnas.detection import build_detector
from detnas.detection.backbone import DetectionBackbone
from detnas.detection.kinds import DETECTOR_KINDS, DetectorKind
from detnas.detection.nms import batched_nms
from detnas.errors import DetnasError
from detnas.export import class_table, export_onnx
from detnas.registry import Registry
from detnas.search.algorithms import ALGORITHMS, SearchAlgorithm
from detnas.search.evolution import EvolutionSettings, Search, best_record
from detnas.search.interfaces import BackboneCost
from detnas.search.journal import read_journal
from detnas.search.objectives import OBJECTIVES, Constraints, Objective
from detnas.supernet import ChildNet

from helpers.search import TINY, FakeAccuracy, FakeLatency

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

    def prepare_module(self, module, inputs, *, precision, device, threads, options, calibration=None) -> Prepared:
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


class ToyCenters(torch.nn.Module):
    """Toy detector kind: one 1x1 conv on the finest FPN level predicts class scores and left/top/right/bottom
    distances at every location (FCOS without its tricks)."""

    def __init__(self, backbone: DetectionBackbone, num_classes: int) -> None:
        super().__init__()
        self.backbone, self.num_classes = backbone, num_classes
        self.head = torch.nn.Conv2d(backbone.out_channels, num_classes + 4, 1)
        self.score_thresh, self.nms_thresh, self.detections_per_img = 0.05, 0.5, 100


def _build_centers(backbone_net, num_classes: int, style: str, **_torchvision) -> ToyCenters:
    return ToyCenters(DetectionBackbone(backbone_net, ["c4", "c5"], LastLevelMaxPool(), ["p6"]), num_classes)


def _center_outputs(detector: ToyCenters, features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (detector.head(features[0]),)


def _deploy_centers(graph, images) -> list[dict[str, torch.Tensor]]:
    """Scores and boxes at each location of the finest level, background dropped, then the graph's NMS."""
    net = graph.detector
    out = _center_outputs(net, list(net.backbone(images.tensors).values()))[0]
    stride = images.tensors.shape[-1] / out.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(out.shape[-2]), torch.arange(out.shape[-1]), indexing="ij")
    centers = torch.stack([xs, ys, xs, ys]).flatten(1).to(out.dtype) * stride + stride / 2
    detections = []
    for scores, distances in zip(torch.sigmoid(out[:, 1:net.num_classes]).flatten(2), out[:, net.num_classes:]):
        score, label = scores.max(0)
        offsets = torch.relu(distances.flatten(1)) * stride
        boxes = (centers + torch.stack([-offsets[0], -offsets[1], offsets[2], offsets[3]])).T
        keep = batched_nms(boxes, score, label + 1, net.nms_thresh, net.score_thresh, graph.max_detections)
        detections.append({"boxes": boxes[keep], "scores": score[keep], "labels": label[keep] + 1})
    return detections


@pytest.fixture
def toy_kind() -> Iterator[str]:
    DETECTOR_KINDS.register("toy-centers")(DetectorKind(model=ToyCenters, build=_build_centers,
                                                        dense_outputs=_center_outputs, deploy=_deploy_centers))
    yield "toy-centers"
    DETECTOR_KINDS.unregister("toy-centers")


FOUR_STAGE_ARCH = {"space": "registry-four", "choices": "0|3|1|2", "space_spec": {
    "name": "registry-four", "stem_width": 8, "stage_widths": [16, 32, 48, 64], "stage_depths": [1, 1, 1, 1],
    "head_width": 32, "choices": [0, 1, 2, 3]}}


@pytest.mark.slow
def test_a_registered_detector_kind_is_timed_and_exported(toy_kind, tmp_path, capsys) -> None:
    for scope in ("network", "network+nms"):
        out = tmp_path / f"{scope}.json"
        assert main(["bench", "latency", "--arch", json.dumps(FOUR_STAGE_ARCH), "--scope", scope, "--detector",
                     toy_kind, "--size", "64", "--runs", "2", "--warmup", "0", "--no-cache", "--json", str(out)]) == 0, \
            capsys.readouterr().err
        assert json.loads(out.read_text())["stats"]["median_ms"] > 0
    arch = Arch.from_dict(FOUR_STAGE_ARCH)
    torch.manual_seed(0)
    detector = build_detector(toy_kind, ChildNet(arch), 3, 64, 64)
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    report = export_onnx(detector, arch, class_table(["a", "b"]), (64, 64), tmp_path / "toy.onnx", kind=toy_kind,
                         parity_images=images)
    assert report.parity is not None and report.parity.passed and report.parity.detections > 0
    assert report.meta.detector == toy_kind and (tmp_path / "toy.onnx").is_file()
