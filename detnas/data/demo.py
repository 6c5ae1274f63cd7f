"""Embedded default data, generated deterministically (no downloads): coloured geometric shapes.

A detection set in COCO format (three categories: square, circle, triangle) and an ImageFolder classification
set (four shapes). Each class has its own base colour with jitter, so a small detector learns it within minutes
on a CPU. It is a demo so the main command runs on a fresh machine, never a substitute for real data in tests.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from detnas.io import atomic_path, atomic_write_text, make_dir, remove_stale_temps

DETECTION_CLASSES = ("square", "circle", "triangle")
CLASSIFICATION_CLASSES = ("square", "circle", "triangle", "cross")
_BASE_COLOUR = {"square": (220, 40, 40), "circle": (40, 200, 60), "triangle": (50, 80, 230), "cross": (230, 200, 30)}
_AREA_FRACTION = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}


@dataclass(frozen=True)
class DemoDetection:
    """Paths of the generated detection set."""

    train_ann: Path
    train_images: Path
    val_ann: Path
    val_images: Path


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    """Smooth grey noise: a coarse random grid upsampled, so shapes sit on texture rather than a flat colour."""
    grid = np.random.default_rng(rng.randrange(2**32)).integers(90, 170, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR)


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], rng: random.Random) -> None:
    colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in _BASE_COLOUR[shape])
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=colour)
    else:
        bar = max(2, (x1 - x0) // 4)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - bar, y0, cx + bar, y1), fill=colour)
        draw.rectangle((x0, cy - bar, x1, cy + bar), fill=colour)


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    return any(box[0] <= o[2] and o[0] <= box[2] and box[1] <= o[3] and o[1] <= box[3] for o in others)


@dataclass(frozen=True)
class ShapeLayout:
    """How images are drawn: image sides, objects per image, object side as a fraction of the shorter image side.

    `square` images make a detector with min_size == max_size see them exactly as a square letterboxed export
    does (same scale, no padding), so an exported file is scored on the same pixels as the PyTorch model."""

    sizes: tuple[int, int] = (128, 160)
    objects: tuple[int, int] = (1, 4)
    object_fraction: tuple[float, float] = (0.15, 0.5)
    square: bool = False


def _detection_split(folder: Path, count: int, first_id: int, rng: random.Random, layout: ShapeLayout) -> dict:
    remove_stale_temps(make_dir(folder))  # a rerun after a kill -9 leaves none of the killed run's temporaries
    images, annotations = [], []
    for image_id in range(first_id, first_id + count):
        width = rng.randint(*layout.sizes)
        height = width if layout.square else rng.randint(*layout.sizes)
        image = _background(rng, width, height)
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int, int]] = []
        short = min(width, height)
        smallest, largest = (max(8, round(f * short)) for f in layout.object_fraction)
        for _ in range(rng.randint(*layout.objects)):
            shape = rng.choice(DETECTION_CLASSES)
            side = rng.randint(smallest, largest)
            for _attempt in range(20):
                x0, y0 = rng.randint(0, width - side), rng.randint(0, height - side)
                box = (x0, y0, x0 + side - 1, y0 + side - 1)
                if not _overlaps(box, placed):
                    break
            else:
                continue
            placed.append(box)
            _draw(draw, shape, box, rng)
            annotations.append({"id": len(annotations) + first_id * 10, "image_id": image_id,
                                "category_id": DETECTION_CLASSES.index(shape) + 1,
                                "bbox": [x0, y0, side, side], "area": round(side * side * _AREA_FRACTION[shape], 1),
                                "iscrowd": 0})
        name = f"{image_id:06d}.png"
        with atomic_path(folder / name) as tmp:
            image.save(tmp, format="PNG")
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(DETECTION_CLASSES)]
    return {"info": {"description": "detnas demo shapes (generated)"}, "images": images,
            "annotations": annotations, "categories": categories}


def make_demo_detection(out_dir: str | Path, num_train: int = 48, num_val: int = 16, seed: int = 0,
                        layout: ShapeLayout = ShapeLayout()) -> DemoDetection:
    """Write train/ and val/ PNGs and annotations/instances_{train,val}.json (the json last, so it marks done)."""
    out = Path(out_dir)
    rng = random.Random(seed)
    paths = DemoDetection(out / "annotations" / "instances_train.json", out / "train",
                          out / "annotations" / "instances_val.json", out / "val")
    train = _detection_split(paths.train_images, num_train, 1, rng, layout)
    val = _detection_split(paths.val_images, num_val, 1 + num_train, rng, layout)
    atomic_write_text(paths.train_ann, json.dumps(train, indent=1))
    atomic_write_text(paths.val_ann, json.dumps(val, indent=1))
    return paths


def make_demo_classification(out_dir: str | Path, per_class_train: int = 40, per_class_val: int = 10,
                             size: int = 64, seed: int = 0) -> Path:
    """Write `out_dir/{train,val}/<shape>/NNNN.png`; returns `out_dir` (pass out_dir/train to ImageFolder)."""
    out = Path(out_dir)
    rng = random.Random(seed)
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for shape in CLASSIFICATION_CLASSES:
            folder = out / split / shape
            remove_stale_temps(folder)
            for k in range(count):
                image = _background(rng, size, size)
                side = rng.randint(size // 3, size - 8)
                x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
                _draw(ImageDraw.Draw(image), shape, (x0, y0, x0 + side - 1, y0 + side - 1), rng)
                with atomic_path(folder / f"{k:04d}.png") as tmp:
                    image.save(tmp, format="PNG")
    return out
