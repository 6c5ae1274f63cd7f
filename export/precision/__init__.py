"""Reduced-precision detectors: the verified FP32 ONNX -> an FP16 file with FP32 islands (`fp16`) or an INT8 QDQ
file (`quantize`), checked against the FP32 file (`parity`, the AP `gate`) before it takes its final name (`write`).

Precision lives in the file: TensorRT 10+ builds strongly typed engines from it and ONNX Runtime runs it as is.
Both conversions are ONNX Runtime's own tools (already a dependency; NVIDIA ModelOpt's ONNX PTQ would be a new,
CUDA-oriented one for the same QDQ output).
"""

from detnas.export.precision.fp16 import convert_fp16
from detnas.export.precision.gate import Gate, GateResult, ap_gate
from detnas.export.precision.network import NETWORK_SCOPES, network_nodes
from detnas.export.precision.parity import TOLERANCES, PrecisionParity, Tolerance, precision_parity
from detnas.export.precision.quantize import (
    CALIB_METHODS,
    DEFAULT_CALIB_METHOD,
    PERCENTILE,
    PREDICTOR_LAYERS,
    QUANTIZED_OPS,
    calibration_batches,
    percentile_cut,
    quantize_int8,
    quantized_nodes,
)
from detnas.export.precision.request import Calibration, PrecisionRequest, precision_request, training_split
from detnas.export.precision.write import PrecisionReport, kept_reference, reduce_exported, report_path, write_precision

__all__ = [
    "CALIB_METHODS", "DEFAULT_CALIB_METHOD", "NETWORK_SCOPES", "PERCENTILE", "PREDICTOR_LAYERS", "QUANTIZED_OPS", "TOLERANCES",
    "Calibration", "Gate", "GateResult", "PrecisionParity", "PrecisionReport", "PrecisionRequest", "Tolerance",
    "ap_gate", "calibration_batches", "convert_fp16", "kept_reference",
    "network_nodes", "percentile_cut", "precision_parity", "precision_request",
    "quantize_int8", "quantized_nodes", "reduce_exported", "report_path", "training_split", "write_precision",
]
