"""COCO instances json + image folder, read into the internal detection format (see `detnas.data.detection`)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from detnas.data.detection import BoxChecker, DetectionDataset, Transform, make_record
from detnas.errors import DetnasError
from detnas.io import read_json_file

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")
_CAT_KEYS = ("id", "name")


def read_coco_json(ann_file: str | Path) -> dict[str, Any]:
    """Parse and check the structure of a COCO instances file; every problem names the file and the record."""
    ann_file = Path(ann_file)
    if not ann_file.exists():  # the likeliest mistake, named plainly
        raise DetnasError(f"{ann_file}: annotation file not found")
    data = read_json_file(ann_file, "annotation file")
    if not isinstance(data, dict):
        raise DetnasError(f"{ann_file}: a COCO file is a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DetnasError(f"{ann_file}: missing or invalid top-level list '{key}'; not a COCO instances file")
    data.setdefault("annotations", [])
    for section, keys in (("images", _IMAGE_KEYS), ("annotations", _ANN_KEYS), ("categories", _CAT_KEYS)):
        for i, rec in enumerate(data[section]):
            missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
            if missing:
                name = rec.get("id", f"#{i}") if isinstance(rec, dict) else f"#{i}"
                raise DetnasError(f"{ann_file}: {section} record id {name} lacks key(s) {', '.join(missing)}")
    for section in ("images", "categories"):
        ids = [rec["id"] for rec in data[section]]
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1}, key=str)[:3]
            raise DetnasError(f"{ann_file}: {section} ids {twice} occur more than once; ids must be unique")
    for im in data["images"]:
        if not all(isinstance(im[k], int) and not isinstance(im[k], bool) and im[k] > 0 for k in ("width", "height")):
            raise DetnasError(f"{ann_file}: images record id {im['id']} has width/height {im['width']!r}/"
                              f"{im['height']!r}; both must be positive integers")
    for ann in data["annotations"]:
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise DetnasError(f"{ann_file}: annotation id {ann['id']} has bbox {bbox!r}; expected [x, y, w, h]")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2] * bbox[3]))  # COCOeval's area ranges need it
    return data


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools `COCO` over an in-memory dict (its index building prints; keep stdout clean)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDetection(DetectionDataset):
    """COCO detection: labels are 1..K in ascending category-id order; crowd regions are not targets."""

    def __init__(self, ann_file: str | Path, images_dir: str | Path, transforms: Transform | None = None,
                 strict: bool = False) -> None:
        ann_file, images_dir = Path(ann_file), Path(images_dir)
        if not images_dir.is_dir():
            raise DetnasError(f"{images_dir}: image folder not found (for {ann_file})")
        data = read_coco_json(ann_file)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        cat_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        images = {im["id"]: im for im in data["images"]}
        per_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}
        for ann in data["annotations"]:
            if ann["category_id"] not in cat_to_label:
                raise DetnasError(f"{ann_file}: annotation id {ann['id']} has category_id {ann['category_id']} "
                                  "which is not in 'categories'")
            if ann["image_id"] not in images:
                raise DetnasError(f"{ann_file}: annotation id {ann['id']} refers to image_id {ann['image_id']} "
                                  "which is not in 'images'")
            per_image[ann["image_id"]].append(ann)
        checker = BoxChecker(strict)
        records, crowd = [], 0
        for image_id in sorted(images):
            im = images[image_id]
            path = images_dir / im["file_name"]
            if not path.is_file():
                raise DetnasError(f"{path}: image file missing ({ann_file} image id {image_id}); restore it or "
                                  "remove the record")
            boxes, labels = [], []
            for ann in per_image[image_id]:
                if ann["iscrowd"]:
                    crowd += 1
                    continue
                x, y, w, h = ann["bbox"]
                box = checker.xyxy((x, y, x + w, y + h), im["width"], im["height"],
                                   f"{ann_file} annotation id {ann['id']} (image id {image_id})")
                if box is not None:
                    boxes.append(box)
                    labels.append(cat_to_label[ann["category_id"]])
            records.append(make_record(image_id, path, int(im["width"]), int(im["height"]), boxes, labels))
        super().__init__(records, [str(c["name"]) for c in cats], {v: k for k, v in cat_to_label.items()},
                         coco_from_dict(data), str(ann_file), checker.skipped, transforms, crowd)
