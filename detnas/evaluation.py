"""COCO evaluation through pycocotools' COCOeval, for any predictor: a torch detector, an ONNX session, a
supernet path. The predictor sees untransformed uint8 images and answers in original-image pixels with the
dataset's contiguous labels; mapping back to category ids and writing the results json happen here, once.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pycocotools.cocoeval import COCOeval

from detnas.data.detection import DetectionDataset
from detnas.errors import DetnasError
from detnas.io import atomic_write_text
from detnas.pixels import DEFAULT_PIXELS, PixelConvention

Prediction = dict[str, torch.Tensor]
Predictor = Callable[[list[torch.Tensor]], list[Prediction]]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of COCOeval.stats in order. -1 means no ground truth in that area range (COCO's convention)."""


def to_coco_results(image_id: int, prediction: Prediction, label_to_cat_id: dict[int, int]) -> list[dict[str, Any]]:
    """xyxy boxes + contiguous labels -> COCO result records (xywh, category_id, score)."""
    boxes = prediction["boxes"].detach().float().cpu().reshape(-1, 4)
    scores = prediction["scores"].detach().float().cpu().reshape(-1)
    labels = prediction["labels"].detach().cpu().reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise DetnasError(f"predictor returned {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels "
                          f"for image id {image_id}; they must have the same length")
    records = []
    for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        if label not in label_to_cat_id:
            raise DetnasError(f"predictor returned label {label} for image id {image_id}; the dataset's labels "
                              f"are 1..{len(label_to_cat_id)}")
        records.append({"image_id": image_id, "category_id": label_to_cat_id[label],
                        "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                        "score": round(score, 5)})
    return records


def coco_metrics(dataset: DetectionDataset, results: list[dict[str, Any]], image_ids: Sequence[int]) -> dict[str, float]:
    """COCOeval bbox over `image_ids`; no detections at all is AP 0 (pycocotools' loadRes([]) would raise)."""
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = dataset.coco_gt.loadRes(results)
        evaluator = COCOeval(dataset.coco_gt, dt, iouType="bbox")
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRICS, evaluator.stats)}


def evaluate(predict: Predictor, dataset: DetectionDataset, out_json: str | Path | None = None,
             batch_size: int = 8, max_images: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Run `predict` over the dataset (or its first `max_images`), write the COCO results json (atomically)
    if `out_json` is given, and return the COCO bbox metrics (`METRICS`) plus `images`, `detections`,
    `predict_seconds` and `eval_seconds`. No detections at all gives 0.0 for every metric.
    """
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    dataset.require_boxes("COCO evaluation", count)
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    start = time.perf_counter()
    for first in range(0, count, batch_size):
        indices = range(first, min(first + batch_size, count))
        predictions = predict([dataset.load_image(i) for i in indices])
        if len(predictions) != len(indices):
            raise DetnasError(f"predictor returned {len(predictions)} results for {len(indices)} images")
        for i, prediction in zip(indices, predictions):
            image_id = dataset.records[i].image_id
            image_ids.append(image_id)
            results.extend(to_coco_results(image_id, prediction, dataset.label_to_cat_id))
        if progress is not None:
            progress(indices.stop, count)
    predict_seconds = time.perf_counter() - start
    if out_json is not None:
        atomic_write_text(out_json, json.dumps(results))
    metrics = coco_metrics(dataset, results, image_ids)
    return {**metrics, "images": float(count), "detections": float(len(results)),
            "predict_seconds": predict_seconds, "eval_seconds": time.perf_counter() - start - predict_seconds}


def detector_predictor(detector: torch.nn.Module, device: str | torch.device = "cpu", batch_size: int = 8,
                       pixels: PixelConvention | None = None) -> Predictor:
    """Wrap a torchvision detector as a `Predictor`: eval mode and no grad during the call (the previous mode is
    restored), images through `pixels.to_model_input` (default: the detector's own convention), background
    (label 0, which RetinaNet can emit) dropped, outputs on CPU.
    """
    pixels = pixels or getattr(detector, "pixels", DEFAULT_PIXELS)

    def predict(images: list[torch.Tensor]) -> list[Prediction]:
        was_training = detector.training
        detector.eval()
        outputs: list[Prediction] = []
        try:
            with torch.inference_mode():
                for first in range(0, len(images), batch_size):
                    batch = [pixels.to_model_input(im).to(device) for im in images[first:first + batch_size]]
                    for out in detector(batch):
                        keep = out["labels"] > 0
                        outputs.append({k: out[k][keep].cpu() for k in ("boxes", "scores", "labels")})
        finally:
            detector.train(was_training)
        return outputs

    return predict
