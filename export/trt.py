"""`export_trt`: the ONNX detector -> a TensorRT engine, built by the bench backend (the one module that
imports tensorrt), checked against ONNX Runtime and optionally gated on COCO AP before it is kept.

Precision lives in the ONNX file (FP32, FP16, or INT8 as an explicitly quantized QDQ graph); the engine is built
in the precision the file carries, so there is no precision option and no calibration here. The engine is built
under a temporary name and renamed into place only after every check passed; its sidecar JSON (TensorRT version,
GPU, compute capability, precision, input spec, the ONNX metadata) is written last. FP32 engines must match ONNX
Runtime within the ONNX parity tolerances; FP16 / INT8 engines cannot, by design, so their parity is reported and
their accuracy is judged by the AP gate (`gate`, the same `ap_gate` the ONNX precisions pass).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detnas.errors import DetnasError
from detnas.export.metadata import ModelMeta
from detnas.export.parity import ParityReport, compare
from detnas.export.precision.gate import Gate, GateResult, ap_gate
from detnas.export.preprocess import letterbox
from detnas.export.runtime import engine_sidecar, load_exported, read_onnx_meta, run_images
from detnas.io import atomic_write_json
from detnas.progress import task


@dataclass
class TrtReport:
    engine: Path
    sidecar: Path
    precision: str
    parity: ParityReport | None
    gate: GateResult | None = None  # AP of the ONNX file (reference) and of the engine (candidate), with gate data

    def to_dict(self) -> dict[str, Any]:
        return {"engine": str(self.engine), "sidecar": str(self.sidecar), "precision": self.precision,
                "parity": self.parity.to_dict() if self.parity else None,
                "gate": self.gate.to_dict() if self.gate else None}


def check_trt_request(dynamic_batch: bool = False) -> None:
    """Refuse bad combinations before any work (and before asking for TensorRT)."""
    if dynamic_batch:
        raise DetnasError("--dynamic-batch: a TensorRT engine is built for one batch size (and the dynamic-batch "
                          "graph loops over images); export the engine with --batch N instead")


def _model_inputs(files: Sequence[Path], meta: ModelMeta) -> list[torch.Tensor]:
    from detnas.images import read_image

    spec = meta.input
    return [letterbox(read_image(f), spec.height, spec.width, meta.pixels)[0] for f in files]


def export_trt(onnx_path: str | Path, engine_path: str | Path, *, parity_images: Sequence[Path] = (),
               gate: Gate | None = None) -> TrtReport:
    """Build, check and keep a TensorRT engine for the exported ONNX detector, in the precision the file carries
    (see the module docstring).

    `gate`: COCO AP of the engine vs the ONNX file on its annotated images (`ap_gate`); a drop above its
    `max_drop` (absolute AP, e.g. 0.01 = 1 point) fails and keeps no engine.
    """
    meta = read_onnx_meta(onnx_path)
    check_trt_request(dynamic_batch=meta.input.batch is None)
    from detnas.bench.backends.trt_backend import build_engine, onnx_precision, require_tensorrt

    precision = onnx_precision(onnx_path)
    trt = require_tensorrt()
    engine_path = Path(engine_path)
    building = engine_path.with_name(f".{engine_path.stem}.building{engine_path.suffix or '.engine'}")
    sidecar = engine_sidecar(building)
    try:
        with task(f"export: building the TensorRT {precision} engine"):
            build_engine(onnx_path, building, input_shape=meta.input.shape(meta.input.batch))
        atomic_write_json(sidecar, _sidecar(trt, meta, precision, onnx_path))
        parity = None
        if parity_images:
            inputs = _model_inputs(parity_images, meta)
            with task(f"export: TensorRT parity on {len(inputs)} images"):
                reference = run_images(load_exported(onnx_path), inputs)
                candidate = run_images(load_exported(building), inputs)
            parity = compare(reference, candidate, "ONNX Runtime CPU", f"TensorRT {precision}")
            if precision == "fp32":
                parity.check()
        gated = ap_gate(onnx_path, building, gate) if gate else None
        if gated is not None and not gated.passed:
            raise DetnasError(f"AP gate FAILED: TensorRT {precision} engine {gated.summary('ONNX')}; no engine "
                              f"written to {engine_path}; try fp16 / more calibration images")
        final_sidecar = engine_sidecar(engine_path)
        os.replace(building, engine_path)
        os.replace(sidecar, final_sidecar)
    finally:
        building.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    return TrtReport(engine_path, final_sidecar, precision, parity, gated)


def _sidecar(trt: Any, meta: ModelMeta, precision: str, onnx_path: str | Path) -> dict[str, Any]:
    props = meta.to_props()
    return {
        "tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(0),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))), "precision": precision,
        "input": {"name": meta.input.name, "shape": list(meta.input.shape()), "dtype": meta.input.dtype,
                  "layout": meta.input.layout, "value_range": list(meta.input.value_range)},
        "onnx": str(onnx_path), "metadata": props,
    }
