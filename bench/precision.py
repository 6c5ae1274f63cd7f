"""Which precisions a device can run fast, and the checks every backend shares before timing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError


class PrecisionWarning(UserWarning):
    """A precision that runs but does not reflect a fast deployment (e.g. FP16 on a GTX 1080 Ti)."""


#: compute capabilities with full-rate (or faster) FP16: Maxwell Tegra, GP100, Tegra Pascal, Volta and later.
_FAST_FP16_PASCAL_OR_OLDER = {(5, 3), (6, 0), (6, 2)}


def capability_has_fast_fp16(capability: tuple[int, int]) -> bool:
    """sm_61 (GTX 10xx, e.g. the 1080 Ti) runs FP16 at 1/64 rate; sm_70 and later have tensor cores."""
    return capability >= (7, 0) or capability in _FAST_FP16_PASCAL_OR_OLDER


def fast_fp16(device: str) -> bool:
    """True for a GPU with fast FP16; CPUs are reported as not fast (FP16 there is emulated or converted)."""
    if not device.startswith("cuda"):
        return False
    import torch

    return capability_has_fast_fp16(torch.cuda.get_device_capability(torch.device(device)))


def require_calibration(precision: str, calibration: Sequence[Any] | None) -> None:
    """INT8 needs real calibration images: without them the scales are guesses and the latency is meaningless."""
    if precision == "int8" and not calibration:
        raise DetnasError(
            "INT8 needs calibration data; pass --calib-images DIR with real images (a few hundred from the training set)"
        )


@dataclass(frozen=True)
class OnnxConverters:
    """How an FP32 ONNX file becomes the FP16 / INT8 file ONNX Runtime times, as `detnas export --precision` writes
    it: `detnas.export.precision`'s `convert_fp16(source, target)` and `quantize_int8(source, target, batches)`.
    The caller passes them in (`BackendOptions.converters`), so the latency oracle does not import export."""

    fp16: Callable[[Path, Path], Path]
    int8: Callable[[Path, Path, Sequence[Any]], Path]


def precision_file(path: Path, work: Path, precision: str, calibration: Sequence[Any] | None,
                   converters: OnnxConverters | None, runtime: str) -> tuple[Path, float | None]:
    """The file `runtime` times at `precision`: `path` itself when it carries that precision (e.g. the file
    `detnas export --precision` wrote), else `path` (FP32) converted as `detnas export --precision` converts it
    (FP16 network with FP32 post-processing; INT8 QDQ with ranges from the calibration batches) into `work`; and
    the seconds the conversion took (None: timed as it is). A module's half() is never what ships: NMS, RoiAlign
    and box decoding would run in FP16."""
    import time

    from detnas.bench.backends.trt_backend import onnx_precision

    already = onnx_precision(path)
    if already == precision:
        return path, None
    if already != "fp32":
        raise DetnasError(f"--precision {precision}: {path.name} is already an {already} file; time it with "
                          f"--precision {already}")
    require_calibration(precision, calibration)  # only a conversion needs ranges; a file already INT8 does not
    if converters is None:
        raise DetnasError(f"--precision {precision} on {runtime} times {path.name} converted as detnas export "
                          "--precision converts it; pass BackendOptions(converters=detnas.export.converters."
                          "onnx_converters()), or time a file exported with that precision")
    start = time.perf_counter()
    if precision == "int8":
        model = converters.int8(path, work / "model.int8.onnx", [x.numpy() for x in calibration or []])
    else:
        model = converters.fp16(path, work / "model.fp16.onnx")
    return model, time.perf_counter() - start
