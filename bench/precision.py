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

