"""Parity is a check that can fail: a faithful export passes with its rounding-derived tolerances and says how much
it compared; a wrong graph (a changed op, swapped classes, raw outputs changed so that nothing is detected) fails."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from detnas.detection.kinds import detector_kind
from detnas.errors import DetnasError
from detnas.export import check_parity, class_table, export_onnx
from detnas.export.head_parity import onnx_scope
from detnas.export.parity import ParityReport, TensorParity, compare_rows, compare_values, rounding_tol
from detnas.images import read_image

from helpers.data import shared_dataset
from helpers.export import CLASSES, SIZE, tiny_detector, val_images

pytestmark = pytest.mark.heavy  # the padding-proposals export at 1,000 proposals: minutes


@pytest.fixture(scope="module")
def faithful(module_tmp):
    paths = val_images(shared_dataset("coco_mini"), 4)
    images = [read_image(p) for p in paths]
    detector, arch = tiny_detector("fpn", paths)
    out = module_tmp("parity") / "model.onnx"
    report = export_onnx(detector, arch, class_table(CLASSES), (SIZE, SIZE), out, kind="fpn", score_thresh=0.2,
                         parity_images=images)
    return detector, images, out, report


def _gemm_weight(model: onnx.ModelProto, module: str) -> onnx.TensorProto:
    scope = onnx_scope(next(o for o in detector_kind("fpn").head_outputs if o.module == module))
    node = next(n for n in model.graph.node if scope.search(n.name))
    return next(t for t in model.graph.initializer if t.name == node.input[1])


def _edited(path, edit) -> str:
    model = onnx.load(str(path))
    edit(model)
    wrong = path.with_name(f"wrong_{edit.__name__}.onnx")
    onnx.save(model, str(wrong))
    return wrong


def swap_classes(model):
    weight = _gemm_weight(model, "roi_heads.box_predictor.cls_score")
    values = numpy_helper.to_array(weight).copy()
    values[[1, 2]] = values[[2, 1]]
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))


def change_an_op(model):
    node = next(n for n in model.graph.node if n.op_type == "Relu")
    node.op_type = "Sigmoid"


def suppress_everything(model):
    """Background logit +50: every score falls below the threshold, no detection is left to compare."""
    weight = _gemm_weight(model, "roi_heads.box_predictor.cls_score")
    bias_name = next(n for n in model.graph.node if len(n.input) > 2 and n.input[1] == weight.name).input[2]
    bias = next(t for t in model.graph.initializer if t.name == bias_name)
    values = numpy_helper.to_array(bias).copy()
    values[0] += 50
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))


@pytest.mark.slow
def test_faithful_export_passes_and_says_how_much_it_compared(faithful):
    detector, images, out, report = faithful
    parity = report.parity
    assert parity is not None and parity.passed, parity.summary()
    assert parity.detections >= parity.min_detections == 20
    assert {t.name for t in parity.tensors} == {o.label for o in detector_kind("fpn").head_outputs}
    assert all(t.items > 0 and t.max_diff <= t.tol for t in parity.tensors), parity.summary()
    assert f"{parity.detections} detections compared" in parity.summary()
    again = check_parity(detector, out, images)
    assert again.passed, again.summary()


@pytest.mark.slow
@pytest.mark.parametrize("edit", [swap_classes, change_an_op, suppress_everything])
def test_wrong_export_fails(faithful, edit):
    """Each wrong graph fails, and the head outputs before NMS catch it on their own (no detection count required),
    also when it leaves no detection at all."""
    detector, images, out, _ = faithful
    report = check_parity(detector, _edited(out, edit), images, min_detections=0)
    assert not report.passed, report.summary()
    assert not all(t.passed for t in report.tensors), report.summary()
    with pytest.raises(DetnasError, match="parity FAILED"):
        report.check()


def test_no_comparison_is_no_pass():
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))]
    from detnas.export.parity import compare

    report = compare(empty, empty, "torch", "ort", min_detections=20)
    assert not report.passed and "0 detections compared (at least 20 required)" in report.summary()
    assert not compare_values("x", np.zeros(0), np.zeros(0)).passed


def test_rounding_tolerances_scale_with_magnitude():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, size=(50, 4))
    rounded = logits.astype(np.float32)  # float32 rounding of exact values: always within tolerance
    assert compare_rows("rows", logits, rounded[::-1].copy()).passed, "rows are matched, not compared in order"
    assert compare_values("dense", logits.ravel(), rounded.ravel()).passed
    assert rounding_tol(1000.0) == pytest.approx(1000 * rounding_tol(1.0))
    shifted = rounded + np.float32(0.01)  # a real change, 1e-3 of the magnitude
    assert not compare_values("dense", logits.ravel(), shifted.ravel()).passed
    assert not compare_rows("rows", logits, shifted).passed


def _roi_rows(images: int, proposals: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference float64 rows, a faithful float32 candidate, the real-RoI mask) as an FPN export yields them:
    per image `proposals` rows, the last third padding proposals (arbitrary, different boxes in each runtime), a few
    adjacent real rows swapped (objectness near-ties) and one real row replaced at the proposal cut."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(0, 3, size=(images * proposals, width))
    candidate = reference.astype(np.float32)
    real = np.concatenate([np.arange(proposals) < proposals * 2 // 3] * images)
    candidate[~real] = rng.normal(0, 3, size=(int((~real).sum()), width))  # other padding boxes, other rows
    for image in range(images):
        first = image * proposals
        for i in (5, 100, 300):  # near-ties swap places
            candidate[[first + i, first + i + 1]] = candidate[[first + i + 1, first + i]]
        candidate[first + proposals * 2 // 3 - 1] = rng.normal(0, 3, size=width)  # membership swap at the cut
    return reference, candidate, real


@pytest.mark.parametrize("width", [81, 324])
def test_roi_rows_at_coco_size_pass_within_bounded_memory(width):
    """1,000 proposals x 4 images with 80 classes (81 logits, 324 box deltas): a faithful candidate passes with
    padding rows left out and near-tie swaps matched; all-against-all matching needed 4000x4000x324 float64 (41 GB),
    this stays under 64 MB. A candidate 1% off, or one right only in its padding rows, fails."""
    import tracemalloc

    reference, candidate, real = _roi_rows(4, 1000, width, seed=width)
    tracemalloc.start()
    result = compare_rows("RoI rows", reference, candidate, real)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.passed, result.summary()
    assert result.items == int(real.sum()) == 4 * 666 and result.unmatched == 4, result.summary()  # the cut swaps
    assert peak < 64e6, f"peak {peak / 1e6:.0f} MB"
    wrong = compare_rows("RoI rows", reference, candidate * np.float32(1.01), real)
    assert not wrong.passed and wrong.unmatched > 0.9 * wrong.items, wrong.summary()
    padding_only = reference.astype(np.float32)
    padding_only[real] += np.float32(0.5)  # exact where nothing is compared, wrong where it counts
    assert not compare_rows("RoI rows", reference, padding_only, real).passed


@pytest.mark.slow  # an FPN export at 1,000 proposals with parity: 271 s in a fast-tier run on 2 cores (load 5)
def test_faithful_export_with_padding_proposals_passes(module_tmp):
    """A real FPN export where the RPN keeps fewer proposals than its 1,000 slots (NMS leaves ~2/3 at 128 px): the
    padding RoIs are whichever boxes a top-k over tied -inf picks, which PyTorch and ONNX Runtime pick differently;
    only real RoI rows are compared, so the faithful file passes (before: a third of the rows 'unmatched')."""
    paths = val_images(shared_dataset("coco_mini"), 4)
    images = [read_image(p) for p in paths]
    detector, arch = tiny_detector("fpn", paths, proposals=1000)
    out = module_tmp("padding") / "model.onnx"
    report = export_onnx(detector, arch, class_table(CLASSES), (SIZE, SIZE), out, kind="fpn", score_thresh=0.2,
                         parity_images=images, simplify=False, min_detections=0)
    rows = {t.name: t for t in report.parity.tensors}["RoI class logits"]
    assert report.parity.passed, report.parity.summary()
    assert 0 < rows.items < 4 * 1000, f"{rows.summary()}: padding rows should be left out"


def test_a_report_that_compared_nothing_never_passes():
    """Even with no detection minimum (random-init exports), parity must have compared something: detections or
    head tensors before NMS."""
    empty = ParityReport("PyTorch", "ORT", images=1, detections=0, max_box_diff=0.0, max_score_diff=0.0, unmatched=0)
    assert not empty.passed
    with pytest.raises(DetnasError, match="0 detections compared"):
        empty.check()
    heads = ParityReport("PyTorch", "ORT", images=1, detections=0, max_box_diff=0.0, max_score_diff=0.0, unmatched=0,
                         tensors=[TensorParity("RPN objectness", 10, 0.0, 1e-4)])
    assert heads.passed
    heads.tensors = [TensorParity("RPN objectness", 0, 0.0, 1e-4)]
    assert not heads.passed
