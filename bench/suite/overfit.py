"""Benchmark: does the whole training path learn? Overfit a detector on a few real COCO images.

A found architecture goes the retraining road of `detnas train child`: a short classification run on the
cifar10 ImageFolder, then FPN (or RetinaNet) detection initialised from it on N coco128 images, evaluated with
COCOeval on those same N images every few iterations. AP must rise from ~0: data, targets, transforms, losses,
optimiser, schedule, checkpoints and the evaluator all have to be right for that.
Run: python -m detnas.bench.suite.overfit [--images 8] [--size 128] [--iterations 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from detnas.arch import resolve_arch
from detnas.io import atomic_write_json
from detnas.sizes import max_size_for
from detnas.train import resolve_config, train_child_cls, train_child_det

SHARED = Path(os.environ.get("DETNAS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def few_images(coco_root: Path, count: int, max_boxes: int, min_area: float, out: Path) -> Path:
    """The first `count` coco128 images with 1..max_boxes non-crowd boxes, each covering at least `min_area` of
    the image (so they stay visible at a small input size), as a COCO json of the categories they use."""
    data = json.loads((coco_root / "annotations" / "instances_train2017.json").read_text())
    per_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        if not ann["iscrowd"]:
            per_image.setdefault(ann["image_id"], []).append(ann)

    def usable(im: dict) -> bool:
        anns = per_image.get(im["id"], [])
        big = all(a["bbox"][2] * a["bbox"][3] >= min_area * im["width"] * im["height"] for a in anns)
        return 0 < len(anns) <= max_boxes and big

    chosen = [im for im in data["images"] if usable(im)][:count]
    anns = [a for im in chosen for a in per_image[im["id"]]]
    used = {a["category_id"] for a in anns}
    subset = {"images": chosen, "annotations": anns, "categories": [c for c in data["categories"] if c["id"] in used]}
    out.write_text(json.dumps(subset))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="COCO-FPN-300M")
    parser.add_argument("--detector", default="fpn", choices=("fpn", "retinanet"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--max-boxes", type=int, default=3)
    parser.add_argument("--min-area", type=float, default=0.05, help="smallest box, as a fraction of the image")
    parser.add_argument("--roi-batch", type=int, default=32, help="FPN: RoIs per image for the box head")
    parser.add_argument("--size", type=int, default=128, help="short side; long side <= size * 1333 / 800")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--cls-iterations", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arch = resolve_arch(args.arch)
    coco = SHARED / "coco128"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        ann = few_images(coco, args.images, args.max_boxes, args.min_area, root / "few.json")
        cls_cfg = resolve_config("cpu-cls", overrides={
            "data": str(SHARED / "cifar10" / "train"), "space": arch.space.name, "arch": arch.to_json(),
            "iterations": args.cls_iterations, "out": str(root / "cls"), "device": "cpu", "log_every": 10})
        cls_final = train_child_cls(cls_cfg)
        cls_s = time.perf_counter() - start
        milestone = max(1, int(args.iterations * 0.8))
        det_cfg = resolve_config("cpu-det", overrides={
            "data": str(coco / "train2017"), "ann": str(ann), "val_data": str(coco / "train2017"),
            "val_ann": str(ann), "space": arch.space.name, "arch": arch.to_json(), "init": str(cls_final),
            "detector": args.detector, "roi_batch": args.roi_batch, "proposals": 100,
            "min_size": args.size, "max_size": max_size_for(args.size),
            "batch_size": args.batch_size, "lr": args.lr, "iterations": args.iterations,
            "milestones": [milestone], "warmup_iters": min(20, milestone - 1) if milestone > 1 else 0,
            "eval_every": args.eval_every, "eval_images": args.images, "checkpoint_every": args.iterations,
            "log_every": 5, "out": str(root / "det"), "device": "cpu"})
        train_child_det(det_cfg)
        records = [json.loads(line) for line in (root / "det" / "metrics.jsonl").read_text().splitlines()]
    wall = time.perf_counter() - start
    curve = [{"iteration": r["iteration"], "AP": round(r["AP"], 4), "AP50": round(r["AP50"], 4)}
             for r in records if r.get("event") == "eval"]
    losses = [(r["iteration"], round(r["loss"], 3)) for r in records if "loss" in r]
    print(f"{args.detector} on {args.arch}, {args.images} coco128 images at {args.size}px, batch {args.batch_size}, "
          f"{args.iterations} iterations (classification warm start: {args.cls_iterations} iterations, {cls_s:.0f} s)")
    for point in curve:
        print(f"  iteration {point['iteration']:5d}: AP {point['AP']:.3f}  AP50 {point['AP50']:.3f}")
    print(f"  loss {losses[0][1]} (it {losses[0][0]}) -> {losses[-1][1]} (it {losses[-1][0]}); wall {wall:.0f} s")
    rising = len(curve) >= 2 and curve[-1]["AP"] > curve[0]["AP"]
    print(f"AP rising on the training images: {'yes' if rising else 'NO'} "
          f"({curve[0]['AP']:.3f} -> {curve[-1]['AP']:.3f})")
    if args.json:
        atomic_write_json(args.json, {"arch": args.arch, "detector": args.detector, "images": args.images,
                                      "size": args.size, "batch_size": args.batch_size, "lr": args.lr,
                                      "iterations": args.iterations, "cls_iterations": args.cls_iterations,
                                      "threads": args.threads, "curve": curve, "loss": losses,
                                      "wall_s": round(wall, 1), "rising": rising})


if __name__ == "__main__":
    main()
