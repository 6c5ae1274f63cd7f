"""`export_trt`: the ONNX detector -> a TensorRT engine, built by the bench backend (the one module that
imports tensorrt), checked against ONNX Runtime and optionally gated on COCO AP before it is kept.

Precision lives in the ONNX file (FP32, FP16, or INT8 as an explicitly quantized QDQ graph); the engine is built
in the precision the file carries, so there is no precision option and no calibration here; TF32 for its FP32
layers is off unless asked for (`tf32`). The engine is built under a temporary name and renamed into place only
after every check passed; its sidecar JSON (TensorRT version, GPU, compute capability, precision, TF32, input spec,
the ONNX metadata) is written last.

Every engine is judged against the FP32 ONNX file (`reference`: the file itself for an FP32 engine, the FP32 file
a reduced one was converted from) and kept only if it passes (`engine_parity`, then the AP gate):
- FP32 without TF32: every detection matched within what float32 rounding explains at the input size
  (`rounding_tol` of the long side, ~0.1 px at 800 px; TensorRT sums in another order than ONNX Runtime);
- TF32, FP16 and INT8: judged as the ONNX precisions are (`precision_parity`: the share of detections matched
  both ways within the precision's IoU and score bounds); TF32 rounds each multiply's inputs to FP16's 10-bit
  mantissa, so it takes FP16's bounds;
- the AP gate: the drop from the FP32 file to the engine, the whole way, within `gate.max_drop`.
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
from detnas.export.parity import Detections, ParityReport, compare, rounding_tol
from detnas.export.precision.gate import Gate, GateResult, ap_gate
from detnas.export.precision.parity import PrecisionParity, precision_parity
from detnas.export.preprocess import letterbox
from detnas.export.runtime import engine_sidecar, load_exported, read_onnx_meta, run_images
from detnas.io import atomic_write_json
from detnas.progress import task


@dataclass
class TrtReport:
    engine: Path
    sidecar: Path
    precision: str
    parity: ParityReport | PrecisionParity | None  # the engine vs the FP32 ONNX file (see `engine_parity`)
    gate: GateResult | None = None  # AP of the FP32 ONNX file (reference) and of the engine (candidate)
    tf32: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"engine": str(self.engine), "sidecar": str(self.sidecar), "precision": self.precision,
                "tf32": self.tf32, "parity": self.parity.to_dict() if self.parity else None,
                "gate": self.gate.to_dict() if self.gate else None}


def engine_parity(reference: list[Detections], candidate: list[Detections], precision: str, tf32: bool,
                  input_hw: tuple[int, int]) -> ParityReport | PrecisionParity:
    """The engine's detections vs the FP32 ONNX file's on the same images, with the bounds of what the engine
    computes in (see the module docstring); `.passed` is the verdict."""
    if precision == "fp32" and not tf32:
        return compare(reference, candidate, "ONNX Runtime CPU (FP32 file)", "TensorRT fp32",
                       box_tol=rounding_tol(max(input_hw)), score_tol=rounding_tol(1.0))
    return precision_parity(reference, candidate, "tf32" if precision == "fp32" else precision)


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
               gate: Gate | None = None, reference: str | Path | None = None, tf32: bool = False) -> TrtReport:
    """Build, check and keep a TensorRT engine for the exported ONNX detector, in the precision the file carries
    (see the module docstring).

    `reference`: the FP32 ONNX file the engine is judged against (default `onnx_path`, which must then be FP32 for a
    check to run: a reduced file judged against itself would hide its own loss). `parity_images`: real images the
    engine's detections are compared on. `gate`: COCO AP of the engine vs the reference on its annotated images
    (`ap_gate`); a drop above its `max_drop` (absolute AP, 0.01 = 1 point) fails. A failed check keeps no engine.
    """
    from detnas.bench.backends.trt_backend import build_engine, onnx_precision, require_tensorrt

    meta = read_onnx_meta(onnx_path)
    check_trt_request(dynamic_batch=meta.input.batch is None)
    precision = onnx_precision(onnx_path)
    reference = Path(reference or onnx_path)
    if (parity_images or gate) and onnx_precision(reference) != "fp32":
        raise DetnasError(f"{reference}: the TensorRT {precision} engine is judged against the FP32 ONNX file, but "
                          f"this file is {onnx_precision(reference)}; pass the FP32 export as the reference")
    if reference != Path(onnx_path):
        _same_detector(reference, read_onnx_meta(reference), Path(onnx_path), meta)
    label = f"TensorRT {precision}{' (TF32)' if tf32 and precision == 'fp32' else ''} engine"
    trt = require_tensorrt()
    engine_path = Path(engine_path)
    building = engine_path.with_name(f".{engine_path.stem}.building{engine_path.suffix or '.engine'}")
    sidecar = engine_sidecar(building)
    try:
        with task(f"export: building the {label}"):
            build_engine(onnx_path, building, input_shape=meta.input.shape(meta.input.batch), tf32=tf32)
        atomic_write_json(sidecar, _sidecar(trt, meta, precision, onnx_path, tf32))
        parity = None
        if parity_images:
            inputs = _model_inputs(parity_images, meta)
            with task(f"export: TensorRT parity on {len(inputs)} images"):
                expected = run_images(load_exported(reference), inputs)
                candidate = run_images(load_exported(building), inputs)
            parity = engine_parity(expected, candidate, precision, tf32, (meta.input.height, meta.input.width))
            if not parity.passed:
                raise DetnasError(f"parity FAILED: {label}: {parity.summary()}; no engine written to {engine_path}")
        gated = ap_gate(reference, building, gate) if gate else None
        if gated is not None and not gated.passed:
            raise DetnasError(f"AP gate FAILED: {label} {gated.summary('FP32 ONNX')}; no engine written to "
                              f"{engine_path}; try fp16 / more calibration images")
        final_sidecar = engine_sidecar(engine_path)
        os.replace(building, engine_path)
        os.replace(sidecar, final_sidecar)
    finally:
        building.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    return TrtReport(engine_path, final_sidecar, precision, parity, gated, tf32)


def _same_detector(reference: Path, ref: ModelMeta, onnx_path: Path, meta: ModelMeta) -> None:
    """An engine judged against another file is judged against the same detector: the same architecture, classes,
    input and post-processing thresholds (a reference exported with other proposal counts or score thresholds
    differs in its detections by design, and its parity would be a false alarm or a false pass)."""
    fields = {"arch": (ref.arch.hash, meta.arch.hash), "classes": (ref.classes, meta.classes),
              "input": (ref.input, meta.input), "thresholds": (ref.thresholds, meta.thresholds)}
    for name, (want, got) in fields.items():
        if want != got:
            raise DetnasError(f"{reference}: the reference differs from {onnx_path} in its metadata field '{name}' "
                              f"({want} vs {got}); pass the FP32 file exported with the same settings")


def _sidecar(trt: Any, meta: ModelMeta, precision: str, onnx_path: str | Path, tf32: bool) -> dict[str, Any]:
    props = meta.to_props()
    return {
        "tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(),  # the current device: the one built on
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())), "precision": precision,
        "tf32": tf32,
        "input": {"name": meta.input.name, "shape": list(meta.input.shape()), "dtype": meta.input.dtype,
                  "layout": meta.input.layout, "value_range": list(meta.input.value_range)},
        "onnx": str(onnx_path), "metadata": props,
    }
