"""COCO evaluation through pycocotools' COCOeval, and Pascal VOC mAP@0.5 (VOC07 11-point and all-point), for any
predictor: a torch detector, an ONNX session, a supernet path. The predictor sees untransformed uint8 images and
answers in original-image pixels with the dataset's contiguous labels; mapping back to category ids and writing
the results json happen here, once.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from detnas.data.detection import DetectionDataset
from detnas.errors import DetnasError
from detnas.io import atomic_write_text
from detnas.jsonout import JsonRecord
from detnas.pixels import DEFAULT_PIXELS, PixelConvention
from detnas.progress import task

if TYPE_CHECKING:
    from rich.table import Table

Prediction = dict[str, torch.Tensor]
Predictor = Callable[[list[torch.Tensor]], list[Prediction]]

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of COCOeval.stats in order. -1 means no ground truth in that area range (COCO's convention)."""
VOC_METRICS = ("mAP50_07", "mAP50_all")
"""Pascal VOC mAP at IoU 0.5: VOC2007's 11-point interpolation (the paper's VOC numbers) and the all-point area."""
METRICS = COCO_METRICS + VOC_METRICS
VOC_IOU = 0.5


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
    """COCOeval bbox of the dataset's ground truth over `image_ids`."""
    return coco_stats(dataset.coco_gt, results, image_ids)


def coco_stats(coco_gt: Any, results: list[dict[str, Any]], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCOeval bbox of `results` against a pycocotools `COCO` (over `image_ids`, default all its images); no
    detections at all is AP 0 (pycocotools' loadRes([]) would raise)."""
    if not results:
        return dict.fromkeys(COCO_METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRICS, evaluator.stats)}


def _voc_average_precision(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    """VOC07: mean of the best precision at recall >= 0, 0.1, ..., 1; otherwise the area under the precision
    envelope (VOC2010 on)."""
    if eleven_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0.0, 1.0, 11)]))
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def voc_metrics(dataset: DetectionDataset, results: list[dict[str, Any]], image_ids: Sequence[int]) -> dict[str, float]:
    """Pascal VOC mAP@0.5 over `image_ids`, read off the COCO ground truth (crowd = VOC's "difficult": a detection
    matching one is neither right nor wrong) as the official code's VOC evaluation does: per image, detections in
    score order take their best-overlapping box if IoU >= 0.5 and that box is still free; classes without a
    non-difficult box are left out of the mean."""
    wanted = set(image_ids)
    truth: dict[tuple[int, int], list[dict[str, Any]]] = {}
    positives: dict[int, int] = {}
    for ann in dataset.coco_gt.dataset.get("annotations", []):
        if ann["image_id"] in wanted:
            truth.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
            if not ann.get("iscrowd", 0):
                positives[ann["category_id"]] = positives.get(ann["category_id"], 0) + 1
    found: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for det in results:
        if det["image_id"] in wanted and det["category_id"] in positives:
            found.setdefault((det["image_id"], det["category_id"]), []).append(det)
    scored: dict[int, list[tuple[float, int]]] = {c: [] for c in positives}  # (score, 1 right / 0 wrong)
    for (image_id, cat), dets in found.items():
        dets = sorted(dets, key=lambda d: -d["score"])
        gts = truth.get((image_id, cat), [])
        if not gts:
            scored[cat].extend((d["score"], 0) for d in dets)
            continue
        xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
        iou = box_iou(torch.tensor([xyxy(d["bbox"]) for d in dets], dtype=torch.float64),
                      torch.tensor([xyxy(g["bbox"]) for g in gts], dtype=torch.float64))
        best_iou, best = iou.max(1)
        taken = [False] * len(gts)
        for det, overlap, j in zip(dets, best_iou.tolist(), best.tolist()):
            if overlap < VOC_IOU:
                scored[cat].append((det["score"], 0))
            elif not gts[j].get("iscrowd", 0):
                scored[cat].append((det["score"], 0 if taken[j] else 1))
            taken[j] = taken[j] or overlap >= VOC_IOU
    per_class: dict[str, list[float]] = {name: [] for name in VOC_METRICS}
    for cat, entries in scored.items():
        entries.sort(key=lambda e: -e[0])
        right = np.cumsum([e[1] for e in entries], dtype=np.float64)
        wrong = np.cumsum([1 - e[1] for e in entries], dtype=np.float64)
        recall = right / positives[cat]
        precision = right / np.maximum(right + wrong, np.finfo(np.float64).eps)
        for name, eleven in zip(VOC_METRICS, (True, False)):
            per_class[name].append(_voc_average_precision(recall, precision, eleven) if entries else 0.0)
    return {name: float(np.mean(values)) if values else 0.0 for name, values in per_class.items()}


def is_voc(dataset: DetectionDataset) -> bool:
    """Pascal VOC data: read from a VOCdevkit, or a COCO json of VOC's 20 classes (e.g. a split of it)."""
    from detnas.data.voc import VOC_CLASSES, VocDetection

    return isinstance(dataset, VocDetection) or tuple(dataset.classes) == VOC_CLASSES


def fitness_metric(dataset: DetectionDataset) -> str:
    """What a search ranks by on this data: the paper's VOC07 mAP@0.5 on VOC, COCO AP@[.5:.95] otherwise."""
    return "mAP50_07" if is_voc(dataset) else "AP"


def evaluate(predict: Predictor, dataset: DetectionDataset, out_json: str | Path | None = None,
             batch_size: int = 8, max_images: int | None = None) -> dict[str, float]:
    """Run `predict` over the dataset (or its first `max_images`), write the COCO results json (atomically)
    if `out_json` is given, and return the COCO bbox and VOC metrics (`METRICS`) plus `images`, `detections`,
    `predict_seconds` and `eval_seconds`. No detections at all gives 0.0 for every metric.
    """
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    dataset.require_boxes("COCO evaluation", count)
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    start = time.perf_counter()
    with task(f"evaluating {count} images", count) as step:
        for first in range(0, count, batch_size):
            indices = range(first, min(first + batch_size, count))
            predictions = predict([dataset.load_image(i) for i in indices])
            if len(predictions) != len(indices):
                raise DetnasError(f"predictor returned {len(predictions)} results for {len(indices)} images")
            for i, prediction in zip(indices, predictions):
                image_id = dataset.records[i].image_id
                image_ids.append(image_id)
                results.extend(to_coco_results(image_id, prediction, dataset.label_to_cat_id))
            step.advance(len(indices))
    predict_seconds = time.perf_counter() - start
    if out_json is not None:
        atomic_write_text(out_json, json.dumps(results))
    metrics = {**coco_metrics(dataset, results, image_ids), **voc_metrics(dataset, results, image_ids)}
    return {**metrics, "images": float(count), "detections": float(len(results)),
            "predict_seconds": predict_seconds, "eval_seconds": time.perf_counter() - start - predict_seconds}


@dataclass(frozen=True)
class EvalReport(JsonRecord):
    """One evaluation: which model ran where, on which data, and its metrics (`METRICS`: fractions, COCO's -1 =
    no ground truth in that size range). `detnas eval` prints its table and writes `--json` from this record."""

    SCHEMA: ClassVar[str] = "detnas.eval/1"
    model: str
    runtime: str
    data: str
    input: str
    metrics: dict[str, float]
    images: int
    detections: int
    predict_seconds: float
    eval_seconds: float
    detections_json: str | None

    @classmethod
    def from_metrics(cls, model: str, runtime: str, data: str | Path, input: str, metrics: dict[str, float],
                     detections_json: str | Path | None) -> EvalReport:
        """Split `evaluate`'s flat dict into the metrics and the counts / timings beside them."""
        return cls(model, runtime, str(data), input, {name: metrics[name] for name in METRICS}, int(metrics["images"]),
                   int(metrics["detections"]), metrics["predict_seconds"], metrics["eval_seconds"],
                   None if detections_json is None else str(detections_json))


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


def metric_table(metrics: dict[str, float]) -> Table:
    """COCO metrics in % (the way papers report them); -1 from COCOeval means no ground truth in that range."""
    from rich.table import Table

    table = Table()
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    for name in METRICS:
        value = metrics[name]
        table.add_row(name, "n/a (no GT)" if value < 0 else f"{100 * value:.1f}")
    return table
