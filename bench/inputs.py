"""Input batches for timing: real images resized to the deployment size, or seeded random pixels.

Real images matter once NMS is inside the timed scope: its cost grows with the number of candidate boxes,
which random noise understates. For a backbone alone the content does not change the work done.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from detnas.errors import DetnasError
from detnas.images import IMAGE_SUFFIXES, read_image
from detnas.pixels import DEFAULT_PIXELS, PixelConvention


def random_batches(batch: int, size: tuple[int, int], count: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """`count` batches of uniform [0, 1] pixels, the model-input convention, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, *size, generator=generator) for _ in range(count)]


def image_batches(
    folder: str | Path, batch: int, size: tuple[int, int], limit: int = 64, pixels: PixelConvention = DEFAULT_PIXELS
) -> list[torch.Tensor]:
    """Up to `limit` images of `folder` (sorted, recursive) resized to `size` and grouped into full batches."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit] if folder.is_dir() else []
    if len(files) < batch:
        raise DetnasError(f"{folder}: found {len(files)} images ({'/'.join(IMAGE_SUFFIXES)}), need at least one batch of {batch}; "
                          "point --images/--calib-images at a folder of real images")
    return resized_batches([read_image(f, fix="remove it from the image folder") for f in files], batch, size, pixels)


def resized_batches(images: Sequence[torch.Tensor], batch: int, size: tuple[int, int],
                    pixels: PixelConvention = DEFAULT_PIXELS) -> list[torch.Tensor]:
    """uint8 CHW RGB images as model inputs resized to exactly HxW (bilinear, antialiased), in full batches.

    The aspect change does not matter for timing: the network's work depends on the input size, and NMS's on
    how many boxes real content produces, not on their exact places."""
    if len(images) < batch:
        raise DetnasError(f"{len(images)} images cannot fill one batch of {batch}; give more images or a smaller batch")
    resized = [F.interpolate(pixels.to_model_input(im)[None], size=size, mode="bilinear", antialias=True)[0].clamp(0, 1)
               for im in images]
    usable = len(resized) - len(resized) % batch
    return [torch.stack(resized[i:i + batch]) for i in range(0, usable, batch)]

