"""Writing a reduced-precision file: convert the verified FP32 ONNX in a temporary folder, check it (parity share,
AP gate) and rename it into place with its JSON report only when every check passed; a failure leaves what was
at the output before."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from detnas.errors import DetnasError
from detnas.export.metadata import PrecisionInfo
from detnas.export.precision.fp16 import convert_fp16
from detnas.export.precision.gate import GateResult, ap_gate
from detnas.export.precision.parity import PrecisionParity, precision_parity
from detnas.export.precision.quantize import calibration_batches, quantize_int8
from detnas.export.precision.request import PrecisionRequest
from detnas.io import atomic_write_json, publish, temp_dir


@dataclass
class PrecisionReport:
    """What `write_precision` produced and proved; also written as `<out stem>.precision.json`."""

    path: Path
    info: PrecisionInfo
    convert_seconds: float
    parity: PrecisionParity | None
    gate: GateResult | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **asdict(self.info), "convert_seconds": self.convert_seconds,
                "parity": self.parity.to_dict() if self.parity else None,
                "gate": self.gate.to_dict() if self.gate else None}


def report_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".precision.json")


def write_precision(fp32_onnx: str | Path, out: str | Path, request: PrecisionRequest,
                    parity_images: Sequence[torch.Tensor] = ()) -> PrecisionReport:
    """Turn the verified FP32 file into `request.precision` at `out` (`stage_precision` in a temporary folder beside
    it), then rename it into place with its report (`publish`): a failed check leaves the previous file and report
    as they were."""
    out = Path(out)
    with temp_dir(out) as work:
        staged, sidecar, report = stage_precision(fp32_onnx, work, out, request, parity_images)
        publish((staged, out), [(sidecar, report_path(out))])
    return report


def stage_precision(fp32_onnx: str | Path, work: Path, final: Path, request: PrecisionRequest,
                    parity_images: Sequence[torch.Tensor] = ()) -> tuple[Path, Path, PrecisionReport]:
    """Convert the verified FP32 file to `request.precision` inside `work` and check it (parity share on
    `parity_images`, AP gate); returns (the file, its report file, the report), both staged in `work` for `publish`
    to `final` and its `report_path`. Everything in between, ONNX Runtime's quantization scratch included, stays in
    `work` (a folder named for `remove_stale_temps`); a failed check is one line and publishes nothing."""
    import onnx

    from detnas.export.preprocess import letterbox
    from detnas.export.runtime import load_exported, read_onnx_meta, run_images

    meta = replace(read_onnx_meta(fp32_onnx), precision=request.info())
    staged = work / final.name
    start = time.perf_counter()
    if request.precision == "int8":
        assert request.calibration is not None  # precision_request guarantees it
        quantize_int8(fp32_onnx, staged, calibration_batches(request.calibration.images, meta),
                      request.calibration.method)
    else:
        convert_fp16(fp32_onnx, staged)
    seconds = time.perf_counter() - start
    model = onnx.load(str(staged))
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise DetnasError(f"{request.precision} graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    onnx.save(model, str(staged))
    parity = None
    if parity_images:
        inputs = [letterbox(im, meta.input.height, meta.input.width, meta.pixels)[0] for im in parity_images]
        parity = precision_parity(run_images(load_exported(fp32_onnx), inputs),
                                  run_images(load_exported(staged), inputs), request.precision)
    gate = ap_gate(fp32_onnx, staged, request.gate) if request.gate else None
    if gate is not None and not gate.passed:  # the AP verdict first: it is what the file is for
        raise DetnasError(f"AP gate FAILED: {request.precision} {gate.summary()}; nothing written to {final}; "
                          "calibrate on more / more representative training images or try fp16"
                          + (f" (parity: {parity.summary()})" if parity else ""))
    if parity is not None and not parity.passed:
        raise DetnasError(f"parity FAILED: {parity.summary()}; nothing written to {final}")
    report = PrecisionReport(final, meta.precision, seconds, parity, gate)
    sidecar = work / report_path(final).name
    atomic_write_json(sidecar, report.to_dict())
    return staged, sidecar, report
