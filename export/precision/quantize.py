"""INT8 file: `onnxruntime.quantization.quantize_static` in QDQ format, the form TensorRT's explicit quantization
takes: symmetric INT8 activations and weights (every zero point 0), per-channel weights, only Conv/Gemm/MatMul of
the network, ranges from letterboxed calibration images (by default ORT's percentile 99.999, which cuts 0.0005 % of
the values at each end before the range is made symmetric: see `DEFAULT_CALIB_METHOD`). The predictor layers (class
logits, box deltas) keep FP32 weights and outputs, so box decoding, NMS and RoI coordinates never see an INT8 value.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detnas.errors import DetnasError
from detnas.export.metadata import ModelMeta
from detnas.export.precision.network import module_scopes, network_nodes

CALIB_METHODS = ("minmax", "entropy", "percentile")
#: Calibrate on the images the detector was trained on (export's default, the run's training split): a detector fit
#: to few images answers images it never saw with activations far outside its own range (one such image drove a
#: block's output to 388 where the evaluated images stay below 15), and ranges stretched to cover them leave every
#: ordinary value a few INT8 steps wide. Measured on a COCO-FPN-300M trained on 29 coco128 images, AP on 16 of them:
#: ranges from the other 13 training images drop AP by 0.018 (percentile) / 0.012 (minmax), within the 16 images'
#: 95 % bootstrap interval of -0.04..0.06; ranges from unseen coco128 images drop it by 0.29 / 0.36. Percentile
#: 99.999 (ORT's default) keeps the demo's winner (AP +0.001) and the test detector's gate.
DEFAULT_CALIB_METHOD = "percentile"
PERCENTILE = 99.999
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
#: the layers whose outputs are decoded into boxes and scores: FP32 in the INT8 file
PREDICTOR_LAYERS = frozenset({"cls_logits", "bbox_pred", "cls_score", "bbox_reg"})


def quantized_nodes(graph: Any) -> list[str]:
    """The Conv/Gemm/MatMul nodes of the network that INT8 quantizes: all but the predictor layers."""
    network = network_nodes(graph)
    return [n.name for n in graph.node
            if n.op_type in QUANTIZED_OPS and n.name in network and not PREDICTOR_LAYERS & module_scopes(n.name)]


def quantize_int8(source: str | Path, target: str | Path, batches: Sequence[np.ndarray],
                  method: str = DEFAULT_CALIB_METHOD) -> Path:
    """Static INT8 QDQ quantization of `source` (see the module docstring) with ranges from `batches`, each a
    float32 input batch the model accepts; returns `target`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise DetnasError(f"--calib-method {method}: choose one of {', '.join(CALIB_METHODS)}")
    if not batches:
        raise DetnasError("INT8 quantization needs calibration images; pass --calib-images DIR")
    graph = onnx.load(str(source), load_external_data=False).graph
    feeds = iter([{graph.input[0].name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # ORT logs a pre-processing hint on every call
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # and the histogram calibrators print their progress
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=quantized_nodes(graph),
                            calibrate_method=methods[method],
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibPercentile": PERCENTILE})
    finally:
        logging.getLogger().setLevel(quiet)
    return Path(target)


def calibration_batches(images: Sequence[torch.Tensor], meta: ModelMeta) -> list[np.ndarray]:
    """Letterboxed model inputs in the file's batch size; a short last batch is filled with its own first images."""
    from detnas.export.preprocess import letterbox

    spec, batch = meta.input, meta.input.batch or 1
    inputs = [letterbox(im, spec.height, spec.width, meta.pixels)[0] for im in images]
    batches = []
    for first in range(0, len(inputs), batch):
        chunk = inputs[first:first + batch]
        chunk += [chunk[i % len(chunk)] for i in range(batch - len(chunk))]
        batches.append(torch.stack(chunk).numpy())
    return batches


