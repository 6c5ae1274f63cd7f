"""Pascal VOC (VOCdevkit layout: Annotations/*.xml, JPEGImages/, ImageSets/Main/*.txt) in the internal format.

VOC's corner coordinates are 1-based inclusive pixels; they become 0-based xyxy by subtracting 1 from xmin/ymin.
"difficult" objects are not training targets and are ignore regions (iscrowd=1) in the COCO ground truth, the
usual way to score VOC with COCOeval. Category ids are the labels 1..K.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from detnas.data.coco import coco_from_dict
from detnas.data.detection import BoxChecker, DetectionDataset, Transform, make_record
from detnas.errors import DetnasError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _text(node: ET.Element, path: str, xml_file: Path, record: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise DetnasError(f"{xml_file}: {record} has no <{path}>; every VOC annotation needs it")
    return found.text.strip()


def _number(node: ET.Element, path: str, xml_file: Path, record: str) -> float:
    text = _text(node, path, xml_file, record)
    try:
        return float(text)
    except ValueError:
        raise DetnasError(f"{xml_file}: {record} <{path}> is '{text}', not a number") from None


def _image_names(root: Path, image_set: str | None) -> list[str]:
    if image_set is None:
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.is_file():
        raise DetnasError(f"{listing}: image set '{image_set}' not found; pass an existing set or none for all")
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


class VocDetection(DetectionDataset):
    """`root` is one VOC year folder (e.g. VOCdevkit/VOC2007); `image_set` None reads every XML."""

    def __init__(self, root: str | Path, image_set: str | None = None, classes: tuple[str, ...] = VOC_CLASSES,
                 transforms: Transform | None = None, strict: bool = False) -> None:
        root = Path(root)
        if not (root / "Annotations").is_dir():
            raise DetnasError(f"{root}: no Annotations/ folder; pass a VOC year folder such as VOCdevkit/VOC2007")
        names = _image_names(root, image_set)
        if not names:
            raise DetnasError(f"{root}: no annotations found")
        cat_of = {name: i + 1 for i, name in enumerate(classes)}
        checker = BoxChecker(strict)
        records, images, annotations = [], [], []
        for image_id, name in enumerate(names, start=1):
            xml_file = root / "Annotations" / f"{name}.xml"
            try:
                tree = ET.parse(xml_file).getroot()
            except FileNotFoundError:
                raise DetnasError(f"{xml_file}: annotation missing for image '{name}' of the image set") from None
            except ET.ParseError as exc:
                raise DetnasError(f"{xml_file}: malformed XML ({exc})") from None
            filename = tree.findtext("filename") or f"{name}.jpg"
            width = int(_number(tree, "size/width", xml_file, "the image"))
            height = int(_number(tree, "size/height", xml_file, "the image"))
            path = root / "JPEGImages" / filename.strip()
            if not path.is_file():
                raise DetnasError(f"{path}: image file missing (for {xml_file}); restore it or drop the record")
            images.append({"id": image_id, "file_name": path.name, "width": width, "height": height})
            boxes, labels = [], []
            for k, obj in enumerate(tree.findall("object")):
                record = f"object #{k}"
                label = _text(obj, "name", xml_file, record)
                if label not in cat_of:
                    raise DetnasError(f"{xml_file}: {record} has class '{label}', not one of the {len(classes)} "
                                      "given classes; pass the dataset's class list")
                xyxy = [_number(obj, f"bndbox/{c}", xml_file, record) for c in ("xmin", "ymin", "xmax", "ymax")]
                xyxy[0] -= 1.0
                xyxy[1] -= 1.0
                difficult = obj.findtext("difficult", "0").strip() == "1"
                box = checker.xyxy(xyxy, width, height, f"{xml_file} {record} ('{label}')")
                if box is None:
                    continue
                annotations.append(_gt_annotation(len(annotations) + 1, image_id, cat_of[label], box, difficult))
                if not difficult:
                    boxes.append(box)
                    labels.append(cat_of[label])
            records.append(make_record(image_id, path, width, height, boxes, labels))
        gt = {"images": images, "annotations": annotations,
              "categories": [{"id": i, "name": n} for n, i in cat_of.items()]}
        super().__init__(records, list(classes), {i: i for i in cat_of.values()}, coco_from_dict(gt), str(root),
                         checker.skipped, transforms)


def _gt_annotation(ann_id: int, image_id: int, cat: int, box: list[float], difficult: bool) -> dict[str, Any]:
    w, h = box[2] - box[0], box[3] - box[1]
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [box[0], box[1], w, h],
            "area": w * h, "iscrowd": int(difficult)}
