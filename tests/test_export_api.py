"""export/api.py: the export road as one Python call, `run_export(ExportRequest)`, which `detnas export`, the main job
and the artifact table share."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from detnas.errors import DetnasError
from detnas.export.api import (
    EngineOptions,
    ExportRequest,
    GraphOptions,
    ParityOptions,
    PrecisionOptions,
    SourceOptions,
    run_export,
)


def test_the_requests_cross_option_refusals_come_before_any_work(tmp_path: Path) -> None:
    """Each refusal that compares options is one line naming them, raised by `run_export` before anything is read
    (the checkpoint and the folders named here do not exist) or written."""
    ckpt, images = tmp_path / "missing.safetensors", tmp_path / "images"
    source, out = SourceOptions(weights=ckpt), tmp_path / "m.onnx"
    cases = {
        "--device cuda: the ONNX export traces and checks parity on the CPU":
            ExportRequest(out, source, parity=ParityOptions(images), engine=EngineOptions("onnx", "cuda")),
        "--device cpu: a TensorRT engine is built on a GPU":
            ExportRequest(out, source, parity=ParityOptions(images), engine=EngineOptions("trt", "cpu")),
        f"--out {tmp_path / 'm.engine'}: give the ONNX file name ending in .onnx":
            ExportRequest(tmp_path / "m.engine", source, parity=ParityOptions(images)),
        "--dynamic-batch: a TensorRT engine is built for one batch size":
            ExportRequest(out, source, graph=GraphOptions(dynamic_batch=True), parity=ParityOptions(images),
                          engine=EngineOptions("trt")),
        "--gate-ann and --gate-images go together":
            ExportRequest(out, source, parity=ParityOptions(images),
                          precision=PrecisionOptions("int8", gate_ann=tmp_path / "val.json")),
        "pass --parity-images DIR": ExportRequest(out, source),
        "--gate-ann: an FP32 ONNX export has nothing to gate":
            ExportRequest(out, source, parity=ParityOptions(images),
                          precision=PrecisionOptions(gate_ann=tmp_path / "val.json", gate_images=images)),
        "--weights and --random-init exclude each other":
            ExportRequest(out, SourceOptions(weights=ckpt, arch="COCO-FPN-300M", random_init=True)),
        "--random-init needs --arch NAME": ExportRequest(out, SourceOptions(random_init=True)),
        "--detector / --num-classes go with --random-init":
            ExportRequest(out, SourceOptions(weights=ckpt, num_classes=3), parity=ParityOptions(images)),
    }
    for expected, request in cases.items():
        with pytest.raises(DetnasError) as caught:
            run_export(request)
        message = str(caught.value)
        assert message.startswith(expected) and "\n" not in message, (expected, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_run_export_writes_checks_and_describes_the_file_as_detnas_export_does(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A random-init tiny detector through the Python call: the ONNX file, its pre-NMS parity, the lint notes, the
    detnas.export/2 document and the logged lines (what the command prints) are what `detnas export` makes."""
    from detnas.arch import sample_arch
    from detnas.export.runtime import read_onnx_meta

    from helpers.export import TINY

    caplog.set_level(logging.INFO, logger="detnas.export.api")
    arch = json.dumps(sample_arch(TINY, 0).to_dict())
    request = ExportRequest(tmp_path / "tiny.onnx", SourceOptions(arch=arch, random_init=True, num_classes=2,
                                                                  proposals=20),
                            graph=GraphOptions(size=(64, 64), simplify=False), json_out=tmp_path / "export.json")
    outcome = run_export(request)
    lines = [record.getMessage() for record in caplog.records if record.name == "detnas.export.api"]
    assert outcome.path == tmp_path / "tiny.onnx" and read_onnx_meta(outcome.path).input.shape() == (1, 3, 64, 64)
    assert outcome.onnx.parity is not None and outcome.precision is None and outcome.tensorrt is None
    assert [report.version for report in outcome.lint] == ["10.3", "11"]
    document = json.loads((tmp_path / "export.json").read_text())
    assert document["schema"] == "detnas.export/2"
    assert {k: document[k] for k in ("onnx", "precision", "lint", "tensorrt", "search")} == json.loads(json.dumps(outcome.to_dict()))
    assert lines[0].startswith(f"ONNX: {tmp_path / 'tiny.onnx'}  input [1, 3, 64, 64]")
    assert any(line.startswith("  parity OK:") for line in lines), lines
    assert sum("parser lint" in line for line in lines) == 2, lines
