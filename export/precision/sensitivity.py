"""How much each quantized layer of an INT8 file loses: the signal-to-quantization-noise ratio (SQNR, dB) of its
inputs on the calibration images, from ONNX Runtime's own debugger (`onnxruntime.quantization.qdq_loss_debug`).

Why SQNR and not the AP change of quantizing one layer at a time: SQNR costs one pass of the INT8 file over the
calibration batches for every layer at once, where the AP route costs one quantization plus one AP evaluation on
the gate images per layer (a 60-layer detector: 60 evaluations before the first partial file is even tried). The
AP gate still decides: the ranking only orders which layers the partial search keeps in FP32 first.

A layer's sensitivity is the SQNR of what its own quantization adds, not the accumulated error at its output
(which only falls with depth and would rank the last layers first whatever they do): the INT8 rounding and
clipping of its activation input in the INT8 file (`qdq_err`: the tensor before vs after its Q/DQ pair) and of
its weights (FP32 vs dequantized INT8 weights), combined as independent noises (their noise powers add). The
accumulated SQNR vs the FP32 file (`xmodel_err`) is kept beside it for the table.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: calibration batches the activations are collected on: every activation of every batch is held in memory
SENSITIVITY_BATCHES = 8


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized layer: its own quantization noise (`sqnr_db`, lower is more sensitive), split into the
    activation and weight parts, and the accumulated SQNR of its input vs the FP32 file."""

    layer: str
    sqnr_db: float
    activation_db: float | None
    weight_db: float | None
    accumulated_db: float | None


def _combined(*decibels: float | None) -> float:
    """Independent noises add in power: 10 log10(1 / sum(10^(-dB/10)))."""
    powers = [10 ** (-d / 10) for d in decibels if d is not None]
    return -10 * math.log10(sum(powers)) if powers else math.inf


def layer_sensitivity(fp32: str | Path, int8: str | Path, batches: Sequence[np.ndarray]) -> list[LayerSensitivity]:
    """SQNR of every quantized Conv/Gemm/MatMul of `int8` (a QDQ file of `fp32`) on the first `SENSITIVITY_BATCHES`
    of `batches`, most sensitive (lowest SQNR) first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    from detnas.export.precision.quantize import QUANTIZED_OPS

    graph = onnx.load(str(fp32), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    quantized = _quantized_layers(onnx.load(str(int8), load_external_data=False).graph)
    name = graph.input[0].name
    feeds = [{name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches[:SENSITIVITY_BATCHES]]
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="detnas-sqnr-") as work, contextlib.redirect_stdout(io.StringIO()):
            activations = {}
            for side, path in (("float", fp32), ("qdq", int8)):
                augmented = str(Path(work) / f"{side}.onnx")
                modify_model_output_intermediate_tensors(str(path), augmented)
                activations[side] = collect_activations(augmented, iter(list(feeds)))
            errors = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]))
            weights = compute_weight_error(create_weight_matching(str(fp32), str(int8)))
    finally:
        logging.getLogger().setLevel(quiet)
    ranked = []
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS or node.name not in quantized:
            continue
        act = next((errors[i] for i in node.input if i not in initializers and i in errors), {})
        weight = next((weights[i] for i in node.input[1:2] if i in weights), None)
        ranked.append(LayerSensitivity(node.name, _combined(act.get("qdq_err"), weight), act.get("qdq_err"), weight,
                                       act.get("xmodel_err")))
    return sorted(ranked, key=lambda s: s.sqnr_db)


def _quantized_layers(graph: object) -> set[str]:
    """Names of the nodes of a QDQ graph that read a DequantizeLinear output (ORT keeps the FP32 node names)."""
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}  # type: ignore[attr-defined]
    return {n.name for n in graph.node if dequantized & set(n.input)}  # type: ignore[attr-defined]
