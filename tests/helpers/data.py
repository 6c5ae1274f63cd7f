"""The real data sets the tests read (coco128, coco_mini, cifar10 under ../shared/data, or DETNAS_SHARED_DATA)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

SHARED_DATA = Path(os.environ.get("DETNAS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a real data set under ../shared/data, or skip with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set '{name}' not found at {path} (set DETNAS_SHARED_DATA to its parent folder)")
    return path


def coco_set(tmp_path: Path, annotations: list[dict], categories: list[dict] | None = None,
             images: list[dict] | None = None, sizes: tuple[tuple[int, int], ...] = ((64, 48),)) -> tuple[Path, Path]:
    """A COCO json and its folder of flat-colour images of `sizes` (image ids 1..N): a hand-written set."""
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    for i, (w, h) in enumerate(sizes, start=1):
        Image.new("RGB", (w, h), (200, 50, 50)).save(folder / f"{i}.png")
    data = {"images": images if images is not None else
            [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in enumerate(sizes, start=1)],
            "annotations": annotations,
            "categories": categories or [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, folder


def coco_ann(i: int, bbox: list[float], cat: int = 3, image_id: int = 1, **extra: object) -> dict:
    """One COCO annotation record."""
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, **extra}
