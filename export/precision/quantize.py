"""INT8 file: `onnxruntime.quantization.quantize_static` in QDQ format, the form TensorRT's explicit quantization
takes: symmetric INT8 activations and weights (every zero point 0), per-channel weights, only Conv/Gemm/MatMul of
the network, ranges from letterboxed calibration images (by default ORT's percentile calibrator at 99.9, which cuts
0.05 % of the values at each end before the range is made symmetric: see `PERCENTILE`). The predictor layers (class
logits, box deltas) keep FP32 weights and outputs, so box decoding, NMS and RoI coordinates never see an INT8 value.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detnas.errors import DetnasError
from detnas.export.metadata import ModelMeta
from detnas.export.precision.network import module_scopes, network_nodes

CALIB_METHODS = ("minmax", "entropy", "percentile")
#: Ranges are cut at a percentile because one calibration image can drive a tensor far beyond what the others
#: produce, and a range stretched to cover it leaves every ordinary value a few INT8 steps wide. COCO AP FP32 -> INT8
#: with ranges from 16 training images (paired bootstrap 95 % interval of the drop over images):
#: - COCO-FPN-300M trained 2000 iterations on coco128 + coco_mini train2017 (201 images), AP on 185 of them (801
#:   annotations). Its 16 calibration images set the box head's min-max ranges 14x wider than 16 coco_mini val2017
#:   images did. 99.999 (ORT's default): 0.0136 -> 0.0027 (drop +0.007 .. +0.025); 99.99: 0.0089;
#:   99.9: 0.0116 (-0.005 .. +0.008); min-max: 0.0007; entropy (`ENTROPY_BINS`): 0.0131 (-0.009 .. +0.007).
#: - The demo's winner on 400 fresh images (893 annotations): 99.999: 0.3175 -> 0.3199; 99.9: 0.3408 (drop -0.039 ..
#:   -0.009: clipping helps it); entropy: 0.1295 (+0.168 .. +0.207: its KL search cut the last stage's ReLU outputs
#:   to a quarter of their range), so entropy is not the default however well it did above.
#: - A detector fit to 8 coco128 images, ranges from 16 images it never saw: 99.999 / 99.99 / 99.9 / 99 gave AP
#:   0.21 / 0.39 / 0.55 / 0.66 against FP32 0.73.
#: Calibration defaults to the run's training split, never the evaluated images.
DEFAULT_CALIB_METHOD = "percentile"
PERCENTILE = 99.9
#: `quantize_static` builds ORT's entropy calibrator with 128 histogram bins, as many as the 128 quantized bins of
#: its KL search, so the search has one candidate, the whole range, and "entropy" gave min-max's ranges. The
#: calibrator is built here with the 2048-bin histogram of TensorRT's entropy calibrator instead, and its ranges
#: reach `quantize_static` through ORT's calibration cache.
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
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
        with tempfile.TemporaryDirectory(prefix="detnas-calib-") as work, \
                contextlib.redirect_stdout(io.StringIO()):  # and the histogram calibrators print their progress
            cache = _entropy_ranges(Path(source), Reader(), Path(work)) if method == "entropy" else None
            quantize_static(str(source), str(target), None if cache else Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=quantized_nodes(graph),
                            calibrate_method=methods[method], calibration_cache_path=cache,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibPercentile": PERCENTILE})
    finally:
        logging.getLogger().setLevel(quiet)
    return Path(target)


def _entropy_ranges(source: Path, reader: Any, work: Path) -> Path:
    """ORT's entropy calibrator at `ENTROPY_BINS`, run over `reader`; the calibration cache holding its ranges."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calibrator = create_calibrator(source, list(QUANTIZED_OPS), augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS,
                                                  "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
    calibrator.collect_data(reader)
    cache = work / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


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


