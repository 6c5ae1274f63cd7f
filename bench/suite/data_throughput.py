"""Benchmark: is data loading or the detector the bottleneck on CPU, and what does COCOeval cost?

Measures (1) COCO loading + decode + resize + flip in images/s through a DataLoader with 0, 1, 2 workers,
(2) one detector training step (FPN Faster R-CNN and RetinaNet around COCO-FPN-300M) in images/s at the same
size, (3) COCOeval (loadRes + evaluate + accumulate + summarize) time per image with 100 detections per image.
Run: python -m detnas.bench.suite.data_throughput [--data ../shared/data/coco_mini] [--size 320] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from detnas.arch import resolve_arch
from detnas.data import CocoDetection, collate, detection_transforms
from detnas.detection import build_detector
from detnas.evaluation import coco_metrics
from detnas.io import atomic_write_json
from detnas.pixels import DEFAULT_PIXELS
from detnas.sizes import max_size_for
from detnas.supernet import ChildNet


def loader_rate(dataset: CocoDetection, workers: int, batch_size: int, repeats: int) -> dict:
    """images/s over full passes; the first batch (worker start-up) is timed separately."""
    rates, startups = [], []
    for _ in range(repeats):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
        start = time.perf_counter()
        it = iter(loader)
        next(it)  # worker start-up + first batch
        first_at = time.perf_counter()
        count = 0
        for images, _ in it:
            count += len(images)
        rates.append(count / (time.perf_counter() - first_at))
        startups.append(first_at - start)
    return {"workers": workers, "images_per_s": round(statistics.median(rates), 2),
            "first_batch_s": round(statistics.median(startups), 3)}


def train_step_rate(kind: str, dataset: CocoDetection, size: int, batch_size: int, steps: int) -> dict:
    torch.manual_seed(0)
    detector = build_detector(kind, ChildNet(resolve_arch("COCO-FPN-300M")), dataset.num_classes + 1, size,
                              max_size_for(size)).train()
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.001, momentum=0.9)
    batches = [collate([dataset[(i * batch_size + j) % len(dataset)] for j in range(batch_size)])
               for i in range(steps + 1)]
    times = []
    for i, (images, targets) in enumerate(batches):
        start = time.perf_counter()
        losses = detector([DEFAULT_PIXELS.to_model_input(im) for im in images], targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        if i:  # the first step allocates; not steady state
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {"kind": kind, "step_s": round(step, 3), "images_per_s": round(batch_size / step, 2)}


def cocoeval_cost(dataset: CocoDetection, per_image: int, repeats: int) -> dict:
    """Ground truth plus random boxes up to `per_image` detections per image, scored by COCOeval."""
    rng = random.Random(0)
    results = []
    for record in dataset.records:
        dets = [(box, int(label), 0.9) for box, label in zip(record.boxes.tolist(), record.labels.tolist())]
        while len(dets) < per_image:
            x, y = rng.uniform(0, record.width - 20), rng.uniform(0, record.height - 20)
            w, h = rng.uniform(8, record.width - x), rng.uniform(8, record.height - y)
            dets.append(([x, y, x + w, y + h], rng.randint(1, dataset.num_classes), rng.random() * 0.8))
        for (x1, y1, x2, y2), label, score in dets[:per_image]:
            results.append({"image_id": record.image_id, "category_id": dataset.label_to_cat_id[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    ids = [r.image_id for r in dataset.records]
    times, ap = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        ap = coco_metrics(dataset, results, ids)["AP"]
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"images": len(ids), "detections": len(results), "seconds": round(seconds, 3),
            "ms_per_image": round(1000 * seconds / len(ids), 2), "AP": round(ap, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "coco_mini"))
    parser.add_argument("--size", type=int, default=320, help="short side (long side capped at size*1333/800)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    max_size = max_size_for(args.size)
    train = CocoDetection(root / "annotations" / "instances_train2017.json", root / "train2017",
                          detection_transforms(True, args.size, max_size))
    val = CocoDetection(root / "annotations" / "instances_val2017.json", root / "val2017")
    print(f"{root} train2017 ({len(train)} images) at {args.size}/{max_size}, batch {args.batch_size}, "
          f"{args.threads} torch thread(s), {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    loading = [loader_rate(train, w, args.batch_size, args.repeats) for w in (0, 1, 2)]
    for row in loading:
        print(f"data loading, {row['workers']} workers: {row['images_per_s']:.1f} images/s "
              f"(first batch {row['first_batch_s']:.2f} s)")
    steps = [train_step_rate(kind, train, args.size, args.batch_size, args.steps) for kind in ("fpn", "retinanet")]
    for row in steps:
        ratio = loading[0]["images_per_s"] / row["images_per_s"]
        print(f"{row['kind']} training step: {row['step_s']:.2f} s/step = {row['images_per_s']:.2f} images/s; "
              f"loading with 0 workers is {ratio:.1f}x faster")
    evaluation = cocoeval_cost(val, 100, args.repeats)
    print(f"COCOeval on {evaluation['images']} val images, {evaluation['detections']} detections: "
          f"{evaluation['seconds']:.2f} s = {evaluation['ms_per_image']:.1f} ms/image (AP {evaluation['AP']:.3f})")
    if args.json:
        atomic_write_json(args.json, {"data": str(root), "size": args.size, "batch_size": args.batch_size,
                                      "threads": args.threads, "loading": loading, "train_step": steps,
                                      "cocoeval": evaluation, "torch": torch.__version__,
                                      "load_average": os.getloadavg()[0]})


if __name__ == "__main__":
    main()
