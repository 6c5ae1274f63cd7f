"""Detection transforms on (uint8 CHW image, target): resize by short/long side and horizontal flip.

torchvision's detectors resize again internally to their own min/max size; resizing in the data pipeline first
makes decoding-side work (and worker -> trainer transfer) proportional to the size actually trained on.

Kept over torchvision.transforms.v2 (measured): v2.Resize truncates the scaled side where scaled_size()
rounds (1 px off on 41-55 % of coco128's distinct sizes and 45 % of the demo's, e.g. 480x640 @800 -> 1066 not
1067), and its tv_tensors wrapping cost 6-13 % per sample on coco128 and ~50 % at the demo's 192/320; a v2 module
would be ~30 lines instead of this module's ~60.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as F

from detnas.data.detection import Target, Transform
from detnas.sizes import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE


def scaled_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Short side -> min_size unless that makes the long side exceed max_size (the paper's 800 / 1333 rule)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


class Resize:
    def __init__(self, min_size: int = DEFAULT_MIN_SIZE, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        height, width = image.shape[-2:]
        new_h, new_w = scaled_size(height, width, self.min_size, self.max_size)
        image = F.resize(image, [new_h, new_w], antialias=True)
        scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
        return image, {**target, "boxes": target["boxes"] * scale}


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if torch.rand(()) >= self.p:
            return image, target
        width = image.shape[-1]
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}


class Compose:
    def __init__(self, transforms: list[Transform]) -> None:
        self.transforms = transforms

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


def detection_transforms(train: bool, min_size: int = DEFAULT_MIN_SIZE, max_size: int = DEFAULT_MAX_SIZE) -> Compose:
    """Resize, plus a random horizontal flip for training."""
    steps: list[Transform] = [Resize(min_size, max_size)]
    if train:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(steps)
