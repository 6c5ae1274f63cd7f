"""The pre-processing shipped with an exported detector: original image -> fixed model input, and back.

The graph has one fixed input size, so images are letterboxed: scaled to fit keeping their aspect ratio with
the same bilinear resize torchvision's detection transform uses, placed top-left and padded right/bottom with
the pixel mean. The mean becomes exactly 0 after the in-graph normalisation, which is what torchvision's batching
pads with, so the exported model sees what the PyTorch detector saw. Boxes come back by dividing by the scale.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from detnas.pixels import PixelConvention


def letterbox(image: torch.Tensor, height: int, width: int, pixels: PixelConvention) -> tuple[torch.Tensor, float]:
    """uint8 CHW image -> (float [3, height, width] model input, scale applied to the image)."""
    x = pixels.to_model_input(image)
    h, w = x.shape[-2:]
    scale = min(height / h, width / w)
    if scale != 1.0:
        x = F.interpolate(x[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                          align_corners=False)[0]
    canvas = torch.tensor(pixels.mean, dtype=x.dtype)[:, None, None].expand(3, height, width).clone()
    canvas[:, : x.shape[-2], : x.shape[-1]] = x
    return canvas, scale


def restore_boxes(boxes: torch.Tensor, scale: float, image_height: int, image_width: int) -> torch.Tensor:
    """Model-input xyxy boxes -> original-image pixels, clipped to the image."""
    out = boxes / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, image_width)
    out[:, 1::2] = out[:, 1::2].clamp(0, image_height)
    return out
