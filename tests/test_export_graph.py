"""The deployable graph: torchvision's detections, in a form TensorRT's ONNX parsers (8.6, 10.x, 11.x) accept.

`graph_problems` is a deliberately small local walker of the structural rules (no If/Loop, constant axes, constant
TopK K <= 3840, NMS with a score threshold and <= 5,000 boxes); the full per-version parser lint lives elsewhere.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import numpy_helper

from detnas.arch import sample_arch
from detnas.detection import build_detector
from detnas.detection import deployable as graph_module
from detnas.detection.deployable import DeployableDetector, scattered, top_k
from detnas.detection.nms import NMS_MAX_BOXES, batched_nms, nms
from detnas.errors import DetnasError
from detnas.export import class_table, export_onnx
from detnas.export.preprocess import letterbox
from detnas.export.runtime import load_exported
from detnas.images import read_image
from detnas.pixels import DEFAULT_PIXELS
from detnas.space import register_space
from detnas.supernet import ChildNet

from helpers.data import shared_dataset
from helpers.export import CLASSES, SIZE, TINY, tiny_detector, val_images

AXES_INPUT = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1}  # opset 13+: axes is an input


def graph_problems(graph: onnx.GraphProto, outer_constants: dict[str, np.ndarray] | None = None) -> list[str]:
    """One line per node (subgraphs included) that breaks a rule; constants are initializers and Constant outputs
    of this graph or an enclosing one."""
    constants = dict(outer_constants or {})
    constants.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    shapes = {v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.input, *graph.output]}
    problems = []
    for node in graph.node:
        where = f"{node.op_type} '{node.name}'"
        inputs = list(node.input)
        if node.op_type in ("If", "Loop"):
            problems.append(f"{where}: control flow")
        axes_at = AXES_INPUT.get(node.op_type, 1 if node.op_type.startswith("Reduce") else None)
        if axes_at is not None and len(inputs) > axes_at and inputs[axes_at] and inputs[axes_at] not in constants:
            problems.append(f"{where}: axes input is computed, not a constant")
        if node.op_type == "TopK":
            k = constants.get(inputs[1])
            if k is None or int(k.reshape(-1)[0]) > 3840:
                problems.append(f"{where}: K is {'computed' if k is None else int(k.reshape(-1)[0])}, not a constant <= 3840")
        if node.op_type == "NonMaxSuppression":
            if len(inputs) < 5 or inputs[4] not in constants:
                problems.append(f"{where}: no constant score_threshold input")
            boxes = shapes.get(inputs[0], [None, None])
            if boxes[1] is None or boxes[1] > NMS_MAX_BOXES:
                problems.append(f"{where}: {boxes[1] or 'an unknown number of'} boxes enter, not <= {NMS_MAX_BOXES}")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                problems += graph_problems(attr.g, constants)
    return problems


def model_problems(model: onnx.ModelProto) -> list[str]:
    return graph_problems(onnx.shape_inference.infer_shapes(model).graph)


def _op_count(graph: onnx.GraphProto, op: str) -> int:
    return sum(n.op_type == op for n in graph.node)


@pytest.fixture(scope="module")
def detectors():
    images = val_images(shared_dataset("coco_mini"))
    return {kind: tiny_detector(kind, images) for kind in ("fpn", "retinanet")}, images


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fpn", "retinanet"])
@pytest.mark.parametrize("batch", [1, 2])
def test_exported_graph_is_tensorrt_shaped(detectors, kind, batch, tmp_path):
    """Batch 1 and a fixed batch 2, after onnxslim: no If/Loop, constant axes and K, every NMS thresholded and
    capped, one NMS per image and stage; ONNX Runtime runs it to fixed-size outputs."""
    built, _ = detectors
    detector, arch = built[kind]
    report = export_onnx(detector, arch, class_table(CLASSES), (SIZE, SIZE), tmp_path / "m.onnx", kind=kind,
                         batch=batch)
    assert report.simplified, report.notes
    model = onnx.load(str(report.path))
    assert model_problems(model) == []
    nms_per_image = 2 if kind == "fpn" else 1  # RPN + RoI head, or RetinaNet's one
    assert _op_count(model.graph, "NonMaxSuppression") == nms_per_image * batch
    num, boxes, scores, labels = load_exported(report.path).run(np.random.default_rng(0).random(
        (batch, 3, SIZE, SIZE), dtype=np.float32))
    assert num.shape == (batch,) and boxes.shape == (batch, 100, 4) and labels.shape == (batch, 100)


@pytest.mark.slow
def test_walker_flags_what_torchvision_exports(tmp_path):
    """The checker is not vacuous: torchvision's batched_nms and a data-dependent top-k break its rules."""

    class Torchvision(torch.nn.Module):
        def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            boxes, scores = boxes[scores > 0.1], scores[scores > 0.1]  # a data-dependent count, as in a detector
            keep = torchvision.ops.batched_nms(boxes, scores, (scores > 0.5).long(), 0.5)
            return scores[keep].topk(torchvision.models.detection._utils._topk_min(keep, 10, 0))[0]

    path = tmp_path / "tv.onnx"
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    torch.onnx.export(Torchvision(), (boxes, torch.tensor([0.9, 0.8, 0.3])), str(path), dynamo=False, opset_version=17)
    problems = "\n".join(model_problems(onnx.load(str(path))))
    assert "If" in problems and "control flow" in problems
    assert "no constant score_threshold" in problems
    assert "K is computed" in problems


def _random_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 80
    boxes = torch.cat([corner, corner + 5 + torch.rand(count, 2, generator=generator) * 40], dim=1)
    return boxes, torch.rand(count, generator=generator)


@pytest.mark.slow
def test_nms_is_torchvision_above_the_threshold_and_one_onnx_node(tmp_path):
    boxes, scores = _random_boxes(300, 0)
    boxes[7], scores[7] = torch.tensor([200.0, 200.0, 210.0, 210.0]), 0.25  # alone, exactly at the threshold:
    # dropped, as ONNX Runtime and TensorRT drop it
    above = torch.where(scores > 0.25)[0]
    expected = above[torchvision.ops.nms(boxes[above], scores[above], 0.5)]
    assert 7 not in expected.tolist() and 7 in torchvision.ops.nms(boxes, scores, 0.5).tolist()
    assert torch.equal(nms(boxes, scores, 0.5, 0.25, 1000), expected)
    assert torch.equal(nms(boxes, scores, 0.5, 0.25, 5), expected[:5])

    class Module(torch.nn.Module):
        def forward(self, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return nms(b, s, 0.5, 0.25, 40)

    path = tmp_path / "nms.onnx"
    torch.onnx.export(Module(), (boxes, scores), str(path), dynamo=False, opset_version=17)
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node].count("NonMaxSuppression") == 1 and model_problems(model) == []
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in (1, 2, 3):
        b, s = _random_boxes(300, seed)
        ours = session.run(None, {i.name: v.numpy() for i, v in zip(session.get_inputs(), (b, s))})[0]
        assert np.array_equal(ours, nms(b, s, 0.5, 0.25, 40).numpy())


def test_kept_values_scatter_for_any_kept_count_whatever_count_it_was_traced_with(tmp_path):
    """The RPN writes its kept proposals' logits with `scattered`: a file traced where NMS kept one box must still
    run where it keeps none or several (`out[keep] = values[keep]` exported a scalar update that failed there)."""
    import onnxruntime as ort

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 40.0, 50.0, 50.0]])
    logits = torch.tensor([1.0, 2.0, 3.0])
    kept_count = {0: [0.0, 0.0, 0.0], 1: [0.9, 0.0, 0.0], 2: [0.9, 0.8, 0.0], 3: [0.9, 0.8, 0.7]}

    class Module(torch.nn.Module):
        def forward(self, b: torch.Tensor, s: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            keep = batched_nms(b, s, torch.zeros(3, dtype=torch.int64), 0.5, 0.0, 3)
            return scattered(values, keep, float("-inf"))

    checked = 0
    for traced, scores in kept_count.items():
        path = tmp_path / f"kept{traced}.onnx"
        torch.onnx.export(Module(), (boxes, torch.tensor(scores), logits), str(path), dynamo=False, opset_version=17)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for count, run_scores in kept_count.items():
            feeds = dict(zip([i.name for i in session.get_inputs()], (boxes.numpy(), np.array(run_scores, np.float32),
                                                                      logits.numpy())))
            expected = Module()(boxes, torch.tensor(run_scores), logits).numpy()
            assert np.array_equal(session.run(None, feeds)[0], expected), (traced, count)
            assert int(np.isfinite(expected).sum()) == count
            checked += 1
    assert checked == 16


def test_limits_are_one_line_errors():
    with pytest.raises(DetnasError, match="top-3841 is more than the 3840 that TensorRT's TopK takes"):
        top_k(torch.zeros(4000), 3841, "RPN")
    assert top_k(torch.arange(5.0), 3841, "small")[1].tolist() == [4, 3, 2, 1, 0], "K is clipped to the input"
    boxes, scores = _random_boxes(NMS_MAX_BOXES + 1, 0)
    with pytest.raises(DetnasError, match="5001 boxes would enter one NMS; TensorRT considers at most 5000"):
        batched_nms(boxes, scores, torch.zeros(NMS_MAX_BOXES + 1, dtype=torch.int64), 0.5, 0.05, 100)


def _model_inputs(images) -> torch.Tensor:
    return torch.stack([letterbox(read_image(p), SIZE, SIZE, DEFAULT_PIXELS)[0] for p in images])


@pytest.mark.parametrize("kind", [pytest.param("fpn", marks=pytest.mark.slow), "retinanet"])  # fpn: 16 s of CPU
def test_eager_graph_equals_torchvision_detector(kind):
    """The graph module itself, eager, gives torchvision's detections exactly; for the FPN with 1000 proposals
    asked and fewer kept by the RPN's NMS, so padding proposals are in play and never become detections."""
    images = val_images(shared_dataset("coco_mini"))
    detector, _ = tiny_detector(kind, images)
    if kind == "fpn":
        detector.rpn._post_nms_top_n["testing"] = 1000
        detector.roi_heads.score_thresh = 0.2
    batch = _model_inputs(images)
    module = DeployableDetector(detector, DEFAULT_PIXELS, 100)
    with torch.no_grad():
        num, boxes, scores, labels = module(batch)
        theirs = detector(list(batch))
        if kind == "fpn":
            _, real = module._proposals(*_image_list(module, batch))
            assert all(0 < int(r.sum()) < r.shape[0] for r in real), "some proposals must be padding"
    assert sum(len(t["scores"]) for t in theirs) > 20
    for i, t in enumerate(theirs):
        n = int(num[i])
        assert n == len(t["scores"])
        assert torch.equal(boxes[i, :n], t["boxes"]) and torch.equal(scores[i, :n], t["scores"])
        assert torch.equal(labels[i, :n], t["labels"])


def _image_list(module: DeployableDetector, batch: torch.Tensor):
    from torchvision.models.detection.image_list import ImageList

    image_list = ImageList(module.normalize(batch), [(SIZE, SIZE)] * batch.shape[0])
    return image_list, module.detector.backbone(image_list.tensors)


@pytest.mark.slow
def test_roi_pre_nms_cap_is_stated_and_onnx_matches_the_eager_graph(detectors, monkeypatch, tmp_path):
    """Where the pre-NMS top-k binds, the graph deliberately differs from torchvision: the file states the cap,
    and ONNX Runtime still equals the eager graph module (the parity reference) exactly as before."""
    built, images = detectors
    detector, arch = copy.deepcopy(built["fpn"][0]), built["fpn"][1]  # the export changes its score threshold
    monkeypatch.setattr(graph_module, "ROI_PRE_NMS_TOP_K", 8)
    report = export_onnx(detector, arch, class_table(CLASSES), (SIZE, SIZE), tmp_path / "capped.onnx", kind="fpn",
                         score_thresh=0.0, parity_images=[read_image(p) for p in images[:2]], min_detections=8)
    assert report.meta.thresholds["pre_nms_top_k"] == 8
    assert report.parity.passed and report.parity.detections > 0, report.parity.summary()
    with torch.no_grad():
        theirs = detector(list(_model_inputs(images[:2])))
    assert report.parity.detections < sum(len(t["scores"]) for t in theirs), "the cap must bind in this test"


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_score_threshold_outside_unit_interval_is_refused(bad, tmp_path):
    """The graph turns filtered boxes into score 0 below an NMS score threshold, so the threshold must be >= 0."""
    register_space(TINY)
    arch = sample_arch(TINY, 0)
    detector = build_detector("fpn", ChildNet(arch), len(CLASSES) + 1, SIZE, SIZE)
    with pytest.raises(DetnasError, match=r"--score-thresh .*: a detection score threshold lies in \[0, 1\)"):
        export_onnx(detector, arch, class_table(CLASSES), (SIZE, SIZE), tmp_path / "m.onnx", kind="fpn",
                    score_thresh=bad)
    assert not list(tmp_path.iterdir())
