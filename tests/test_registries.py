"""Plugging things in: a user's search space, released arch and recipe preset by name, a toy latency backend through
`detnas bench latency`, a toy detector kind through `bench latency` and `export_onnx`, a toy search algorithm and
objective through the search loop, and the one error line a wrong name gets."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence

import pytest
import torch
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detnas.arch import RELEASED_ARCHS, Arch, released_archs, resolve_arch
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
from detnas.space import SPACES, SearchSpace, get_space, list_spaces, register_space
from detnas.supernet import ChildNet
from detnas.train import RECIPES, register_recipe, resolve_config

from helpers.search import TINY, FakeAccuracy, FakeLatency
from helpers.spaces import TINY as TINY_SPACE
from helpers.spaces import TINY_SPEC, tiny_arch_json

TOY_ARCH = tiny_arch_json()


def test_registry_refuses_clashes_and_lists_names() -> None:
    things: Registry[int] = Registry("thing", "--thing")
    things.register("a")(1)
    things.register("b")(2)
    with pytest.raises(DetnasError, match="thing 'a' is already registered"):
        things.register("a")(3)
    with pytest.raises(DetnasError) as err:
        things.get("c")
    assert str(err.value) == "--thing: unknown thing 'c'; choose one of a, b"


def test_registry_takes_the_same_content_again_and_refuses_other_content() -> None:
    things: Registry[dict] = Registry("thing", "--thing", same=lambda a, b: a == b)
    first = things.register("a")({"x": 1})
    assert things.register("a")({"x": 1}) == first and things.names() == ("a",)  # a space file read twice
    with pytest.raises(DetnasError) as err:
        things.register("a")({"x": 2})
    assert str(err.value) == "thing 'a' is already registered with other content; choose another name"
    assert things.get("a") == {"x": 1}


def test_a_registered_space_is_found_by_name_and_a_clash_is_refused() -> None:
    space = SearchSpace.from_dict({**TINY_SPEC, "name": "registry-user-space"})
    try:
        assert register_space(space) is space and get_space("registry-user-space") is space and space in list_spaces()
        assert register_space(SearchSpace.from_dict({**TINY_SPEC, "name": "registry-user-space"})).digest == space.digest
        with pytest.raises(DetnasError, match="search space 'registry-user-space' is already registered with other "
                                              "content; choose another name"):
            register_space(SearchSpace.from_dict({**TINY_SPEC, "name": "registry-user-space", "head_width": 16}))
        assert get_space("registry-user-space").stem_width == 8
    finally:
        SPACES.unregister("registry-user-space")
    # other tests in this process may have registered spaces of their own: the known list is checked for the paper's
    with pytest.raises(DetnasError, match=r"unknown search space 'registry-user-space'; known: .*\bdetnas-1\.3g\b"):
        get_space("registry-user-space")


def test_a_registered_released_arch_resolves_by_name_in_python_and_the_cli(tmp_path, capsys) -> None:
    arch = Arch(TINY_SPACE, (3, 2, 1, 0))
    RELEASED_ARCHS.register("Toy-Released")(arch)
    try:
        assert resolve_arch("Toy-Released") is arch and released_archs()["Toy-Released"] is arch
        RELEASED_ARCHS.register("Toy-Released")(Arch(TINY_SPACE, (3, 2, 1, 0)))  # the same arch again: a no-op
        with pytest.raises(DetnasError, match="released arch 'Toy-Released' is already registered with other content"):
            RELEASED_ARCHS.register("Toy-Released")(Arch(TINY_SPACE, (0, 1, 2, 3)))
        out = tmp_path / "show.json"
        assert main(["arch", "show", "Toy-Released", "--size", "64x64", "--json", str(out)]) == 0, capsys.readouterr().err
        shown = json.loads(out.read_text())
        assert shown["hash"] == arch.hash and shown["space"] == "tiny", shown
    finally:
        RELEASED_ARCHS.unregister("Toy-Released")
    with pytest.raises(DetnasError, match="arch 'Toy-Released' is neither a released name"):
        resolve_arch("Toy-Released")


def test_a_registered_recipe_resolves_by_name_in_python_a_config_file_and_the_cli(tmp_path, capsys) -> None:
    settings = {"task": "det", "iterations": 7, "batch_size": 3, "lr": 0.003, "schedule": "step", "milestones": (5,),
                "detector": "retinanet", "min_size": 96, "max_size": 128}
    register_recipe("toy-recipe", settings)
    try:
        cfg = resolve_config("toy-recipe", overrides={"lr": "0.004"})
        assert (cfg.recipe, cfg.task, cfg.iterations, cfg.milestones, cfg.detector, cfg.lr) == (
            "toy-recipe", "det", 7, (5,), "retinanet", 0.004)
        (tmp_path / "run.yaml").write_text("recipe: toy-recipe\nbatch_size: 4\n")
        from_file = resolve_config(config_file=tmp_path / "run.yaml")
        assert (from_file.recipe, from_file.iterations, from_file.batch_size) == ("toy-recipe", 7, 4)
        assert register_recipe("toy-recipe", dict(settings)) == settings  # the same settings again: a no-op
        with pytest.raises(DetnasError, match="recipe 'toy-recipe' is already registered with other content"):
            register_recipe("toy-recipe", {**settings, "lr": 0.1})
        assert main(["train", "recipes"]) == 0
        listed = [line for line in capsys.readouterr().out.splitlines() if "toy-recipe" in line]
        assert len(listed) == 1 and all(f in listed[0] for f in (" 7 ", " 3 ", "0.003", "step 5", "96/128")), listed
    finally:
        RECIPES.unregister("toy-recipe")
    with pytest.raises(DetnasError, match="unknown recipe 'toy-recipe'; known: paper-cls"):
        resolve_config("toy-recipe")


def test_a_recipe_with_a_bad_field_is_refused_when_registered() -> None:
    with pytest.raises(DetnasError) as err:
        register_recipe("toy-bad", {"task": "det", "schedule": "cosine"})
    assert str(err.value) == "recipe 'toy-bad': 'schedule' is 'cosine'; choose one of linear, step"
    with pytest.raises(DetnasError, match="recipe 'toy-bad': unknown keys \\['lr_max'\\]"):
        register_recipe("toy-bad", {"lr_max": 1.0})
    assert "toy-bad" not in RECIPES


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





@pytest.mark.slow
def test_a_registered_detector_kind_is_timed_and_exported(toy_kind, tmp_path, capsys) -> None:
    for scope in ("network", "network+nms"):
        out = tmp_path / f"{scope}.json"
        assert main(["bench", "latency", "--arch", TOY_ARCH, "--scope", scope, "--detector",
                     toy_kind, "--size", "64", "--runs", "2", "--warmup", "0", "--no-cache", "--json", str(out)]) == 0, \
            capsys.readouterr().err
        assert json.loads(out.read_text())["stats"]["median_ms"] > 0
    arch = Arch.from_json(TOY_ARCH)
    torch.manual_seed(0)
    detector = build_detector(toy_kind, ChildNet(arch), 3, 64, 64)
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    report = export_onnx(detector, arch, class_table(["a", "b"]), (64, 64), tmp_path / "toy.onnx", kind=toy_kind,
                         parity_images=images)
    assert report.parity is not None and report.parity.passed and report.parity.detections > 0
    assert report.meta.detector == toy_kind and (tmp_path / "toy.onnx").is_file()
