"""Benchmark: what the INT8 and FP16 files buy on ONNX Runtime CPU, and what INT8 costs in COCO AP.

Latency: the COCO-FPN-300M FPN detector at 320x320 (random init, BN statistics from real images and spread class
scores as in export_speed) exported by `detnas export`'s API; ORT INT8 (the QDQ file `detnas export --precision
int8` writes, ranges from coco128 images) and ORT FP16 vs ORT FP32 vs PyTorch eager FP32, on the same letterboxed
coco_mini images, rounds interleaved so machine noise hits all variants alike; plus the quantization time.
AP: a detector trained briefly on coco128 + coco_mini train2017 less a held-out quarter (a short cifar10
classification warm start, then detection), FP32 ONNX vs INT8 ONNX COCO AP on the held-out images it never trained
on, and the drop with a paired bootstrap interval; INT8 ranges from trained images (the training split, as `detnas
export` calibrates) and, for contrast, from coco_mini val2017 images it never saw. No evaluated image is ever a
training or calibration image.
Goals: INT8 >= 2.5x faster than eager FP32 on the FPN detector; AP drop <= 1 point (0.01), met only when the whole
95 % bootstrap interval of the drop is within it (`goal_verdict`).
Demo: with --demo-results DIR, the same drop for the winner `detnas demo --out DIR` exported, on fresh images drawn
like its validation split (it generalises, so hundreds of images can resolve one AP point).
Run: python -m detnas.bench.suite.precision_speed [--threads 1] [--iterations 2000] [--demo-results results/demo]
     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detnas.arch import resolve_arch
from detnas.bench.backends import Prepared, time_prepared
from detnas.bench.backends.ort_backend import open_session
from detnas.bench.stats import summarize
from detnas.bench.suite import run_suite
from detnas.bench.suite.export_speed import SHARED, _calibrate_bn, _detectron_box_init, _spread_class_scores
from detnas.detection import build_detector
from detnas.detection.deployable import DeployableDetector
from detnas.errors import DetnasError
from detnas.export import class_table, export_onnx
from detnas.export.precision import (
    CALIB_METHODS,
    Gate,
    ap_gate,
    calibration_batches,
    convert_fp16,
    percentile_cut,
    quantize_int8,
)
from detnas.export.preprocess import letterbox
from detnas.export.runtime import read_onnx_meta
from detnas.images import read_image
from detnas.io import atomic_write_json
from detnas.pixels import DEFAULT_PIXELS
from detnas.supernet import ChildNet

INT8_GOAL = 2.5
AP_DROP_GOAL = 0.01
#: every HELD_OUT-th image of the pooled AP set is held out of training and is what AP is taken on
HELD_OUT = 4


def goal_verdict(low: float, high: float, goal: float = AP_DROP_GOAL) -> str:
    """The drop goal judged on the 95 % bootstrap interval [low, high] of the drop, not its point estimate: 'met'
    when the whole interval is within the goal, 'NOT met' when all of it is above, else 'not resolved' (the
    evaluation set cannot tell; evaluate on more images)."""
    if high <= goal:
        return "met"
    if low > goal:
        return "NOT met"
    return f"not resolved (the interval straddles {goal:g}; evaluate on more images)"


def _coco128_files() -> list[Path]:
    files = sorted((SHARED / "coco128" / "train2017").glob("*.jpg"))
    if not files:
        raise DetnasError(f"coco128 not found at {SHARED} (set DETNAS_SHARED_DATA)")
    return files


def latency(arch_name: str, size: int, threads: int, runs: int, rounds: int, calib_images: int,
            work: Path) -> dict[str, Any]:
    """Median ms of eager FP32, ORT FP32, ORT FP16 and ORT INT8 on one detector and the same images."""
    torch.manual_seed(0)
    arch = resolve_arch(arch_name)
    detector = build_detector("fpn", ChildNet(arch), 81, size, size)
    timed = [read_image(f) for f in sorted((SHARED / "coco_mini" / "val2017").glob("*.jpg"))[:4]]
    inputs = [letterbox(im, size, size, DEFAULT_PIXELS)[0] for im in timed]
    _calibrate_bn(detector, inputs)
    _detectron_box_init(detector)
    _spread_class_scores(detector)
    fp32 = export_onnx(detector, arch, class_table([f"class{i}" for i in range(1, 81)]), (size, size),
                       work / "fp32.onnx", kind="fpn").path
    meta = read_onnx_meta(fp32)
    calibration = [read_image(f) for f in _coco128_files()[:calib_images]]
    start = time.perf_counter()
    int8 = quantize_int8(fp32, work / "int8.onnx", calibration_batches(calibration, meta))
    quantize_s = time.perf_counter() - start
    start = time.perf_counter()  # what `detnas search --precision int8` pays per new candidate: one fixed batch
    quantize_int8(fp32, work / "int8.timing.onnx", calibration_batches(calibration[:1], meta))
    timing_quantize_s = time.perf_counter() - start
    start = time.perf_counter()
    fp16 = convert_fp16(fp32, work / "fp16.onnx")
    fp16_s = time.perf_counter() - start
    torch.set_num_threads(threads)
    wrapper = DeployableDetector(detector, DEFAULT_PIXELS, 100).eval()
    batches = [x[None] for x in inputs]
    variants: dict[str, Prepared] = {"torch_eager_fp32": Prepared(call=lambda i: _eager(wrapper, batches[i]),
                                                                  n_inputs=len(batches))}
    for name, path in (("ort_fp32", fp32), ("ort_fp16", fp16), ("ort_int8", int8)):
        session = open_session(path, "cpu", threads)
        feeds = [{session.get_inputs()[0].name: b.numpy()} for b in batches]
        variants[name] = Prepared(call=lambda i, s=session, f=feeds: s.run(None, f[i]), n_inputs=len(feeds))
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, prepared in variants.items():
            samples[name] += time_prepared(prepared, warmup=1, runs=runs)
    stats = {k: summarize(v).to_dict() for k, v in samples.items()}
    median = {k: v["median_ms"] for k, v in stats.items()}
    return {"arch": arch_name, "size": size, "threads": threads, "runs_per_round": runs, "rounds": rounds,
            "timed_images": len(batches), "calibration_images": calib_images, "latency": stats,
            "quantize_s": round(quantize_s, 2), "timing_quantize_s": round(timing_quantize_s, 2), "fp16_convert_s": round(fp16_s, 2),
            "int8_vs_eager": median["torch_eager_fp32"] / median["ort_int8"],
            "int8_vs_ort_fp32": median["ort_fp32"] / median["ort_int8"],
            "fp16_vs_ort_fp32": median["ort_fp32"] / median["ort_fp16"],
            "ort_fp32_vs_eager": median["torch_eager_fp32"] / median["ort_fp32"]}


def _eager(module: torch.nn.Module, batch: torch.Tensor) -> None:
    with torch.inference_mode():
        module(batch)


def ap_drop_interval(ann: Path, detections: Path, rounds: int = 200, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over images of the AP drop (FP32 AP - INT8 AP), from the COCO results `ap_gate` kept in
    `detections`: `rounds` resamples of the images with replacement, each scored by pycocotools on both. The 95 %
    interval says whether the evaluation set can resolve a 1-point drop at all."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from detnas.evaluation import coco_stats

    gt = json.loads(Path(ann).read_text())
    ids = [im["id"] for im in gt["images"]]
    by_image: dict[int, list[list[dict[str, Any]]]] = {i: [[], [], []] for i in ids}  # annotations, FP32, INT8
    for a in gt["annotations"]:
        by_image[a["image_id"]][0].append(a)
    for side, name in enumerate(("reference", "candidate"), 1):
        for d in json.loads((detections / f"{name}.json").read_text()):
            by_image[d["image_id"]][side].append(d)
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(rounds):
        images_, parts = [], [[], [], []]
        for new_id, index in enumerate(rng.choice(len(ids), len(ids), replace=True), 1):
            images_.append({**gt["images"][index], "id": new_id})
            for part, records in zip(parts, by_image[ids[index]]):
                part += [{**r, "image_id": new_id} for r in records]
        with contextlib.redirect_stdout(io.StringIO()):
            resampled = COCO()
            resampled.dataset = {**gt, "images": images_, "annotations": [{**a, "id": k} for k, a in enumerate(parts[0], 1)]}
            resampled.createIndex()
        drops.append(coco_stats(resampled, parts[1])["AP"] - coco_stats(resampled, parts[2])["AP"])
    low, high = np.percentile(drops, [2.5, 97.5])
    return {"drop_ci95_low": float(low), "drop_ci95_high": float(high), "bootstrap_rounds": rounds}


@dataclass(frozen=True)
class PooledCoco:
    """The AP set: coco128 and coco_mini's train2017 pooled (their images never overlap), annotations whose box
    covers less than `min_area` of their image dropped (1 % is a few pixels at 128 px), images left without one dropped.
    The detector trains on `train_ann` (all but every `HELD_OUT`-th image); AP is taken on `evaluated` (those held-out
    images, never trained on: AP on training images measures memorisation, which quantization may spare or hit
    differently); INT8 ranges come from `calibration` (trained on, never evaluated) and, for contrast, from `unseen`
    (coco_mini val2017, never trained on)."""

    train_ann: Path
    images: Path
    evaluated_ann: Path
    calibration: list[Path]
    unseen: list[Path]


#: written beside the weights this suite trains: the AP set they were trained on (`--detector` checks it)
TRAINED_ON = "pooled_set.json"


def pooled_coco(min_area: float, calib_images: int, work: Path) -> PooledCoco:
    sources = [(SHARED / "coco128", "train2017"), (SHARED / "coco_mini", "train2017")]
    images, annotations, categories = [], [], {}
    linked = work / "pooled_images"
    linked.mkdir()
    for root, split in sources:
        data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        sizes = {im["id"]: im["width"] * im["height"] for im in data["images"]}
        kept = [a for a in data["annotations"]
                if not a["iscrowd"] and a["bbox"][2] * a["bbox"][3] >= min_area * sizes[a["image_id"]]]
        used = {a["image_id"] for a in kept}
        for im in data["images"]:
            if im["id"] in used:
                images.append(im)
                (linked / im["file_name"]).symlink_to(root / split / im["file_name"])
        annotations += kept
        categories.update({c["id"]: c for c in data["categories"] if c["id"] in {a["category_id"] for a in kept}})
    evaluated = images[::HELD_OUT]
    kept_ids = {im["id"] for im in evaluated}
    trained = [im for im in images if im["id"] not in kept_ids]
    trained_ids = {im["id"] for im in trained}
    calibrated = trained[-calib_images:]  # coco_mini's, trained on
    train_ann, evaluated_ann = work / "pooled.json", work / "evaluated.json"
    used_categories = sorted(categories.values(), key=lambda c: c["id"])
    train_ann.write_text(json.dumps({"images": trained, "categories": used_categories,
                                     "annotations": [a for a in annotations if a["image_id"] in trained_ids]}))
    evaluated_ann.write_text(json.dumps({"images": evaluated, "categories": used_categories,
                                         "annotations": [a for a in annotations if a["image_id"] in kept_ids]}))
    unseen = sorted((SHARED / "coco_mini" / "val2017").glob("*.jpg"))[:calib_images]
    return PooledCoco(train_ann, linked, evaluated_ann, [linked / im["file_name"] for im in calibrated], unseen)


def train_pooled(arch_name: str, data: PooledCoco, size: int, iterations: int, cls_iterations: int,
                 work: Path) -> Path:
    """A short cifar10 classification warm start, then FPN detection on every image of `data`; its final weights."""
    from detnas.train import resolve_config, train_child_cls, train_child_det

    arch = resolve_arch(arch_name)
    cls = train_child_cls(resolve_config("cpu-cls", overrides={
        "data": str(SHARED / "cifar10" / "train"), "space": arch.space.name, "arch": arch.to_json(),
        "iterations": cls_iterations, "out": str(work / "cls"), "device": "cpu", "log_every": 10}))
    milestone = max(1, int(iterations * 0.8))
    return train_child_det(resolve_config("cpu-det", overrides={
        "data": str(data.images), "ann": str(data.train_ann), "space": arch.space.name, "arch": arch.to_json(),
        "init": str(cls), "roi_batch": 32, "proposals": 100, "min_size": size, "max_size": size,
        "batch_size": 4, "lr": 0.02, "iterations": iterations, "milestones": [milestone],
        "warmup_iters": min(20, milestone - 1) if milestone > 1 else 0, "checkpoint_every": iterations,
        "log_every": 50, "out": str(work / "det"), "device": "cpu"}))


def trained_ap(arch_name: str, min_area: float, size: int, iterations: int, cls_iterations: int, calib_images: int,
               method: str, work: Path, detector: Path | None = None) -> dict[str, Any]:
    """Train on the pooled set (`pooled_coco`; or take `detector`, weights an earlier run of this suite trained),
    export at `size`, and compare COCO AP of the FP32 and INT8 files on its held-out images, with INT8 ranges
    from trained images (`train`, the split `detnas export` calibrates on) and from never-seen images (`unseen`:
    another sample of as many, which shows how far the ranges, and the drop, depend on which images are drawn)."""
    from detnas.export.source import load_export_source

    data = pooled_coco(min_area, calib_images, work)
    trained_on = {"min_area": min_area, "train_size": size, "held_out": f"every {HELD_OUT}th image"}
    start = time.perf_counter()
    if detector:
        _check_trained_on(detector, trained_on)
        final = detector
    else:
        final = train_pooled(arch_name, data, size, iterations, cls_iterations, work)
        atomic_write_json(final.parent / TRAINED_ON, trained_on)
    train_s = time.perf_counter() - start
    source = load_export_source(final, proposals=100)
    fp32 = export_onnx(source.detector, source.arch, source.classes, (size, size), work / "trained.onnx",
                       kind=source.detector_kind, pixels=source.pixels).path
    meta = read_onnx_meta(fp32)
    results = {}
    for origin, files in (("train", data.calibration), ("unseen", data.unseen)):
        batches = calibration_batches([read_image(f) for f in files], meta)
        for name in method.split(","):
            start = time.perf_counter()
            int8 = quantize_int8(fp32, work / f"trained.int8.{origin}.{name}.onnx", batches, name)
            quantize_s = time.perf_counter() - start
            kept = work / f"detections.{origin}.{name}"
            kept.mkdir()
            gate = ap_gate(fp32, int8, Gate(data.evaluated_ann, data.images, AP_DROP_GOAL), kept)
            results[f"{origin}:{name}"] = {"calibration": origin, "method": name, "calibration_images": len(files),
                                           "percentile": percentile_cut(name),
                                           "quantize_s": round(quantize_s, 2), **gate.to_dict(),
                                           **ap_drop_interval(data.evaluated_ann, kept)}
    trained = json.loads(data.train_ann.read_text())
    return {"arch": arch_name, "images": len(trained["images"]), "annotations": len(trained["annotations"]),
            "min_area": min_area, "size": size, "detector": str(final), "trained_here": detector is None,
            "iterations": iterations, "cls_iterations": cls_iterations, "train_s": round(train_s, 1),
            "methods": results}


def _check_trained_on(detector: Path, wanted: dict[str, float]) -> None:
    """Refuse `--detector` weights trained on another AP set: their AP and drop would not be this set's."""
    record = detector.parent / TRAINED_ON
    recorded = json.loads(record.read_text()) if record.is_file() else "nothing (missing)"
    if recorded != wanted:
        raise DetnasError(f"--detector {detector}: {record} records {recorded}, this run asks {wanted}; pass the "
                         "--min-area and --train-size it was trained with, or leave out --detector to train here")


def demo_winner_ap(results: Path, val_images: int, calib_images: int, work: Path) -> dict[str, Any]:
    """The demo's exported winner (`detnas demo --out RESULTS`), FP32 vs INT8 on `val_images` fresh images drawn
    like its validation split (a generalising detector, so the evaluation set can be large enough to resolve one AP
    point); INT8 ranges from its training split, as `detnas export` calibrates."""
    from detnas.data.demo import make_demo_detection
    from detnas.workflows.main_job import MainJobPlan

    plan = MainJobPlan.recorded(results)
    data = make_demo_detection(work / "demo_eval", 0, val_images, plan.seed + 1, plan.layout)
    fp32 = results / "model" / "detector.onnx"
    calib_files = sorted((results / "data" / "det" / "train").glob("*.png"))[:calib_images]
    start = time.perf_counter()
    int8 = quantize_int8(fp32, work / "demo.int8.onnx", calibration_batches([read_image(f) for f in calib_files],
                                                                          read_onnx_meta(fp32)))
    quantize_s = time.perf_counter() - start
    gate = ap_gate(fp32, int8, Gate(data.val_ann, data.val_images, AP_DROP_GOAL), work)
    return {"results": str(results), "calibration_images": len(calib_files), "quantize_s": round(quantize_s, 2),
            **gate.to_dict(), **ap_drop_interval(data.val_ann, work)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="COCO-FPN-300M")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--calib-method", default=",".join(CALIB_METHODS), help="AP part: comma-separated methods")
    parser.add_argument("--min-area", type=float, default=0.05,
                        help="AP set: drop annotations smaller than this fraction of their image (0.05: AP 0.10 at "
                        "160 px after 2000 iterations; 0.01 at 128 px reached 0.014)")
    parser.add_argument("--train-size", type=int, default=160)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--cls-iterations", type=int, default=200)
    parser.add_argument("--detector", type=Path, default=None,
                        help="AP part: weights an earlier run with --work trained (WORK/det/final.safetensors), "
                        "instead of training again")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the suite's files in this new folder (default: a temporary one, removed at the end)")
    parser.add_argument("--skip-ap", action="store_true", help="latency only")
    parser.add_argument("--demo-results", type=Path, default=None,
                        help="also: the AP drop of this `detnas demo --out` folder's winner on fresh validation images")
    parser.add_argument("--demo-val-images", type=int, default=400)
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-latency", action="store_true", help="AP only")
    args = parser.parse_args()
    result: dict[str, Any] = {"goals": {"int8_vs_eager": INT8_GOAL, "ap_drop": AP_DROP_GOAL}}
    if args.work and args.work.exists() and any(args.work.iterdir()):
        raise DetnasError(f"--work {args.work}: not empty; choose a new folder (the suite writes its files there)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_latency:
            result["latency"] = _report_latency(args, work)
        if not args.skip_ap:
            result["ap"] = _report_ap(args, work)
        if args.demo_results:
            demo = demo_winner_ap(args.demo_results, args.demo_val_images, args.calib_images, work)
            print(f"demo winner {args.demo_results}: AP FP32 {demo['reference_ap']:.4f}, INT8 {demo['candidate_ap']:.4f}, "
                  f"drop {demo['drop']:.4f} (95 % bootstrap interval {demo['drop_ci95_low']:+.4f} .. "
                  f"{demo['drop_ci95_high']:+.4f}) on {demo['images']} fresh images / {demo['annotations']} annotations "
                  f"(goal <= {AP_DROP_GOAL}: {goal_verdict(demo['drop_ci95_low'], demo['drop_ci95_high'])}); INT8 ranges from "
                  f"{demo['calibration_images']} training images, quantization {demo['quantize_s']:.1f} s")
            result["demo"] = demo
    if args.json:
        atomic_write_json(args.json, json.loads(json.dumps(result, default=_plain)))
        print(f"wrote {args.json}")


def _report_latency(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    speed = latency(args.arch, args.size, args.threads, args.runs, args.rounds, args.calib_images, work)
    med = {k: v["median_ms"] for k, v in speed["latency"].items()}
    print(f"{args.arch} FPN at {args.size}x{args.size}, {args.threads} thread(s), {speed['timed_images']} coco_mini "
          f"images, {args.rounds} interleaved rounds x {args.runs} runs (medians):")
    for name, ms in med.items():
        print(f"  {name:18s} {ms:9.1f} ms   eager / this = {med['torch_eager_fp32'] / ms:5.2f}x")
    print(f"  INT8 vs eager FP32 {speed['int8_vs_eager']:.2f}x (goal >= {INT8_GOAL}x: "
          f"{'met' if speed['int8_vs_eager'] >= INT8_GOAL else 'NOT met'}); INT8 vs ORT FP32 "
          f"{speed['int8_vs_ort_fp32']:.2f}x; FP16 vs ORT FP32 {speed['fp16_vs_ort_fp32']:.2f}x"
          f"{' (FP16 is SLOWER than FP32 on this CPU: FP16 is for GPUs)' if speed['fp16_vs_ort_fp32'] < 1 else ''}")
    print(f"  quantization {speed['quantize_s']:.1f} s ({args.calib_images} calibration images), for timing a search "
          f"candidate {speed['timing_quantize_s']:.1f} s (1 image), FP16 conversion {speed['fp16_convert_s']:.1f} s")
    return speed


def _report_ap(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ap = trained_ap(args.arch, args.min_area, args.train_size, args.iterations, args.cls_iterations,
                    args.calib_images, args.calib_method, work, args.detector)
    trained = f"{args.iterations} iterations, {ap['train_s']:.0f} s" if args.detector is None else args.detector
    if args.work and args.detector is None:
        print(f"trained weights kept: {ap['detector']} (reuse with --detector)")
    print(f"trained {args.arch} ({trained}) on coco128 + coco_mini train2017: {ap['images']} images, "
          f"{ap['annotations']} annotations of at least {args.min_area:g} of their image, at {args.train_size}px; AP on "
          f"every {HELD_OUT}th image, held out of training; INT8 ranges from trained images (train) or from coco_mini "
          "val2017 images it never saw (unseen):")
    for name, m in ap["methods"].items():
        print(f"  {name:18s} ({m['calibration_images']:2d} images) AP FP32 {m['reference_ap']:.4f}, INT8 {m['candidate_ap']:.4f}, drop "
              f"{m['drop']:.4f} (95 % bootstrap interval over images {m['drop_ci95_low']:+.4f} .. "
              f"{m['drop_ci95_high']:+.4f}) on {m['images']} images / {m['annotations']} annotations (goal <= "
              f"{AP_DROP_GOAL}: {goal_verdict(m['drop_ci95_low'], m['drop_ci95_high'])}); quantization {m['quantize_s']:.1f} s")
    return ap


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


if __name__ == "__main__":
    run_suite(main)
