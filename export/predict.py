"""`predict`: run an exported detector (.onnx or TensorRT engine) on image files; write the images with their
boxes drawn and one COCO results json (category ids from the model's metadata).

Image ids in the json are the file stem when it is a number (COCO's own file names, e.g. 000000018575.jpg ->
18575) and the 1-based position on the command line otherwise; if that would give two images one id, all ids are
positions. A drawing is `<stem>.pred.png`, or `<stem>-<position>.pred.png` when several inputs share the stem
(dirA/img.jpg and dirB/img.jpg), so no drawing overwrites another.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from detnas.errors import DetnasError
from detnas.export.runtime import exported_predictor, load_exported
from detnas.images import read_image
from detnas.io import atomic_path, atomic_write_text, make_dir, remove_stale_temps

RESULTS_NAME = "results.json"


@dataclass
class PredictReport:
    out_dir: Path
    drawn: list[Path]
    results_json: Path
    detections: int
    backend: str


def image_id(path: Path, position: int) -> int:
    return int(path.stem) if path.stem.isdigit() else position


def unique_keys(paths: list[Path]) -> list[tuple[int, str]]:
    """(image id, drawing name) per input, both unique across the inputs (see the module docstring)."""
    ids = [image_id(p, i) for i, p in enumerate(paths, start=1)]
    if len(set(ids)) < len(ids):
        ids = list(range(1, len(paths) + 1))
    stems = Counter(p.stem for p in paths)
    names = [f"{p.stem}.pred.png" if stems[p.stem] == 1 else f"{p.stem}-{i}.pred.png"
             for i, p in enumerate(paths, start=1)]
    return list(zip(ids, names))


def predict(model_path: str | Path, images: list[str | Path], out_dir: str | Path,
            draw_thresh: float = 0.3, device: str | None = None) -> PredictReport:
    """Detect on `images` (on `device`, see `load_exported`); drawn copies (boxes with score >= `draw_thresh`) and
    results.json go to `out_dir`.

    All images are read before anything is written, so an unreadable one leaves no partial output.
    """
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    from detnas.evaluation import to_coco_results

    if not images:
        raise DetnasError("predict: pass at least one image file")
    paths = [Path(p) for p in images]
    loaded = [read_image(p) for p in paths]
    runner = load_exported(model_path, device)
    meta = runner.meta
    names = {c.label: c.name for c in meta.classes}
    label_to_cat = {c.label: c.category_id for c in meta.classes}
    predictions = exported_predictor(runner)(loaded)
    out_dir = make_dir(out_dir)  # a file in the way is one line
    remove_stale_temps(out_dir)  # drawings a run killed with -9 was writing
    drawn, records = [], []
    for (key, drawing), image, pred in zip(unique_keys(paths), loaded, predictions):
        records.extend(to_coco_results(key, pred, label_to_cat))
        keep = pred["scores"] >= draw_thresh
        captions = [f"{names[int(lab)]} {s:.2f}" for lab, s in zip(pred["labels"][keep], pred["scores"][keep].tolist())]
        canvas = (draw_bounding_boxes(image, pred["boxes"][keep], labels=captions, width=2, colors="red")
                  if keep.any() else image)  # torchvision warns on an empty box list
        target = out_dir / drawing
        with atomic_path(target) as tmp:
            Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
        drawn.append(target)
    results = out_dir / RESULTS_NAME
    atomic_write_text(results, json.dumps(records))
    return PredictReport(out_dir, drawn, results, len(records), runner.backend)
