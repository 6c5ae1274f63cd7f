"""INT8 file: `onnxruntime.quantization.quantize_static` in QDQ format, the form TensorRT's explicit quantization
takes: symmetric INT8 activations and weights (every zero point 0), per-channel weights, only Conv/Gemm/MatMul of
the network, ranges from letterboxed calibration images (by default the mean of each calibration batch's own
min-max range, ORT's `CalibMovingAverage`: see `DEFAULT_CALIB_METHOD`). Biases stay float (`QuantizeBias` off):
ORT would otherwise store each Conv/Gemm bias as INT32 behind a DequantizeLinear, a type no TensorRT parser
dequantizes (the `dequantize-type` rule of export/trt_lint.py), while TensorRT folds a float bias into its INT8
kernels itself. The predictor layers (class logits, box
deltas) keep FP32 weights and outputs, so box decoding, NMS and RoI coordinates never see an INT8 value.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detnas.errors import DetnasError
from detnas.export.metadata import ModelMeta
from detnas.export.precision.network import module_scopes, network_nodes

CALIB_METHODS = ("minmax", "average", "entropy", "percentile")
#: the mean of per-batch ranges lets each image count once: a few images that drive the last stage 50-80x past the
#: others set every range read off a pooled histogram (min-max, any percentile, KL) and cost 5-8 of a COCO
#: detector's 10 AP points, where this lost 0.4 (table and intervals: docs/measurements.md, "INT8 calibration").
#: Ranges depend on the batch: a file exported with --batch N is calibrated on batches of N, each batch's range
#: being the widest of its N images.
DEFAULT_CALIB_METHOD = "average"
#: calibration images used by default (the first N, sorted)
CALIB_COUNT = 64
#: percentile's cut (ORT's default, 99.999, lost most of the 128 px detector's AP: docs/measurements.md)
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


def percentile_cut(method: str) -> float | None:
    """The percentile a file calibrated with `method` was cut at (recorded beside the method); None for the others."""
    return PERCENTILE if method == "percentile" else None


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

    methods = {"minmax": CalibrationMethod.MinMax, "average": CalibrationMethod.MinMax,
               "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    with contextlib.ExitStack() as scope:
        scope.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the histogram calibrators print progress
        cache = None
        # ONNX Runtime's scratch (its augmented model, as large as the source) goes beside `target`, in the
        # caller's temporary folder that the stale-temp cleaner knows, not in the system's: a kill leaves it there
        scope.enter_context(_temp_root(Path(target).parent))
        if method == "entropy":  # its ranges pass through a cache file in a folder of its own
            work = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="calib-", dir=Path(target).parent)))
            cache = _entropy_ranges(Path(source), Reader(), work)
        quantize_static(str(source), str(target), None if cache else Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=quantized_nodes(graph),
                        calibrate_method=methods[method], calibration_cache_path=cache,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                       "CalibPercentile": PERCENTILE,
                                       "CalibMovingAverage": method == "average"})
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


@contextlib.contextmanager
def _temp_root(folder: Path) -> Iterator[None]:
    """`tempfile`'s default folder is `folder` within the block (ONNX Runtime's quantizer takes no folder argument)."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved
