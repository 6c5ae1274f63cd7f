"""export's FP16 / INT8 file conversions in the form bench's latency oracle takes them.

The oracle sits below export and does not import it; whoever asks it for FP16 or INT8 latency on ONNX Runtime
(`detnas bench`, `detnas search`) hands it these.
"""

from __future__ import annotations

from detnas.bench.precision import OnnxConverters


def onnx_converters() -> OnnxConverters:
    """`detnas.export.precision`'s `convert_fp16` and `quantize_int8`."""
    from detnas.export.precision import convert_fp16, quantize_int8

    return OnnxConverters(fp16=convert_fp16, int8=quantize_int8)
