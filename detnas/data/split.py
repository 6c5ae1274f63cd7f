"""The paper's split: a random search-validation part of the detection training set, the rest trains the supernet.

The official validation set stays untouched for the final report. Deterministic for a seed (the image ids are
sorted before sampling), images disjoint, categories and info copied to both parts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detnas.data.coco import read_coco_json
from detnas.data.detection import ImageRecord
from detnas.errors import DetnasError
from detnas.io import atomic_write_text, file_sha256

TRAIN_NAME = "supernet_train.json"
VAL_NAME = "search_val.json"


def _part(data: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    return {**data, "images": [im for im in data["images"] if im["id"] in image_ids],
            "annotations": [a for a in data["annotations"] if a["image_id"] in image_ids]}


def shared_images(first: Sequence[ImageRecord], second: Sequence[ImageRecord]) -> int:
    """How many images of `first` are also in `second`: the same id, the same file, or the same bytes under
    another name or id (only files of equal size are read)."""
    ids = {r.image_id for r in second}
    paths = {r.path.resolve() for r in second}
    rest = [r.path.resolve() for r in first if r.image_id not in ids and r.path.resolve() not in paths]
    shared = len(first) - len(rest)
    sizes: dict[int, list[Path]] = {}
    for path in paths:
        sizes.setdefault(path.stat().st_size, []).append(path)
    candidates = [p for p in rest if p.stat().st_size in sizes]
    if candidates:
        digests = {file_sha256(p) for p in {q for c in candidates for q in sizes[c.stat().st_size]}}
        shared += sum(file_sha256(p) in digests for p in candidates)
    return shared


def split_coco(ann_file: str | Path, val_size: int, seed: int, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `supernet_train.json` and `search_val.json` (val_size random images) into `out_dir`."""
    data = read_coco_json(ann_file)
    ids = sorted(im["id"] for im in data["images"])  # unique: read_coco_json checks
    if not 0 < val_size < len(ids):
        raise DetnasError(f"--val-count {val_size}: must be between 1 and {len(ids) - 1} for the {len(ids)} images "
                          f"of {ann_file}")
    val_ids = set(random.Random(seed).sample(ids, val_size))
    out_dir = Path(out_dir)
    paths = out_dir / TRAIN_NAME, out_dir / VAL_NAME
    for path, part in zip(paths, (_part(data, set(ids) - val_ids), _part(data, val_ids))):
        atomic_write_text(path, json.dumps(part))
    return paths
