"""ONNX export with post-processing and NMS in the graph, parity checks, TensorRT engines, predict.

Names are resolved lazily, as in detnas.bench, so registering the `export` commands (and `detnas --help`) does
not import torch, torchvision or onnx.
"""

from __future__ import annotations

from detnas.lazy import lazy_exports

_EXPORTS = {
    "ClassInfo": "detnas.export.metadata",
    "InputSpec": "detnas.export.metadata",
    "ModelMeta": "detnas.export.metadata",
    "class_table": "detnas.export.metadata",
    "ExportReport": "detnas.export.onnx_export",
    "check_parity": "detnas.export.onnx_export",
    "export_onnx": "detnas.export.onnx_export",
    "parse_size": "detnas.export.onnx_export",
    "ParityReport": "detnas.export.parity",
    "compare": "detnas.export.parity",
    "exported_predictor": "detnas.export.runtime",
    "load_exported": "detnas.export.runtime",
    "onnx_predictor": "detnas.export.runtime",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("detnas.export", _EXPORTS)
