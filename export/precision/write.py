"""Writing a reduced-precision file: convert the verified FP32 ONNX under a temporary name, check it (parity share,
AP gate) and rename it into place only when every check passed; the report goes next to it as JSON."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
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
from detnas.io import atomic_write_json


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


def reduce_exported(out: str | Path, request: PrecisionRequest,
                    parity_images: Sequence[torch.Tensor] = ()) -> PrecisionReport:
    """The verified FP32 export at `out` becomes the reference and `out` the precision's file, or, when a check
    fails, nothing: the FP32 file is moved aside into a temporary folder that is removed either way."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.fp32-", dir=out.parent) as work:
        reference = Path(work) / out.name
        os.replace(out, reference)
        return write_precision(reference, out, request, parity_images)


@contextlib.contextmanager
def kept_reference(out: str | Path, keep: bool) -> Iterator[Path | None]:
    """With `keep`, a copy of the verified FP32 file at `out` in a temporary folder beside it for as long as the
    block runs (a TensorRT engine built from the reduced file that replaces it is judged against FP32), removed
    after; None without `keep`."""
    if not keep:
        yield None
        return
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.reference-", dir=out.parent) as work:
        yield Path(shutil.copy2(out, Path(work) / out.name))


def write_precision(fp32_onnx: str | Path, out: str | Path, request: PrecisionRequest,
                    parity_images: Sequence[torch.Tensor] = ()) -> PrecisionReport:
    """Turn the verified FP32 file into `request.precision` at `out`, atomically: converted under a temporary
    name, checked (parity share on `parity_images`, AP gate), and renamed into place only if every check passed."""
    import onnx

    from detnas.export.preprocess import letterbox
    from detnas.export.runtime import load_exported, read_onnx_meta, run_images

    out = Path(out)
    meta = replace(read_onnx_meta(fp32_onnx), precision=request.info())
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.{request.precision}-", dir=out.parent) as work:
        staged = Path(work) / out.name
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
            raise DetnasError(f"AP gate FAILED: {request.precision} {gate.summary()}; nothing written to {out}; "
                              "calibrate on more / more representative training images or try fp16"
                              + (f" (parity: {parity.summary()})" if parity else ""))
        if parity is not None and not parity.passed:
            raise DetnasError(f"parity FAILED: {parity.summary()}; nothing written to {out}")
        report = PrecisionReport(out, meta.precision, seconds, parity, gate)
        os.replace(staged, out)
    atomic_write_json(report_path(out), report.to_dict())
    return report
