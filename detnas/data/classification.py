"""ImageFolder classification (folder = class) returning uint8 CHW RGB, resized to one square size.

Small images such as CIFAR's 32 px are upsampled: at 32 px the DetNAS stem and four stride-2 stages leave a 1x1
map, too small to tell architectures apart. `train_transform` and `center_crop_transform` are the training and
the official ImageNet evaluation views.
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


#: the official evaluation resizes the short side to 256 for a 224 centre crop
EVAL_RESIZE_RATIO = 256 / 224
#: the official training's ColorJitter(brightness, contrast, saturation)
COLOR_JITTER = 0.4


def train_transform(size: int, color_jitter: bool = False) -> T.Compose:
    """SPOS' training view: random-resized crop + flip, and the official ColorJitter(0.4, 0.4, 0.4) if asked."""
    steps = [T.PILToTensor(), T.RandomResizedCrop(size, antialias=True)]
    if color_jitter:
        steps.append(T.ColorJitter(COLOR_JITTER, COLOR_JITTER, COLOR_JITTER))
    return T.Compose([*steps, T.RandomHorizontalFlip()])


def center_crop_transform(size: int) -> T.Compose:
    """The official evaluation view: short side to 256/224 x `size` (aspect kept), centre crop `size` x `size`."""
    return T.Compose([T.PILToTensor(), T.Resize(round(size * EVAL_RESIZE_RATIO), antialias=True), T.CenterCrop(size)])
