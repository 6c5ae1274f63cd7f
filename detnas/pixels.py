"""The one pixel convention: how raw image bytes become the tensor the network sees.

It is recorded in every checkpoint sidecar and ONNX file and applied identically in training, evaluation and
export; nothing re-derives it by guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inside the model: (x - mean) / std per channel, x shaped (..., 3, H, W)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return (x - mean) / std


DEFAULT_PIXELS = PixelConvention()
