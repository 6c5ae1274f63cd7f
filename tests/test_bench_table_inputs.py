"""`detnas bench table` refuses, in one line and before any work, what would put a wrong row under its caption:
`--weights` of another detector than the ONNX files hold (its eager row would score another detector on these
classes), and INT8 calibration options that nothing calibrates (silently ignored before)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from detnas.arch import sample_arch
from detnas.checkpoint import read_checkpoint_meta, save_checkpoint
from detnas.cli.main import main
from detnas.detection import build_detector
from detnas.export.metadata import InputSpec, ModelMeta, PrecisionInfo, checkpoint_difference, class_table
from detnas.pixels import DEFAULT_PIXELS
from detnas.space import SearchSpace, register_space
from detnas.supernet import ChildNet, Supernet

from helpers.data import shared_dataset
from helpers.export import CATEGORY_IDS, CLASSES, SIZE, TINY
from helpers.spaces import TINY as OTHER_SPACE  # the shared tiny space: any space but the exported detector's


def _graph(nodes: list, initializers: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loadable by the ONNX Runtime in use (the old code went on to run it)
    return model


def _meta(precision: str = "fp32", **changes: Any) -> ModelMeta:
    """The metadata `detnas export` writes for the tiny FPN detector on CLASSES (`changes`: another detector's)."""
    register_space(TINY)
    meta = ModelMeta(arch=sample_arch(TINY, 0), detector="fpn", classes=class_table(CLASSES, CATEGORY_IDS),
                     input=InputSpec(SIZE, SIZE), pixels=DEFAULT_PIXELS,
                     thresholds={"score": 0.05, "nms_iou": 0.5, "rpn_proposals": 20}, outputs={"boxes": "xyxy pixels"},
                     precision=PrecisionInfo(precision))
    return replace(meta, **changes)


def _exported(path: Path, precision: str = "fp32", **changes: Any) -> Path:
    """A file carrying `_meta` (its graph is a stand-in: the refusals come before anything runs it). INT8: a QDQ
    graph, as the precision check reads it."""
    meta = _meta(precision, **changes)
    if precision == "int8":
        scale, zero = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])
        model = _graph([helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"])], [scale, zero])
    else:
        model = _graph([helper.make_node("Identity", ["images"], ["out"])])
    helper.set_model_props(model, meta.to_props())
    onnx.save(model, path)
    return path


def _checkpoint(path: Path, *, kind: str = "fpn", classes: list[str] = CLASSES, seed: int = 0,
                space: SearchSpace = TINY) -> Path:
    """A real detection checkpoint (weights and sidecar as detnas train writes them): a child of TINY, or a
    supernet of another space."""
    register_space(space)
    supernet = space is not TINY
    arch = sample_arch(space, seed)
    detector = build_detector(kind, Supernet(space) if supernet else ChildNet(arch), len(classes) + 1, SIZE, SIZE)
    meta = {"kind": "supernet-det" if supernet else "child-det", "space": space.to_dict(),
            "arch": None if supernet else arch.to_dict(), "pixels": DEFAULT_PIXELS.to_dict(), "classes": classes,
            "detector": kind, "label_to_cat_id": {str(i): CATEGORY_IDS.get(i, i) for i in range(1, len(classes) + 1)},
            "recipe": {"name": "test", "min_size": SIZE, "max_size": SIZE}}
    return save_checkpoint(path, detector.state_dict(), meta)


def _table(capsys: pytest.CaptureFixture[str], onnx_path: Path, *args: str) -> tuple[int, str, list[str]]:
    coco_mini = shared_dataset("coco_mini")
    code = main(["bench", "table", "--model", str(onnx_path), "--ann",
                 str(coco_mini / "annotations" / "instances_val2017.json"), "--images", str(coco_mini / "val2017"),
                 "--runs", "2", "--warmup", "0", *args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize("other, named", [
    ({"kind": "retinanet"}, "detector kind retinanet vs fpn in the ONNX file"),
    ({"classes": ["cat", "dog"]}, "classes 2 (cat=1, dog=2) vs 3 (person=1, bicycle=2, car=3) in the ONNX file"),
    ({"seed": 1}, "arch "),
    ({"space": OTHER_SPACE}, f"space {OTHER_SPACE.name} ("),
])
def test_weights_of_another_detector_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 other: dict, named: str) -> None:
    """Before: the eager row of the other checkpoint was measured and added (AP 0.0 on these classes) under this
    detector's caption. Now one line names both files and the field that differs; nothing is measured."""
    model = _exported(tmp_path / "model.onnx")
    weights = _checkpoint(tmp_path / "other", **other)
    doc = tmp_path / "table.json"
    code, out, err = _table(capsys, model, "--weights", str(weights), "--json", str(doc))
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert f"--weights {weights} is another detector than {model}: {named}" in err[0], err
    assert "pass the checkpoint model.onnx was exported from, or leave --weights out" in err[0]
    assert out == "" and not doc.exists()


def test_the_checkpoint_a_file_was_exported_from_matches_it(tmp_path: Path) -> None:
    """The comparison passes the checkpoint the file describes (so the refusals above are about the field named)."""
    from detnas.export.runtime import read_onnx_meta

    meta = read_onnx_meta(_exported(tmp_path / "model.onnx"))
    assert checkpoint_difference(meta, read_checkpoint_meta(_checkpoint(tmp_path / "same"))) is None
    mismatch = checkpoint_difference(meta, read_checkpoint_meta(_checkpoint(tmp_path / "seed1", seed=1)))
    assert mismatch is not None and mismatch[0] == "arch" and mismatch[2].startswith(meta.arch.hash)


def test_artifacts_of_another_detector_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every row carries the FP32 file's detector: an ONNX file of the same arch on other classes, or an engine whose
    sidecar describes another detector kind, was tabled under its caption (only arch and input were compared, and
    engines not at all)."""
    model = _exported(tmp_path / "model.onnx")
    other = _exported(tmp_path / "other.onnx", classes=class_table(["cat", "dog"]))
    code, out, err = _table(capsys, model, "--model", str(other))
    assert code == 2 and len(err) == 1 and out == "", err
    assert (f"{other}: another detector or input than {model}: classes 2 (cat=1, dog=2) vs 3 (person=1, bicycle=2, "
            "car=3); one table compares the artifacts of one detector") in err[0]
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    engine.with_suffix(".json").write_text(json.dumps({"precision": "fp32",
                                                       "metadata": _meta(detector="retinanet").to_props()}))
    code, out, err = _table(capsys, model, "--model", str(engine))
    assert code == 2 and len(err) == 1 and out == "", err
    assert f"{engine}: another detector or input than {model}: detector kind retinanet vs fpn" in err[0]


@pytest.mark.parametrize("args, message", [
    (["--convert", "fp16", "--calib-count", "8"],
     "--calib-count: INT8 calibration options, but nothing is calibrated (--convert fp16); drop them, or add "
     "--convert int8"),
    (["--calib-images", "."], "--calib-images: INT8 calibration options, but nothing is calibrated (no --convert)"),
])
def test_int8_options_without_an_int8_conversion_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             args: list[str], message: str) -> None:
    """The rule `detnas export` applies to --precision fp32/fp16 (one shared refusal), applied to --convert."""
    model = _exported(tmp_path / "model.onnx")
    code, out, err = _table(capsys, model, *args)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert out == "" and not (tmp_path / "model.fp16.onnx").exists()


def test_int8_options_for_an_int8_file_used_as_it_is_are_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An INT8 file already next to the FP32 one (or given with --model) is reused, not calibrated again: a
    --calib-count for it would be ignored and the row would carry the old calibration."""
    model = _exported(tmp_path / "model.onnx")
    int8 = _exported(tmp_path / "model.int8.onnx", "int8")
    code, _, err = _table(capsys, model, "--convert", "int8", "--calib-count", "8")
    assert code == 2 and len(err) == 1, err
    assert (f"--calib-count: INT8 calibration options, but nothing is calibrated: the INT8 row is {int8}, already "
            "converted and used as it is; drop them, or remove model.int8.onnx to have it converted again") in err[0]
    code, _, err = _table(capsys, model, "--model", str(int8), "--convert", "int8", "--calib-count", "8")
    assert code == 2 and len(err) == 1 and f"the INT8 row is --model {int8}, used as it is" in err[0], err
    int8.unlink()  # converted here: the options serve it, and the conversion asks for its images next
    code, _, err = _table(capsys, model, "--convert", "int8", "--calib-count", "8")
    assert code == 2 and len(err) == 1 and "--convert int8 needs calibration images" in err[0], err
