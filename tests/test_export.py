"""ONNX export of whole detectors (NMS in the graph) and parity with PyTorch on real COCO images."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from detnas.arch import sample_arch
from detnas.cli.main import main
from detnas.detection.deployable import DeployableDetector
from detnas.errors import DetnasError
from detnas.export import check_parity, class_table, compare, export_onnx, parse_size
from detnas.export.preprocess import letterbox
from detnas.export.runtime import load_exported, read_onnx_meta
from detnas.images import read_image
from detnas.pixels import DEFAULT_PIXELS, Normalize

from helpers.data import shared_dataset
from helpers.export import CATEGORY_IDS, CLASSES, SIZE, TINY, save_child_checkpoint, tiny_detector, val_images


@pytest.fixture(scope="module")
def fpn_export(module_tmp):
    """One FPN checkpoint exported through the CLI (batch 2, parity on 4 real images)."""
    coco_mini = shared_dataset("coco_mini")
    images = val_images(coco_mini)
    detector, arch = tiny_detector("fpn", images)
    root = module_tmp("fpn")
    ckpt = save_child_checkpoint(detector, arch, "fpn", root / "child")
    out = root / "model.onnx"
    code = main(["export", "--weights", str(ckpt), "--out", str(out), "--size", f"{SIZE}x{SIZE}", "--batch", "2",
                 "--score-thresh", "0.2", "--proposals", "20", "--parity-images", str(coco_mini / "val2017")])
    assert code == 0
    return {"onnx": out, "ckpt": ckpt, "detector": detector, "arch": arch, "images": images, "root": root}


@pytest.mark.slow
def test_cli_export_writes_checked_onnx_with_metadata(fpn_export, capsys):
    model = onnx.load(str(fpn_export["onnx"]))
    onnx.checker.check_model(model, full_check=True)
    ops = _op_types(model.graph)
    assert "NonMaxSuppression" in ops and "RoiAlign" in ops
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.value_info, *inferred.output]}
    scatters = [n for n in model.graph.node if n.op_type == "ScatterElements"]
    assert len(scatters) == 2 and all(ranks[n.output[0]] == 1 for n in scatters), \
        "one 1-D scatter per image (its RPN's kept logits); RoI levels are merged by a gather, not by scatters over " \
        "[N, C, 7, 7]"
    shapes = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert shapes == {"num_dets": [2], "boxes": [2, 100, 4], "scores": [2, 100], "labels": [2, 100]}, \
        "fixed output sizes, so TensorRT can bind fixed buffers"
    meta = read_onnx_meta(fpn_export["onnx"])
    assert meta.arch.hash == fpn_export["arch"].hash and meta.detector == "fpn"
    assert [c.name for c in meta.classes] == CLASSES
    assert {c.label: c.category_id for c in meta.classes} == CATEGORY_IDS
    assert meta.input.shape() == (2, 3, SIZE, SIZE) and meta.pixels == DEFAULT_PIXELS
    assert meta.thresholds == {"score": 0.2, "nms_iou": 0.5, "max_detections": 100, "pre_nms_top_k": 3840,
                               "rpn_proposals": 20}
    assert meta.versions["torch"] == torch.__version__
    assert not list(fpn_export["root"].glob(".*.tmp")), "no temporary files left behind"


def _op_types(graph) -> set[str]:
    """Op types of a graph and its subgraphs (NMS sits inside If/Loop bodies)."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= _op_types(attr.g)
    return ops


@pytest.mark.slow
def test_onnx_runtime_matches_pytorch_on_real_images(fpn_export):
    """ORT on the exported file vs the torchvision detector's own forward on the same letterboxed images."""
    detector = fpn_export["detector"]
    detector.roi_heads.score_thresh = 0.2
    inputs = [letterbox(read_image(p), SIZE, SIZE, DEFAULT_PIXELS)[0] for p in fpn_export["images"]]
    with torch.no_grad():
        eager = detector(inputs)  # GeneralizedRCNNTransform at min_size = max_size = SIZE: no resize
    reference = [(o["boxes"].numpy(), o["scores"].numpy(), o["labels"].numpy()) for o in eager]
    runner = load_exported(fpn_export["onnx"])
    from detnas.export.runtime import run_images

    report = compare(reference, run_images(runner, inputs), "torchvision", "ORT")
    assert report.detections > 20, "the test detector must produce detections for parity to mean anything"
    assert report.passed, report.summary()


@pytest.mark.slow
def test_retinanet_dynamic_batch_export_and_parity(coco_mini, tmp_path):
    images = val_images(coco_mini, 2)
    detector, arch = tiny_detector("retinanet", images)
    out = tmp_path / "retina.onnx"
    report = export_onnx(detector, arch, class_table(CLASSES), (SIZE, SIZE), out, kind="retinanet",
                         dynamic_batch=True, max_detections=50, score_thresh=0.05, simplify=False,
                         parity_images=[read_image(p) for p in images])
    assert report.parity is not None and report.parity.passed and report.parity.detections > 20
    detector.score_thresh = 0.5  # check_parity restores the thresholds baked into the file
    again = check_parity(detector, out, [read_image(p) for p in images[:2]])
    assert again.passed and again.detections > 10, again.summary()
    runner = load_exported(out)
    assert runner.meta.input.batch is None
    for batch in (1, 3):
        num, boxes, scores, labels = runner.run(np.zeros((batch, 3, SIZE, SIZE), np.float32))
        assert num.shape == (batch,) and boxes.shape == (batch, 50, 4) and labels.shape == (batch, 50)


def test_padded_outputs_are_documented_fill():
    """Rows past num_dets are boxes 0, scores 0, labels -1; counts are exact."""
    module = DeployableDetector.__new__(DeployableDetector)
    torch.nn.Module.__init__(module)
    module.max_detections = 4
    dets = [{"boxes": torch.ones(2, 4), "scores": torch.tensor([0.9, 0.5]), "labels": torch.tensor([1, 3])},
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    num, boxes, scores, labels = module._pad(dets)
    assert num.tolist() == [2, 0]
    assert labels.tolist() == [[1, 3, -1, -1], [-1, -1, -1, -1]]
    assert boxes[0, 2:].abs().sum() == 0 and scores[1].abs().sum() == 0


def test_parity_failure_says_by_how_much():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    ref = [(boxes, np.array([0.9, 0.8], np.float32), np.array([1, 2]))]
    shifted = [(boxes + np.float32(0.01), np.array([0.9, 0.8], np.float32), np.array([1, 2]))]
    report = compare(ref, shifted, "torch", "ort")
    assert not report.passed and report.max_box_diff == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(DetnasError, match=r"parity FAILED.*max box diff 0\.01 px"):
        report.check()
    relabelled = [(boxes, np.array([0.9, 0.8], np.float32), np.array([1, 1]))]
    assert compare(ref, relabelled, "torch", "ort").unmatched == 2
    fewer = [(boxes[:1], np.array([0.9], np.float32), np.array([1]))]
    assert "counts differ" in compare(ref, fewer, "torch", "ort").summary()


@pytest.mark.parametrize("text", ["100", "320x333", "0", "abc", "320x320x3"])
def test_size_must_be_multiple_of_32(text):
    with pytest.raises(DetnasError, match="32|HxW"):
        parse_size(text)


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(fpn_export, tmp_path, capsys):
    ckpt = str(fpn_export["ckpt"])
    val = str(fpn_export["images"][0].parent)
    cases = {
        "size": ["export", "--weights", ckpt, "--out", str(tmp_path / "a.onnx"), "--size", "100",
                 "--parity-images", val],
        "other arch": ["export", "--weights", ckpt, "--out", str(tmp_path / "b.onnx"), "--arch", "COCO-FPN-300M",
                       "--parity-images", val],
        "unwritable": ["export", "--weights", ckpt, "--out", str(fpn_export["onnx"] / "c.onnx"),
                       "--size", "128", "--parity-images", val],
        "int8": ["export", "--weights", ckpt, "--out", str(tmp_path / "d.onnx"), "--format", "trt",
                 "--precision", "int8", "--parity-images", val],
        "trt dynamic batch": ["export", "--weights", ckpt, "--out", str(tmp_path / "f.onnx"), "--format", "trt",
                              "--dynamic-batch", "--parity-images", val],
    }
    if importlib.util.find_spec("tensorrt") is None:
        cases["no tensorrt"] = ["export", "--weights", ckpt, "--out", str(tmp_path / "e.onnx"), "--format", "trt",
                                "--parity-images", val]
    for name, argv in cases.items():
        assert main(argv) == 2, name
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error:") and "Traceback" not in err, (name, err)
        if name == "no tensorrt":
            assert "TensorRT backend unavailable: the Python package 'tensorrt' is not installed" in err
        if name == "trt dynamic batch":
            assert "--dynamic-batch: a TensorRT engine is built for one batch size" in err
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".onnx", ".tmp")]


@pytest.mark.slow
def test_weights_that_do_not_match_the_arch(fpn_export, tmp_path, capsys):
    tensors = {k: v for k, v in fpn_export["detector"].state_dict().items() if "blocks.0." not in k}
    from detnas.checkpoint import load_meta, save_checkpoint

    broken = save_checkpoint(tmp_path / "broken", tensors, {k: v for k, v in load_meta(fpn_export["ckpt"]).items()
                                                            if k != "format_version"})
    assert main(["export", "--weights", str(broken), "--out", str(tmp_path / "x.onnx"), "--no-parity"]) == 2
    assert "do not fit" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_predict_writes_drawn_images_and_coco_results(fpn_export, tmp_path, capsys):
    images = [str(p) for p in fpn_export["images"][:3]]  # 3 images on a batch-2 graph: the last batch is padded
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(fpn_export["onnx"]), *images, "--out", str(out), "--draw-thresh", "0.2"]) == 0
    drawn = sorted(out.glob("*.pred.png"))
    assert [p.name.split(".")[0] for p in drawn] == sorted(Path(p).stem for p in images)
    original = read_image(images[0])
    picture = read_image(drawn[0])
    assert picture.shape == original.shape and not torch.equal(picture, original), "boxes must be drawn"
    records = json.loads((out / "results.json").read_text())
    assert records and {r["image_id"] for r in records} == {int(Path(p).stem) for p in images}
    assert {r["category_id"] for r in records} <= set(CATEGORY_IDS.values())
    height, width = original.shape[-2:]
    for r in records:  # original-image pixels, not model-input pixels
        x, y, w, h = r["bbox"]
        assert 0 <= x <= x + w <= width + 1e-3 and 0 <= y <= y + h <= height + 1e-3
    assert max(r["bbox"][0] + r["bbox"][2] for r in records) > SIZE, "boxes were scaled back to the image"


@pytest.mark.slow
def test_predict_keeps_same_named_images_apart_and_prints_paths_verbatim(fpn_export, tmp_path, capsys):
    """dirA/img.jpg and dirB/img.jpg get a drawing each; no boxes to draw is not a torchvision warning; an output
    folder named p[/q] is printed as such."""
    import shutil
    import warnings

    inputs = []
    for folder, source in (("dirA", fpn_export["images"][0]), ("dirB", fpn_export["images"][1])):
        (tmp_path / folder).mkdir()
        inputs.append(str(shutil.copy(source, tmp_path / folder / "img.jpg")))
    out = tmp_path / "p[" / "q]"
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", "--model", str(fpn_export["onnx"]), *inputs, "--out", str(out),
                     "--draw-thresh", "1.01"]) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out and not captured.err
    assert sorted(p.name for p in out.glob("*.pred.png")) == ["img-1.pred.png", "img-2.pred.png"]
    for drawn, source in zip(sorted(out.glob("*.pred.png")), inputs):
        assert torch.equal(read_image(drawn), read_image(source)), "nothing above the threshold: the image as is"
    records = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in records} == {1, 2}


@pytest.mark.slow
def test_predict_device(fpn_export, tmp_path, capsys):
    """--device cpu runs ONNX Runtime's CPU provider; a GPU device runs CUDA or stops with one line (never a silent
    CPU fallback); an engine never runs on the CPU."""
    import onnxruntime as ort

    image = str(fpn_export["images"][0])
    assert main(["predict", "--model", str(fpn_export["onnx"]), image, "--out", str(tmp_path / "cpu"),
                 "--device", "cpu"]) == 0
    assert "(onnxruntime)" in capsys.readouterr().out
    code = main(["predict", "--model", str(fpn_export["onnx"]), image, "--out", str(tmp_path / "gpu"),
                 "--device", "cuda:0"])
    err = capsys.readouterr().err
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
        assert code == 2 and err.count("\n") == 1 and "requested CUDAExecutionProvider" in err, err
    else:
        assert code == 0, err
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    assert main(["predict", "--model", str(engine), image, "--out", str(tmp_path / "e"), "--device", "cpu"]) == 2
    assert "a TensorRT engine runs on a GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_refuses_unreadable_image_without_partial_output(fpn_export, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "pred"
    good = str(fpn_export["images"][0])
    assert main(["predict", "--model", str(fpn_export["onnx"]), good, str(bad), "--out", str(out)]) == 2
    assert "broken.jpg: cannot read image" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_exported_model_evaluates_with_coco_ap(fpn_export, tmp_path, capsys):
    """The evaluator runs on the exported artifact itself: the Python predictor and `detnas eval --model`."""
    from detnas.data.coco import CocoDetection
    from detnas.evaluation import METRICS, evaluate
    from detnas.export import onnx_predictor

    root = fpn_export["images"][0].parent.parent
    ann, images = root / "annotations" / "instances_val2017.json", root / "val2017"
    dataset = CocoDetection(ann, images)
    metrics = evaluate(onnx_predictor(fpn_export["onnx"]), dataset, max_images=4)
    assert set(METRICS) <= set(metrics) and metrics["detections"] > 0 and 0.0 <= metrics["AP"] <= 1.0
    # the test model knows 3 classes, coco_mini has 80: refused in one line rather than mislabelled
    assert main(["eval", "--model", str(fpn_export["onnx"]), "--ann", str(ann), "--images", str(images)]) == 2
    assert "classes differ from the model's" in capsys.readouterr().err
    coco = json.loads(ann.read_text())  # the same images restricted to the model's three categories
    coco["categories"] = [c for c in coco["categories"] if c["id"] in CATEGORY_IDS.values()]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] in CATEGORY_IDS.values()]
    subset = tmp_path / "three_classes.json"
    subset.write_text(json.dumps(coco))
    assert [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])] == CLASSES
    out_json = tmp_path / "dets.json"
    assert main(["eval", "--model", str(fpn_export["onnx"]), "--ann", str(subset), "--images", str(images),
                 "--max-images", "4", "--out-json", str(out_json)]) == 0  # the 4th image is the first with a box
    assert "COCO bbox metrics of" in capsys.readouterr().out and json.loads(out_json.read_text())


@pytest.mark.slow
def test_tensorrt_missing_is_a_clear_message(fpn_export, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; the missing-TensorRT message cannot be observed")
    except ImportError:
        pass
    from detnas.export.trt import export_trt

    with pytest.raises(DetnasError, match="TensorRT backend unavailable: the Python package 'tensorrt' is not"):
        export_trt(fpn_export["onnx"], tmp_path / "m.engine")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnx_runtime(fpn_export, tmp_path):
    from detnas.export.trt import export_trt

    report = export_trt(fpn_export["onnx"], tmp_path / "m.engine", parity_images=fpn_export["images"])
    assert report.engine.is_file() and report.parity is not None and report.parity.passed, report.parity.summary()
    assert report.precision == "fp32"
    sidecar = json.loads(report.sidecar.read_text())
    assert {"tensorrt", "gpu", "compute_capability", "precision", "input"} <= set(sidecar)
    predictions = load_exported(report.engine).run(np.zeros((2, 3, SIZE, SIZE), np.float32))
    assert predictions[1].shape == (2, 100, 4)


def test_graph_proposals_equal_torchvision_rpn():
    """The deployable graph's RPN (fixed-size, NMS on rank scores, top-n by logit) keeps exactly torchvision's
    proposals, in its order, as the real prefix of its fixed-size output."""
    from torchvision.models.detection.image_list import ImageList

    images = val_images(shared_dataset("coco_mini"))
    detector, _ = tiny_detector("fpn", images)
    detector = detector.double()
    batch = torch.stack([letterbox(read_image(p), SIZE, SIZE, DEFAULT_PIXELS)[0] for p in images]).double()
    image_list = ImageList(Normalize(DEFAULT_PIXELS)(batch), [(SIZE, SIZE)] * len(images))
    with torch.no_grad():
        features = detector.backbone(image_list.tensors)
        ours, real = DeployableDetector(detector, DEFAULT_PIXELS, 100)._proposals(image_list, features)
        theirs, _ = detector.rpn(image_list, features)
    assert len(ours) == len(real) == len(theirs) == len(images)
    assert all(a.shape == (20, 4) and r.all() and torch.equal(a, b) for a, b, r in zip(ours, theirs, real))


def test_graph_roi_pooling_equals_torchvision_multiscale_roi_align():
    """The graph merges RoiAlign's levels by concatenation and one gather: the values and their order must be
    exactly torchvision's MultiScaleRoIAlign, for boxes of every level, two images and the zero-area guard box."""
    from torchvision.ops import MultiScaleRoIAlign

    from detnas.detection import build_detector
    from detnas.supernet import ChildNet

    torch.manual_seed(0)
    size = 1024  # large enough for the canonical mapper to use all four levels (level 5 needs boxes >= 448 px)
    detector = build_detector("fpn", ChildNet(sample_arch(TINY, 0)), len(CLASSES) + 1, size, size)
    names = detector.roi_heads.box_roi_pool.featmap_names
    features = {name: torch.randn(2, 8, size // 2 ** (i + 2), size // 2 ** (i + 2)) for i, name in enumerate(names)}
    features["pool"] = torch.randn(2, 8, 8, 8)
    sides = torch.exp(torch.empty(2, 300, 2).uniform_(np.log(4.0), np.log(size)))
    corners = torch.rand(2, 300, 2) * (size - sides)
    proposals = [torch.cat([torch.cat([c, c + s], dim=1).clamp(max=size), torch.zeros(1, 4)]) for c, s in
                 zip(corners, sides)]
    graph = DeployableDetector(detector, DEFAULT_PIXELS, 100)
    reference = MultiScaleRoIAlign(names, 7, 2)
    assert len(names) == 4 and detector.roi_heads.box_roi_pool.sampling_ratio == 2
    with torch.no_grad():
        ours = graph._pool_boxes(features, proposals, [(size, size)] * 2)
        theirs = reference(features, proposals, [(size, size)] * 2)
    levels = reference.map_levels(proposals)
    assert set(levels.tolist()) == {0, 1, 2, 3}
    assert ours.shape == (602, 8, 7, 7) and torch.equal(ours, theirs)


@pytest.mark.slow
def test_parity_holds_when_the_rpn_sees_almost_no_objects(tmp_path):
    """RPN objectness logits around -17, as a barely trained detector can have: ONNX Runtime's CPU Sigmoid is off by tens
    of percent and not even monotonic there, which reordered proposals when NMS ranked them by probability."""
    images = val_images(shared_dataset("coco_mini"))
    detector, arch = tiny_detector("fpn", images)
    torch.manual_seed(1)
    torch.nn.init.normal_(detector.rpn.head.cls_logits.weight, 0.0, 0.1)
    torch.nn.init.constant_(detector.rpn.head.cls_logits.bias, -17.0)
    report = export_onnx(detector, arch, class_table(CLASSES), (SIZE, SIZE), tmp_path / "low.onnx", kind="fpn",
                         parity_images=[read_image(p) for p in images], simplify=False)
    assert report.parity.detections > 0 and report.parity.passed, report.parity.summary()


def test_predict_removes_a_killed_runs_drawing_and_names_a_file_in_its_way(tmp_path, monkeypatch):
    """kill -9 while a drawing was written left `.NAME.detnas-PID-X.tmp` in --out, which a rerun never removed; --out
    naming a file died with FileExistsError (both found by bench/suite/bad_input.py). The model is a double: what is
    checked is what predict does with its output folder."""
    from types import SimpleNamespace

    from PIL import Image

    import detnas.export.predict as predict_module

    runner = SimpleNamespace(meta=SimpleNamespace(classes=class_table(CLASSES)), backend="double")
    nothing = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    monkeypatch.setattr(predict_module, "load_exported", lambda model, device: runner)
    monkeypatch.setattr(predict_module, "exported_predictor", lambda r: lambda images: [nothing for _ in images])
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 24)).save(image)
    out = tmp_path / "pred"
    out.mkdir()
    stale = out / f".a.pred.png.detnas-{2**22 + 12345}-abc.tmp"  # above Linux's largest pid: a dead run's
    stale.write_bytes(b"half a drawing")
    report = predict_module.predict("m.onnx", [image], out)
    assert report.drawn == [out / "a.pred.png"] and not stale.exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DetnasError, match=r"afile: cannot write .*file"):
        predict_module.predict("m.onnx", [image], tmp_path / "afile")
