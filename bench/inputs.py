"""Input batches for timing: real images resized to the deployment size, or seeded random pixels.

Real images matter once NMS is inside the timed scope: its cost grows with the number of candidate boxes,
which random noise understates. For a backbone alone the content does not change the work done.
"""

from __future__ import annotations

from pathlib import Path

import torch

from detnas.errors import DetnasError
from detnas.pixels import DEFAULT_PIXELS, PixelConvention

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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
        raise DetnasError(f"{folder}: found {len(files)} images (.jpg/.png), need at least one batch of {batch}; "
                          "point --images/--calib at a folder of real images")
    images = [pixels.to_model_input(_read_resized(f, size)) for f in files]
    usable = len(images) - len(images) % batch
    return [torch.stack(images[i:i + batch]) for i in range(0, usable, batch)]


def _read_resized(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """uint8 CHW RGB resized to exactly HxW (bilinear); the aspect change does not matter for timing."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError) as exc:
        raise DetnasError(f"{path}: cannot decode image ({exc}); remove it from the image folder") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()
