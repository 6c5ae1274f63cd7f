"""ONNX export with post-processing and NMS in the graph, parity checks, TensorRT engines, predict.

Heavy libraries (onnx, onnxruntime, tensorrt) are imported inside the functions that use them.
"""

from detnas.export.metadata import ClassInfo, InputSpec, ModelMeta, class_table
from detnas.export.onnx_export import ExportReport, check_parity, export_onnx, parse_size
from detnas.export.parity import ParityReport, compare
from detnas.export.runtime import exported_predictor, load_exported, onnx_predictor

__all__ = [
    "ClassInfo", "ExportReport", "check_parity", "InputSpec", "ModelMeta", "ParityReport", "class_table", "compare", "export_onnx",
    "exported_predictor", "load_exported", "onnx_predictor", "parse_size",
]
