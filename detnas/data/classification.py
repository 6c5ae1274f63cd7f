"""ImageFolder classification (folder = class) returning uint8 CHW RGB, resized to one square size.

Small images such as CIFAR's 32 px are upsampled: at 32 px the DetNAS stem and four stride-2 stages leave a 1x1
map, too small to tell architectures apart.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.transforms import v2 as T

from detnas.errors import DetnasError


def image_folder(root: str | Path, size: int, train: bool = False) -> ImageFolder:
    """torchvision ImageFolder with resize to `size` x `size` (+ random horizontal flip when `train`)."""
    root = Path(root)
    if not root.is_dir():
        raise DetnasError(f"{root}: classification folder not found; pass a folder with one sub-folder per class")
    steps = [T.PILToTensor(), T.Resize((size, size), antialias=True)]
    if train:
        steps.append(T.RandomHorizontalFlip())
    try:
        return ImageFolder(str(root), transform=T.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DetnasError(f"{root}: no images found ({str(exc).splitlines()[0]}); expected one sub-folder of "
                          "images per class") from None
