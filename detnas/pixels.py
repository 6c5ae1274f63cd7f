"""The one pixel convention: how raw image bytes become the tensor the network sees.

It is recorded in every checkpoint sidecar and ONNX file and applied identically in training, evaluation and
export; nothing re-derives it by guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class PixelConvention:
    """Images enter the model as float RGB scaled to [0, 1]; the model normalises with mean/std itself."""

    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PixelConvention:
        return cls(str(data["channel_order"]), float(data["scale"]), tuple(data["mean"]), tuple(data["std"]))

    def to_model_input(self, image_uint8_chw: torch.Tensor) -> torch.Tensor:
        """uint8 CHW in `channel_order` -> float CHW in [0, 1], what detectors and classifiers take."""
        return image_uint8_chw.float() * self.scale


class Normalize(nn.Module):
    """Inside the model: (x - mean) / std per channel, x shaped (..., 3, H, W).

    mean and std are (non-persistent) buffers, so they move with the module: building them per call would copy
    from the host on every forward, which CUDA graph capture forbids."""

    def __init__(self, pixels: PixelConvention) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(pixels.mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(pixels.std)[:, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


DEFAULT_PIXELS = PixelConvention()
