"""The one internal detection format, shared by the COCO and VOC readers.

Every sample is (image uint8 CHW RGB, target) with target = {boxes: float32 (N, 4) xyxy pixels, labels: int64
(N,) contiguous 1..K, image_id: int}. Each dataset also keeps a pycocotools `COCO` ground truth and the map from
contiguous labels back to its own category ids, so evaluation always goes through COCOeval.

Bad boxes policy: a box more than `BOX_TOLERANCE` px outside the image, or with no area after clipping to the
image, is not a training target. By default it is skipped, counted and listed (`skipped`, `skip_report()`, one
warning at load time); with `strict=True` the first one raises `DetnasError`. Boxes that overhang by less than
the tolerance are clipped. Structural problems (missing keys, unknown category, missing or undecodable image,
size mismatch) always raise `DetnasError` naming the file and the record.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detnas.errors import DetnasError, DetnasWarning
from detnas.images import read_image

BOX_TOLERANCE = 1.0
Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


@dataclass(frozen=True)
class ImageRecord:
    """One image and its training targets (crowd regions and skipped boxes already removed)."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: torch.Tensor
    labels: torch.Tensor


class BoxChecker:
    """Clips boxes to the image and applies the bad-box policy, collecting one message per skipped box."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.skipped: list[str] = []

    def xyxy(self, box: Sequence[float], width: int, height: int, where: str) -> list[float] | None:
        x1, y1, x2, y2 = (float(v) for v in box)
        outside = x1 < -BOX_TOLERANCE or y1 < -BOX_TOLERANCE or x2 > width + BOX_TOLERANCE or y2 > height + BOX_TOLERANCE
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        problem = None
        if x2 < x1 or y2 < y1:
            problem = f"box {[round(v, 2) for v in (x1, y1, x2, y2)]} (xyxy) has a negative width or height " \
                      f"({x2 - x1:g} x {y2 - y1:g})"
        elif outside:
            problem = f"box {[round(v, 2) for v in (x1, y1, x2, y2)]} (xyxy) lies outside the {width}x{height} image"
        elif cx2 <= cx1 or cy2 <= cy1:
            problem = f"box {[round(v, 2) for v in (x1, y1, x2, y2)]} (xyxy) has zero area"
        if problem is None:
            return [cx1, cy1, cx2, cy2]
        message = f"{where}: {problem}"
        if self.strict:
            raise DetnasError(f"{message}; fix the annotation or load without strict to skip such boxes")
        self.skipped.append(message)
        return None


def read_annotated_image(path: Path, width: int, height: int, where: str) -> torch.Tensor:
    """Decode to uint8 CHW RGB; a missing, truncated or wrongly sized file is a `DetnasError`."""
    image = read_image(path, where, "restore the file or remove its record; a truncated file is no image")
    if image.shape[1:] != (height, width):
        raise DetnasError(f"{path}: image is {image.shape[2]}x{image.shape[1]} but {where} says {width}x{height}; "
                          "boxes would be wrong, fix the annotation")
    return image


class DetectionDataset(Dataset):
    """A list of `ImageRecord`s with class names, the label -> category-id map and the COCO ground truth."""

    def __init__(self, records: list[ImageRecord], classes: list[str], label_to_cat_id: dict[int, int],
                 coco_gt: COCO, source: str, skipped: list[str], transforms: Transform | None = None,
                 crowd: int = 0) -> None:
        self.records = records
        self.crowd = crowd  # crowd regions (COCO iscrowd 1) left out of the targets; COCOeval still reads them
        self.classes = classes
        self.label_to_cat_id = label_to_cat_id
        self.coco_gt = coco_gt
        self.source = source
        self.skipped = skipped
        self.transforms = transforms
        if skipped:
            warnings.warn(self.skip_report(), DetnasWarning, stacklevel=3)

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (detectors take K + 1)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def require_boxes(self, use: str, images: int | None = None) -> None:
        """Refuse a set (or its first `images`) without a single box: it cannot train, and its AP is undefined."""
        records = self.records if images is None else self.records[:images]
        if not any(len(r.labels) for r in records):
            skipped = f", {len(self.skipped)} bad boxes skipped" if self.skipped else ""
            raise DetnasError(f"{self.source}: no ground-truth boxes in {len(records)} images{skipped}; {use} needs "
                              "annotated images (is the 'annotations' list empty or missing?)")

    def load_image(self, index: int) -> torch.Tensor:
        """The untransformed image, at the size the annotations refer to (what evaluation feeds a predictor)."""
        r = self.records[index]
        return read_annotated_image(r.path, r.width, r.height, f"{self.source} image id {r.image_id}")

    def target(self, index: int) -> Target:
        r = self.records[index]
        return {"boxes": r.boxes.clone(), "labels": r.labels.clone(), "image_id": r.image_id}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, target = self.load_image(index), self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def crowd_report(self) -> str:
        """One sentence on the crowd regions left out of the training targets (none is said too)."""
        if not self.crowd:
            return f"{self.source}: no crowd regions (iscrowd 1)"
        return (f"{self.source}: left out {self.crowd} crowd regions (iscrowd 1): not training targets; evaluation "
                "ignores detections that fall on them, as COCO does")

    def skip_report(self) -> str:
        """One paragraph: how many boxes were skipped and the first few reasons."""
        if not self.skipped:
            return f"{self.source}: no boxes skipped"
        shown = "; ".join(self.skipped[:3]) + ("; ..." if len(self.skipped) > 3 else "")
        return f"{self.source}: skipped {len(self.skipped)} bad boxes (not training targets): {shown}"


def make_record(image_id: int, path: Path, width: int, height: int, boxes: list[list[float]],
                labels: list[int]) -> ImageRecord:
    return ImageRecord(image_id, path, width, height,
                       torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                       torch.tensor(labels, dtype=torch.int64))


def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Detection batches stay lists: images differ in size and torchvision detectors take lists."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
