"""Reduced-precision exports: INT8 QDQ and FP16 files, their AP gate and parity share, and the bad-input lines.

A tiny FPN detector is trained briefly on the generated demo shapes (AP ~0.3 on its validation images), so the AP
gate has something to lose: an INT8 file calibrated on the training split passes a 1-point gate, the same export
calibrated on blank images fails it. One trained model, one FP32 file and one INT8 export serve the whole module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from detnas.arch import sample_arch
from detnas.checkpoint import save_checkpoint
from detnas.cli.main import main
from detnas.data import CocoDetection, make_demo_detection
from detnas.data.demo import ShapeLayout
from detnas.detection import build_detector
from detnas.errors import DetnasError
from detnas.export import export_onnx
from detnas.export.precision import (
    CALIB_METHODS,
    PERCENTILE,
    PREDICTOR_LAYERS,
    Gate,
    ap_gate,
    calibration_batches,
    convert_fp16,
    precision_parity,
    precision_request,
    quantize_int8,
    quantized_nodes,
    write_precision,
)
from detnas.export.runtime import read_onnx_meta
from detnas.export.source import load_export_source
from detnas.images import read_image
from detnas.pixels import DEFAULT_PIXELS
from detnas.space import register_space
from detnas.supernet import ChildNet

from helpers.export import TINY

pytestmark = pytest.mark.heavy  # one trained detector, its FP32 and INT8 exports and engine checks: minutes

SIZE = 128
ITERATIONS = 60
PROPOSALS = 100  # FPN test-time RPN proposals of every export here (1000, the default, makes each INT8 export minutes)
CALIB_IMAGES = 16


def _train(detector: torch.nn.Module, dataset: CocoDetection, iterations: int) -> None:
    """Plain SGD on batches of 4: enough for the demo's coloured shapes to be detected."""
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    detector.train()
    for step in range(iterations):
        picks = random.Random(step).sample(range(len(dataset)), 4)
        images = [DEFAULT_PIXELS.to_model_input(dataset.load_image(i)) for i in picks]
        targets = [{"boxes": dataset.records[i].boxes, "labels": dataset.records[i].labels} for i in picks]
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    detector.eval()


@pytest.fixture(scope="module")
def trained(module_tmp):
    """A tiny FPN trained on demo shapes, saved as a child-det checkpoint inside a run folder whose config.json
    names its training split (as `detnas train` writes it), plus its FP32 export."""
    root = module_tmp("precision")
    demo = make_demo_detection(root / "demo", 48, 24, seed=0, layout=ShapeLayout(sizes=(96, 128)))
    train = CocoDetection(demo.train_ann, demo.train_images)
    register_space(TINY)
    torch.manual_seed(0)
    arch = sample_arch(TINY, 0)
    detector = build_detector("fpn", ChildNet(arch), len(train.classes) + 1, SIZE, SIZE, rpn_pre_nms_top_n_test=100,
                              rpn_post_nms_top_n_test=20, box_batch_size_per_image=32)
    _train(detector, train, ITERATIONS)
    run = root / "run"
    meta = {"kind": "child-det", "space": TINY.to_dict(), "arch": arch.to_dict(), "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": train.classes, "num_classes": len(train.classes), "detector": "fpn",
            "label_to_cat_id": {str(k): v for k, v in train.label_to_cat_id.items()},
            "recipe": {"name": "test", "min_size": SIZE, "max_size": SIZE}}
    ckpt = save_checkpoint(run / "final", detector.state_dict(), meta)
    (run / "config.json").write_text(json.dumps({"task": "det", "data": str(demo.train_images),
                                                 "ann": str(demo.train_ann)}))
    # the FP32 reference is the detector `detnas export` rebuilds from the checkpoint with the same settings
    # (`_export`): an engine is judged against the same detector, thresholds included
    source = load_export_source(ckpt, proposals=PROPOSALS)
    fp32 = export_onnx(source.detector, source.arch, source.classes, (SIZE, SIZE), root / "fp32.onnx",
                       kind=source.detector_kind, pixels=source.pixels).path
    return {"root": root, "demo": demo, "ckpt": ckpt, "fp32": fp32}


def _export(trained, out: Path, *extra: str) -> int:
    demo = trained["demo"]
    return main(["export", "--weights", str(trained["ckpt"]), "--out", str(out), "--size", str(SIZE),
                 "--proposals", str(PROPOSALS),
                 "--parity-images", str(demo.val_images), "--gate-ann", str(demo.val_ann),
                 "--gate-images", str(demo.val_images), *extra])


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.fixture(scope="module")
def int8_export(trained, module_tmp):
    """One INT8 export through the CLI, calibrated on the training split the run recorded, shared by the tests
    that check its gate and its QDQ form: (file, what the CLI printed, its folder)."""
    folder = module_tmp("int8")
    out = folder / "int8.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = _export(trained, out, "--precision", "int8", "--calib-count", str(CALIB_IMAGES))
    assert code == 0, printed.getvalue()
    return out, printed.getvalue(), folder


@pytest.mark.slow
def test_int8_export_passes_its_gate(trained, int8_export):
    out, printed, folder = int8_export
    assert "AP gate OK" in printed and "parity OK" in printed
    report = json.loads(out.with_suffix(".precision.json").read_text())
    gate = report["gate"]
    assert gate["passed"] and gate["images"] == 24 and gate["annotations"] > 0
    assert gate["reference_ap"] > 0.1, "the trained detector must have AP to lose for the gate to mean anything"
    assert gate["drop"] <= 0.01 and report["parity"]["detections"] > 0
    # calibrated on the training split the run recorded, and the metadata says so
    meta = read_onnx_meta(out).precision
    train_names = sorted(p.name for p in trained["demo"].train_images.glob("*.png"))[:CALIB_IMAGES]
    assert (meta.precision, meta.calib_method, meta.calib_images) == ("int8", "average", CALIB_IMAGES)
    assert meta.calib_percentile is None, "a percentile is recorded only for percentile ranges"
    cut = precision_request("int8", weights=trained["ckpt"], calib_data=trained["demo"].train_images, calib_images=4,
                            calib_method="percentile", gate_data=None, gate_images=None, max_ap_drop=0.01,
                            dynamic_batch=False).info().calib_percentile
    assert cut == PERCENTILE, "a percentile file records its cut"
    assert meta.calib_digest == hashlib.sha256("\n".join(train_names).encode()).hexdigest()
    assert not list(folder.glob(".*")), "no temporary files left"


@pytest.mark.slow
def test_int8_file_is_qdq_as_tensorrt_takes_it(trained, int8_export):
    """Symmetric (zero points 0), per-channel weights; only the network's Conv/Gemm are quantized; predictors,
    decoding, NMS and RoiAlign stay FP32."""
    model = onnx.load(str(int8_export[0]))
    values = _initializers(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [values[n.input[2]] for n in qdq if len(n.input) > 2]
    assert len(zero_points) == len(qdq) > 0 and all(not z.any() for z in zero_points)
    dequantized_types = {onnx.TensorProto.DataType.Name(_input_type(model, n.input[0])) for n in qdq
                         if n.op_type == "DequantizeLinear"}
    assert dequantized_types == {"INT8"}, f"every DequantizeLinear reads INT8 (no INT32 bias): {dequantized_types}"
    weights = [n for n in qdq if n.op_type == "DequantizeLinear" and values.get(n.input[0]) is not None]
    assert weights and all(values[n.input[1]].size > 1 for n in weights), "every weight has per-channel scales"
    biases = [n.input[2] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert biases and all(values[b].dtype == np.float32 for b in biases), "Conv biases stay float"
    dequantized = {n.output[0] for n in weights}
    quantized = {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm") and dequantized & set(n.input)}
    fp32_graph = onnx.load(str(trained["fp32"])).graph
    assert quantized == set(quantized_nodes(fp32_graph))
    assert not any(PREDICTOR_LAYERS & set(name.split("/")) for name in quantized)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    coordinates = [(n.name, i) for n in model.graph.node for i in
                   {"NonMaxSuppression": n.input, "Exp": n.input, "RoiAlign": n.input[1:]}.get(n.op_type, [])]
    assert coordinates and all(producers.get(i) != "DequantizeLinear" for _, i in coordinates), \
        "boxes, scores, box deltas and RoI coordinates never come out of an INT8 tensor"


def _input_type(model: onnx.ModelProto, name: str) -> int:
    """The element type of `name`: an initializer's, else the zero point's of the QuantizeLinear that writes it."""
    inits = {i.name: i for i in model.graph.initializer}
    if name in inits:
        return inits[name].data_type
    writer = next(n for n in model.graph.node if name in n.output and n.op_type == "QuantizeLinear")
    return inits[writer.input[2]].data_type


def test_int8_biases_stay_float_so_every_parser_dequantizes_the_file(tmp_path):
    """A Conv with a bias, quantized as detnas quantizes: every DequantizeLinear reads INT8 (ORT's QuantizeBias would
    add an INT32 one per bias, which no TensorRT parser takes) and the lint passes for 8.6, 10.3 and 11."""
    from detnas.bench.models import module_to_onnx
    from detnas.export.trt_lint import lint

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    fp32 = module_to_onnx(module, torch.rand(1, 3, 16, 16), tmp_path / "fp32.onnx")
    model = onnx.load(str(quantize_int8(fp32, tmp_path / "int8.onnx", [np.random.rand(1, 3, 16, 16).astype(np.float32)])))
    dequantized = [onnx.TensorProto.DataType.Name(_input_type(model, n.input[0])) for n in model.graph.node
                   if n.op_type == "DequantizeLinear"]
    assert len(dequantized) >= 4 and set(dequantized) == {"INT8"}, dequantized
    reports = lint(model, ("8.6", "10.3", "11"))
    assert all(r.passed for r in reports), [f.line() for r in reports for f in r.findings]


def test_int8_file_passes_the_tensorrt_parser_check(int8_export, capsys):
    """`detnas export check` with the Q/DQ type rule passes the INT8 file for TensorRT 8.6, 10.3 and 11."""
    capsys.readouterr()
    code = main(["export", "check", str(int8_export[0]), "--trt", "8.6", "--trt", "10.3", "--trt", "11"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert [line.split(":")[0] for line in printed.splitlines()] == ["TensorRT 8.6", "TensorRT 10.3", "TensorRT 11"]
    assert all("passed:" in line for line in printed.splitlines()), printed


def _activation_scales(path: Path) -> dict[str, float]:
    model = onnx.load(str(path))
    values = _initializers(model)
    return {n.input[0]: float(values[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in values}


@pytest.mark.slow
def test_calibration_methods_cut_ranges_differently(trained, tmp_path):
    """min-max keeps every value; averaged per-batch, percentile and entropy (KL) ranges cut outliers, so no
    activation range of theirs is wider than min-max's and some are narrower. Entropy through `quantize_static` alone
    gave min-max's ranges."""
    demo = trained["demo"]
    files = sorted(demo.train_images.glob("*.png"))[:8]  # 8 images: entropy's 2048-bin histograms are the cost
    batches = calibration_batches([read_image(f) for f in files], read_onnx_meta(trained["fp32"]))
    scales = {method: _activation_scales(quantize_int8(trained["fp32"], tmp_path / f"{method}.onnx", batches, method))
              for method in CALIB_METHODS}
    assert len(scales["minmax"]) > 10 and all(scales[m].keys() == scales["minmax"].keys() for m in scales)
    for method in set(CALIB_METHODS) - {"minmax"}:
        ratios = [scales[method][t] / scales["minmax"][t] for t in scales["minmax"]]
        assert max(ratios) <= 1 + 1e-6, (method, max(ratios))
        assert sum(r < 0.9 for r in ratios) >= len(ratios) // 4, (method, sorted(ratios))
    assert scales["entropy"] != scales["percentile"]
    assert not list(tmp_path.glob(".*")) and sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(f"{method}.onnx" for method in CALIB_METHODS)


@pytest.mark.slow
def test_int8_calibrated_on_blank_images_fails_the_gate(trained, tmp_path):
    """The export's write step on the same FP32 file: ranges from blank images fail the 1-point gate, and neither a
    file, its report nor temporary files are written."""
    demo = trained["demo"]
    request = precision_request("int8", weights=trained["ckpt"], calib_data=_blank_images(tmp_path / "blank"),
                                calib_images=4, calib_method="minmax", gate_data=demo.val_ann,
                                gate_images=demo.val_images, max_ap_drop=0.01, dynamic_batch=False)
    out = tmp_path / "out" / "int8.onnx"
    out.parent.mkdir()
    with pytest.raises(DetnasError, match="AP gate FAILED") as failure:
        write_precision(trained["fp32"], out, request)
    message = str(failure.value)
    assert "drop" in message and "24 images" in message
    assert float(message.split("drop ")[1].split()[0]) > 0.01
    assert not list(out.parent.iterdir()), "no file, no report, no temporary files"


def _blank_images(folder: Path, count: int = 4) -> Path:
    folder.mkdir()
    for i in range(count):  # identical images: their ranges fail the gate
        Image.new("RGB", (128, 128), (124, 116, 104)).save(folder / f"{i:02d}.png")
    return folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failed_re_export_keeps_the_previous_file_and_its_report(trained, int8_export, tmp_path, capsys):
    """A good INT8 file at --out, then a re-export whose INT8 file fails the gate: the good file and the report
    beside it stay as they were, and nothing else is left (before, the re-export replaced --out with its FP32 file,
    moved that aside and removed it, leaving a report 'gate passed' that described no file)."""
    good, _, _ = int8_export
    out = tmp_path / "release" / "int8.onnx"
    out.parent.mkdir()
    shutil.copy(good, out)
    shutil.copy(good.with_suffix(".precision.json"), out.with_suffix(".precision.json"))
    before = {p.name: _digest(p) for p in out.parent.iterdir()}
    capsys.readouterr()
    code = _export(trained, out, "--precision", "int8", "--calib-images", str(_blank_images(tmp_path / "blank")),
                   "--calib-count", "4")
    err = capsys.readouterr().err
    assert code == 2 and "AP gate FAILED" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: _digest(p) for p in out.parent.iterdir()} == before, "the previous release is untouched"


def test_int8_scratch_lives_where_the_cleaner_finds_it(trained, tmp_path, monkeypatch):
    """The folder the INT8 file is built in and ONNX Runtime's own scratch inside it (its augmented model, as large
    as the FP32 file) carry the name `remove_stale_temps` knows, so a kill -9 leaves nothing it will not clean."""
    import tempfile

    import onnxruntime.quantization

    from detnas.io import remove_stale_temps

    seen: dict[str, Path] = {}
    real = onnxruntime.quantization.quantize_static

    def spy(source, target, *args, **kwargs):
        seen["work"], seen["ort_temp"] = Path(target).parent, Path(tempfile.gettempdir())
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", spy)
    demo = trained["demo"]
    request = precision_request("int8", weights=trained["ckpt"], calib_data=demo.train_images, calib_images=4,
                                calib_method="minmax", gate_data=None, gate_images=None, max_ap_drop=0.01,
                                dynamic_batch=False)
    out = tmp_path / "m.onnx"
    write_precision(trained["fp32"], out, request)
    work = seen["work"]
    assert work.parent == tmp_path and work.name.startswith(f".m.onnx.detnas-{os.getpid()}-"), work
    assert seen["ort_temp"] == work, "ONNX Runtime's temporary folder is inside the export's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.precision.json"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / work.name.replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-")
    (leftover / "ort.quant.x").mkdir(parents=True)
    (leftover / "ort.quant.x" / "augmented_model.onnx").write_bytes(b"\0" * 1024)
    assert remove_stale_temps(tmp_path) == [leftover] and not leftover.exists()


@pytest.mark.slow
def test_fp16_keeps_post_processing_fp32_and_runs(trained, tmp_path):
    half = convert_fp16(trained["fp32"], tmp_path / "fp16.onnx")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(half)))
    onnx.checker.check_model(model, full_check=True)
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input,
                                                             *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    nodes = list(model.graph.node)
    for node in list(nodes):  # NMS sits inside the If bodies of torchvision's batched_nms
        for attr in node.attribute:
            if attr.HasField("g"):
                nodes += list(attr.g.node)
                types.update({v.name: v.type.tensor_type.elem_type for v in attr.g.value_info})
    float_inputs: dict[str, list[int]] = {}
    for n in nodes:
        if n.op_type in ("NonMaxSuppression", "RoiAlign", "Exp", "Conv"):
            float_inputs.setdefault(n.op_type, []).extend(
                types[i] for i in n.input if types.get(i) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))
    for op in ("NonMaxSuppression", "RoiAlign", "Exp"):
        assert float_inputs[op] and set(float_inputs[op]) == {onnx.TensorProto.FLOAT}, op
    assert onnx.TensorProto.FLOAT16 in float_inputs["Conv"], "the network runs in FP16"
    assert types["boxes"] == types["scores"] == onnx.TensorProto.FLOAT
    demo = trained["demo"]
    gate = ap_gate(trained["fp32"], half, Gate(demo.val_ann, demo.val_images, 0.01), tmp_path)
    assert gate.passed and gate.reference_ap > 0.1, gate.summary()
    kept = {side: json.loads((tmp_path / f"{side}.json").read_text()) for side in ("reference", "candidate")}
    assert kept["reference"] and kept["candidate"], "the gate keeps both files' COCO results"


@pytest.mark.slow
def test_parity_and_gate_refuse_to_judge_nothing(trained, tmp_path):
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))] * 2
    with pytest.raises(DetnasError, match="compared 0 detections"):
        precision_parity(empty, empty, "int8")
    demo = trained["demo"]
    data = json.loads(demo.val_ann.read_text())
    data["annotations"] = []
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    with pytest.raises(DetnasError, match="0 annotations"):
        ap_gate(trained["fp32"], trained["fp32"], Gate(bare, demo.val_images, 0.01))
    data = json.loads(demo.val_ann.read_text())
    data["annotations"] = [{**a, "bbox": [0, 0, 2, 2], "area": 4} for a in data["annotations"]]  # nothing there
    unseen = tmp_path / "unseen.json"
    unseen.write_text(json.dumps(data))
    with pytest.raises(DetnasError, match=r"scores AP 0\.0000 on its \d+ images, no more than the allowed drop 0\.01"):
        ap_gate(trained["fp32"], trained["fp32"], Gate(unseen, demo.val_images, 0.01))
    with pytest.raises(DetnasError, match=r"scores AP 0\.[1-9]\d* on its \d+ images, no more than the allowed drop 0\.5,"):
        ap_gate(trained["fp32"], trained["fp32"], Gate(demo.val_ann, demo.val_images, 0.5))  # a limit above its AP


def test_parity_matches_by_iou_label_and_score():
    """A box shifted to IoU 0.6 with its score 0.08 lower is an INT8 match but not an FP16 one; another label or a
    box at IoU 0.3 never matches; each FP32 detection takes one partner at most."""
    ref = (np.array([[0, 0, 40, 40], [100, 100, 110, 110]], np.float32), np.array([0.9, 0.8], np.float32),
           np.array([1, 2]))
    shift = 40 * (1 - 0.6) / (1 + 0.6)  # a 40 px square moved by this along x overlaps its original at IoU 0.6
    near = (np.array([[shift, 0, 40 + shift, 40], [100, 100, 110, 110]], np.float32), np.array([0.82, 0.8], np.float32),
            np.array([1, 3]))
    assert precision_parity([ref], [near], "int8").matched == 1  # the relabelled second box does not count
    assert precision_parity([ref], [near], "fp16").matched == 0
    far = (np.array([[17, 0, 57, 40]], np.float32), np.array([0.9], np.float32), np.array([1]))  # IoU 0.40
    assert precision_parity([ref], [far], "int8").matched == 0
    twice = (ref[0][:1].repeat(2, 0), np.array([0.9, 0.9], np.float32), np.array([1, 1]))
    assert precision_parity([twice], [(ref[0][:1], ref[1][:1], ref[2][:1])], "fp16").matched == 1


def test_parity_share_counts_spurious_detections_of_the_reduced_file():
    """Two-sided: a file that keeps both FP32 detections but adds three of its own matches 2 of 2 FP32 detections
    and 2 of its 5, so its share is 0.4 and it fails INT8's 0.5; with only one extra it passes (2 of 3)."""
    ref = (np.array([[0, 0, 40, 40], [100, 100, 140, 140]], np.float32), np.array([0.9, 0.8], np.float32),
           np.array([1, 2]))
    extra = (np.array([[200, 200, 240, 240]] * 3, np.float32) + np.arange(3, dtype=np.float32)[:, None] * 50,
             np.array([0.7, 0.6, 0.5], np.float32), np.array([1, 1, 2]))
    noisy = tuple(np.concatenate([a, b]) for a, b in zip(ref, extra))
    parity = precision_parity([ref], [noisy], "int8")
    assert (parity.matched, parity.detections, parity.candidates, parity.share) == (2, 2, 5, 0.4)
    assert not parity.passed and "2 matched of 2 FP32 and 5 int8 detections" in parity.summary()
    one_extra = tuple(np.concatenate([a, b[:1]]) for a, b in zip(ref, extra))
    assert precision_parity([ref], [one_extra], "int8").passed
    assert precision_parity([ref], [tuple(a[:0] for a in ref)], "int8").share == 0.0


def test_engine_parity_bounds_follow_what_the_engine_computes_in():
    """FP32 without TF32: float32 rounding at the input size (`rounding_tol` of the long side: 0.098 px at 800 px,
    0.016 px at 128 px), so a 0.05 px shift passes at 800 px and fails at 128 px (the old fixed 1e-3 px bound
    failed both); TF32, FP16 and INT8 engines are judged by the matched share with their precision's bounds."""
    from detnas.export.parity import ParityReport, rounding_tol
    from detnas.export.precision.parity import PrecisionParity
    from detnas.export.trt import engine_parity

    ref = [(np.array([[10, 10, 90, 90], [300, 300, 700, 700]], np.float32), np.array([0.9, 0.6], np.float32),
            np.array([1, 2]))]
    shifted = [(ref[0][0] + 0.05, ref[0][1] + 5e-5, ref[0][2])]
    wide = engine_parity(ref, shifted, "fp32", False, (800, 800))
    assert isinstance(wide, ParityReport) and wide.passed and wide.box_tol == rounding_tol(800), wide.summary()
    assert not engine_parity(ref, shifted, "fp32", False, (128, 128)).passed
    moved = [(ref[0][0] + np.array([4, 0, 4, 0], np.float32), ref[0][1] - 0.005, ref[0][2])]  # IoU > 0.9
    assert not engine_parity(ref, moved, "fp32", False, (800, 800)).passed
    for precision, tf32, key in (("fp32", True, "tf32"), ("fp16", False, "fp16"), ("int8", False, "int8")):
        judged = engine_parity(ref, moved, precision, tf32, (800, 800))
        assert isinstance(judged, PrecisionParity) and judged.precision == key and judged.passed, judged.summary()


@pytest.mark.slow
def test_tensorrt_engine_is_judged_against_the_fp32_file(trained, int8_export, tmp_path, monkeypatch):
    """`export_trt` judges every engine against the FP32 ONNX file: parity (enforced for every precision) and the
    AP gate, the drop counted from FP32 to the engine. No TensorRT here: a fake build copies an ONNX file under the
    engine's name (the file itself, or an INT8 file calibrated on blank images) and the engine runs on ONNX Runtime,
    so the checks, their refusals and the no-engine-left rule are the real ones."""
    import detnas.bench.backends.trt_backend as trt_backend
    import detnas.export.runtime as runtime
    from detnas.export.trt import export_trt

    meta = read_onnx_meta(trained["fp32"])
    blank = quantize_int8(trained["fp32"], tmp_path / "blank.int8.onnx",
                          calibration_batches([torch.full((3, SIZE, SIZE), 120, dtype=torch.uint8)] * 4, meta), "minmax")
    built = {"file": trained["fp32"], "tf32": []}

    class FakeTensorRT:
        __version__ = "10.3.0"

    def build(onnx_path, engine, input_shape, tf32):
        built["tf32"].append(tf32)
        shutil.copy(built["file"], engine)

    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: FakeTensorRT)
    monkeypatch.setattr(trt_backend, "build_engine", build)
    monkeypatch.setattr(runtime, "engine_runner", lambda path, device="cuda": runtime.onnx_runner(path, "cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
    demo = trained["demo"]
    images = sorted(demo.val_images.glob("*.png"))[:4]
    gate = Gate(demo.val_ann, demo.val_images, 0.01)
    out = tmp_path / "out"
    out.mkdir()
    onnx_file = Path(shutil.copy(trained["fp32"], out / "m.onnx"))
    report = export_trt(onnx_file, out / "m.engine", parity_images=images, gate=gate)
    assert report.parity is not None and report.parity.passed and report.parity.detections > 0, report.parity
    assert report.gate is not None and report.gate.passed and report.gate.drop == 0, report.gate
    fp32_ap = report.gate.reference_ap
    assert fp32_ap > 0.1 and report.gate.images == 24 and report.gate.annotations > 0
    assert json.loads((out / "m.json").read_text())["tf32"] is False and built["tf32"] == [False]
    assert sorted(p.name for p in out.iterdir()) == ["m.engine", "m.json", "m.onnx"]
    for p in (out / "m.engine", out / "m.json"):
        p.unlink()

    int8_file = Path(shutil.copy(int8_export[0], out / "q.onnx"))
    built["file"] = int8_file
    report = export_trt(int8_file, out / "q.engine", parity_images=images, gate=gate, reference=trained["fp32"])
    assert report.parity.precision == "int8" and report.parity.passed and report.parity.candidates > 0
    assert report.gate.reference_ap == fp32_ap, "the INT8 engine's drop is counted from the FP32 file"
    for p in (out / "q.engine", out / "q.json"):
        p.unlink()
    with pytest.raises(DetnasError, match=r"q\.onnx: the TensorRT int8 engine is judged against the FP32 ONNX file, "
                                          "but this file is int8"):
        export_trt(int8_file, out / "q.engine", gate=gate)

    built["file"] = blank  # an engine that lost its detections: parity fails with no gate asked for
    with pytest.raises(DetnasError, match=r"parity FAILED: TensorRT int8 engine: int8 vs FP32 ONNX on 4 images"):
        export_trt(int8_file, out / "q.engine", parity_images=images, reference=trained["fp32"])
    with pytest.raises(DetnasError, match=r"AP gate FAILED: TensorRT fp32 engine AP 0\.\d+ vs FP32 ONNX 0\.\d+ on 24 "
                                          "images") as failure:
        export_trt(onnx_file, out / "m.engine", gate=gate)
    assert float(str(failure.value).split("drop ")[1].split()[0]) > 0.01
    with pytest.raises(DetnasError, match=r"the reference m\.onnx scores AP 0\.\d+ on its 24 images, no more than the "
                                          r"allowed drop 0\.5"):
        export_trt(onnx_file, out / "m.engine", gate=Gate(demo.val_ann, demo.val_images, 0.5))
    assert sorted(p.name for p in out.iterdir()) == ["m.onnx", "q.onnx"], "a failed engine leaves nothing"


def test_cli_gates_an_int8_engine_against_fp32(trained, tmp_path, monkeypatch):
    """`detnas export --precision int8 --format trt`: the engine is gated against the FP32 file the CLI keeps aside
    while the engine is built (the reference AP is the INT8 file's own FP32 reference AP), not against the INT8
    file; the kept copy is gone afterwards. The fake build copies the INT8 file, which runs on ONNX Runtime."""
    import detnas.bench.backends.trt_backend as trt_backend
    import detnas.export.runtime as runtime

    class FakeTensorRT:
        __version__ = "10.3.0"

    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: FakeTensorRT)
    monkeypatch.setattr(trt_backend, "build_engine",
                        lambda onnx_path, engine, input_shape, tf32: shutil.copy(onnx_path, engine))
    monkeypatch.setattr(runtime, "engine_runner", lambda path, device="cuda": runtime.onnx_runner(path, "cpu"))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
    out = tmp_path / "q.onnx"
    code = _export(trained, out, "--precision", "int8", "--calib-count", str(CALIB_IMAGES), "--format", "trt",
                   "--json", str(tmp_path / "export.json"))
    assert code == 0
    document = json.loads((tmp_path / "export.json").read_text())
    engine, reduced = document["tensorrt"], document["precision"]
    assert engine["precision"] == "int8" and engine["tf32"] is False and engine["parity"]["passed"]
    assert engine["gate"]["reference_ap"] == reduced["gate"]["reference_ap"], "gated against FP32, not the INT8 file"
    assert engine["gate"]["candidate_ap"] == reduced["gate"]["candidate_ap"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "q.engine", "q.json", "q.onnx",
                                                          "q.precision.json"], "the kept FP32 copy is removed"


def _refused(capsys, code: int, out: Path, *fragments: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert all(f in err[0] for f in fragments), err[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.stem}*"))


@pytest.mark.slow
def test_bad_precision_requests_are_one_line_errors(trained, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    # a checkpoint whose run recorded no training split, and no --calib-images
    bare = save_checkpoint(tmp_path / "ckpt" / "child", *_weights_and_meta(trained["ckpt"]))
    code = main(["export", "--weights", str(bare), "--out", str(out), "--size", str(SIZE), "--no-parity",
                 "--precision", "int8"])
    _refused(capsys, code, out, "--precision int8 needs calibration images", "--calib-images")
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64)).save(few / f"{i}.png")
    _refused(capsys, _export(trained, out, "--precision", "int8", "--calib-images", str(few), "--calib-count", "8"),
             out, "--calib-count 8", "only 3 images")
    (few / "3.png").write_bytes(b"\x89PNG not really")
    _refused(capsys, _export(trained, out, "--precision", "int8", "--calib-images", str(few), "--calib-count", "4"),
             out, "--calib-images", "3.png: cannot read image")
    _refused(capsys, _export(trained, out, "--precision", "int8", "--max-ap-drop", "-0.5"), out, "--max-ap-drop -0.5")
    _refused(capsys, _export(trained, out, "--precision", "fp8"), out, "'--precision'", "'fp8' is not one of 'fp32', 'fp16', 'int8'")
    _refused(capsys, _export(trained, out, "--precision", "int8", "--calib-method", "mse"), out, "'--calib-method'",
             "'mse' is not one of 'minmax', 'average', 'entropy', 'percentile'")
    _refused(capsys, _export(trained, out, "--precision", "fp16", "--dynamic-batch"), out, "--dynamic-batch",
             "--batch N")
    _refused(capsys, _export(trained, out), out, "--gate-ann", "FP32 ONNX export has nothing to gate")
    demo = trained["demo"]
    _refused(capsys, _export(trained, out, "--precision", "int8", "--calib-images", str(demo.val_images),
                             "--calib-count", "4"), out,
             "are images of --gate-ann", "calibrate on training images")


def test_calibration_overlap_is_judged_by_name_and_content_not_folder(tmp_path):
    """Two disjoint splits in one folder do not overlap (the old folder test refused them); a copy of an evaluation
    image under another name in another folder does (the old test let it through)."""
    shared = tmp_path / "images"
    shared.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(shared / f"{i}.png")
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (4, 5)],
                               "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    train = tmp_path / "train"
    train.mkdir()
    for i in range(4):
        shutil.copy(shared / f"{i}.png", train / f"{i}.png")

    def request(calib: Path, count: int):
        return precision_request("int8", weights=tmp_path / "w", calib_data=calib, calib_images=count,
                                 calib_method="average", gate_data=ann, gate_images=shared, max_ap_drop=0.01,
                                 dynamic_batch=False)

    only_train = tmp_path / "same_folder"
    only_train.mkdir()
    for i in range(4):  # the training split of a folder the evaluation split shares, by name
        (only_train / f"{i}.png").symlink_to(shared / f"{i}.png")
    assert len(request(only_train, 4).calibration.files) == 4
    shutil.copy(shared / "5.png", train / "renamed.png")  # an evaluation image, copied and renamed
    with pytest.raises(DetnasError, match=r"1 calibration images \(e\.g\. renamed\.png\) are images of --gate-ann"):
        request(train, 5)
    (train / "renamed.png").unlink()
    shutil.copy(shared / "0.png", train / "4.png")  # another image under an evaluation image's name
    with pytest.raises(DetnasError, match=r"\(e\.g\. 4\.png\) are images of --gate-ann"):
        request(train, 5)


def _weights_and_meta(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from detnas.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(ckpt)
    meta.pop("format_version")
    return tensors, meta


@pytest.mark.slow
def test_search_times_int8_candidates_and_reports_the_quantization_cost(tmp_path):
    from detnas.export.converters import onnx_converters
    from detnas.search.latency import OracleLatency, Timing

    register_space(TINY)
    timing = Timing(size=(64, 64), precision="int8", scope="backbone", runs=2, warmup=0)
    oracle = OracleLatency(timing, tmp_path / "cache.sqlite", converters=onnx_converters())
    first = oracle.latency(sample_arch(TINY, 1))
    assert first.median_ms > 0 and first.convert_seconds > 0
    again = oracle.latency(sample_arch(TINY, 1))
    assert oracle.cache.hits == 1 and again.convert_seconds == first.convert_seconds, "served per arch hash"
