"""Builders for the training tests: the tiny space as a file, a tiny ImageFolder, a tiny config, a small COCO subset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from detnas.space import SearchSpace, register_space
from detnas.train import TrainConfig, resolve_config

from helpers.spaces import TINY_SPEC

#: the tiny space at two blocks a stage: path samplers need enough blocks for their statistics
TINY_DEEP = {**TINY_SPEC, "name": "tiny-deep", "stage_depths": [2, 2, 2, 2]}


def tiny_space(spec: dict = TINY_SPEC) -> SearchSpace:
    return register_space(SearchSpace.from_dict(spec))


def write_space(folder: Path, spec: dict = TINY_SPEC) -> str:
    path = folder / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 36) -> Path:
    """Colour-coded classes: class c has a bright channel c, so a tiny net can learn it."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            pixels[..., c % 3] += 160
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_cls_config(tmp: Path, **overrides) -> TrainConfig:
    data = tmp / "data"
    if not data.exists():
        image_folder(data)
    base = dict(space=write_space(tmp), data=str(data), out=str(tmp / "run"), iterations=8, batch_size=6,
                image_size=32, checkpoint_every=4, log_every=4, eval_every=0, workers=0, device="cpu")
    return resolve_config("cpu-cls", overrides={**base, **overrides})


def coco_subset(coco_root: Path, out: Path, images: int = 4, max_boxes: int = 3) -> Path:
    """A COCO json of the first `images` coco128 pictures with at most `max_boxes` non-crowd boxes, restricted to
    the categories they use (a small detection head)."""
    data = json.loads((coco_root / "annotations" / "instances_train2017.json").read_text())
    per_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        if not ann["iscrowd"]:
            per_image.setdefault(ann["image_id"], []).append(ann)
    chosen = [im for im in data["images"] if 0 < len(per_image.get(im["id"], [])) <= max_boxes][:images]
    anns = [a for im in chosen for a in per_image[im["id"]]]
    used = {a["category_id"] for a in anns}
    subset = {"images": chosen, "annotations": anns,
              "categories": [c for c in data["categories"] if c["id"] in used]}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "subset.json"
    path.write_text(json.dumps(subset))
    return path
