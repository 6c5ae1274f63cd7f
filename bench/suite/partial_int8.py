"""Partial INT8 benchmark: what keeping the most sensitive layers FP32 buys back in COCO AP, and what it costs in speed.

For each range method (average, percentile, entropy, minmax) on each detector: full INT8 AP, partial INT8 AP (the
file `detnas export --precision int8 --partial` writes: `search_int8` keeps the fewest lowest-SQNR layers FP32 that
pass the gate), the layers kept, and ORT CPU latency of both vs ORT FP32. The gate chooses on one half of the
evaluation images ('gate'); AP and its drop are reported on the other half ('held out'), which neither training,
calibration nor the choice of layers saw, with a paired bootstrap interval (precision_speed.ap_drop_interval).
Detectors: the precision suite's coco128 + coco_mini detector (its builders: pooled set, held-out quarter, training
or --detector weights) and, with --demo-results, the demo's winner on fresh images drawn like its validation split.
Goals: AP drop <= 0.5 point (`DROP_GOAL`) with the interval's upper bound <= 1 point (`DROP_BOUND`), while keeping
>= 80 % of full INT8's speed-up over ORT FP32 (`SPEEDUP_SHARE`).
Run: python -m detnas.bench.suite.partial_int8 [--detector WORK/det/final.safetensors] [--demo-results DIR]
     [--methods average,minmax] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from detnas.bench.backends import Prepared, time_prepared
from detnas.bench.backends.ort_backend import open_session
from detnas.bench.stats import summarize
from detnas.bench.suite import run_suite
from detnas.bench.suite.precision_speed import (
    HELD_OUT,
    TRAINED_ON,
    _check_trained_on,
    ap_drop_interval,
    pooled_coco,
    train_pooled,
)
from detnas.errors import DetnasError
from detnas.export import export_onnx
from detnas.export.precision import CALIB_METHODS, Gate, ap_gate, calibration_batches
from detnas.export.precision.partial import search_int8
from detnas.export.precision.quantize import quantize_int8
from detnas.export.preprocess import letterbox
from detnas.export.runtime import read_onnx_meta
from detnas.images import read_image
from detnas.io import atomic_write_json

DROP_GOAL = 0.005
DROP_BOUND = 0.01
SPEEDUP_SHARE = 0.8


def split_halves(ann: Path, images: Path, work: Path) -> tuple[Gate, Gate]:
    """(gate, held out): the even and odd images of `ann`, each as a Gate at `DROP_GOAL`."""
    data = json.loads(ann.read_text())
    halves = []
    for name, picked in (("gate", data["images"][::2]), ("held_out", data["images"][1::2])):
        ids = {im["id"] for im in picked}
        path = work / f"{ann.stem}.{name}.json"
        path.write_text(json.dumps({**data, "images": picked,
                                    "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}))
        halves.append(Gate(path, images, DROP_GOAL))
    return halves[0], halves[1]


def speeds(files: dict[str, Path], batches: list[Any], threads: int, rounds: int, runs: int) -> dict[str, float]:
    """Median ms of each file on ORT CPU, rounds interleaved so machine noise hits all alike."""
    variants = {}
    for name, path in files.items():
        session = open_session(path, "cpu", threads)
        feeds = [{session.get_inputs()[0].name: b} for b in batches]
        variants[name] = Prepared(call=lambda i, s=session, f=feeds: s.run(None, f[i]), n_inputs=len(feeds))
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, prepared in variants.items():
            samples[name] += time_prepared(prepared, warmup=1, runs=runs)
    return {k: summarize(v).median_ms for k, v in samples.items()}


def compare(label: str, fp32: Path, calibration: list[Path], ann: Path, images: Path, methods: list[str],
            args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Full vs partial INT8 of `fp32` for each method: AP on the held-out half, layers kept, ORT speed."""
    meta = read_onnx_meta(fp32)
    batches = calibration_batches([read_image(f) for f in calibration], meta)
    gate, held_out = split_halves(ann, images, work)
    timed = [letterbox(read_image(images / im["file_name"]), meta.input.height, meta.input.width, meta.pixels)[0]
             for im in json.loads(held_out.ann.read_text())["images"][:4]]
    timed_batches = [t[None].numpy() for t in timed]
    rows = []
    for method in methods:
        folder = work / f"{label}.{method}"
        folder.mkdir()
        full = quantize_int8(fp32, folder / "full.onnx", batches, method)
        search = search_int8(fp32, folder / "partial.onnx", batches, method, gate, True, print)
        row: dict[str, Any] = {"detector": label, "method": method, "quantized_layers": len(search.ranked) or None,
                               "kept": [s.layer for s in search.kept], "search_s": round(search.seconds, 1),
                               "trials": len(search.trials)}
        for side, path in (("full", full), ("partial", folder / "partial.onnx")):
            kept = folder / f"detections.{side}"
            kept.mkdir()
            result = ap_gate(fp32, path, held_out, kept)
            row[side] = {**result.to_dict(), **ap_drop_interval(held_out.ann, kept, rounds=args.bootstrap)}
        ms = speeds({"fp32": fp32, "full": full, "partial": folder / "partial.onnx"}, timed_batches, args.threads,
                    args.rounds, args.runs)
        full_gain, partial_gain = ms["fp32"] / ms["full"] - 1, ms["fp32"] / ms["partial"] - 1
        row.update(ms_fp32=ms["fp32"], ms_full=ms["full"], ms_partial=ms["partial"],
                   speedup_share=partial_gain / full_gain if full_gain > 0 else None)
        rows.append(row)
        _print_row(row)
    return rows


def _verdict(row: dict[str, Any]) -> str:
    drop, high, share = row["partial"]["drop"], row["partial"]["drop_ci95_high"], row["speedup_share"]
    ap_ok = drop <= DROP_GOAL and high <= DROP_BOUND
    speed_ok = share is not None and share >= SPEEDUP_SHARE
    return f"AP goal {'met' if ap_ok else 'NOT met'}, speed goal {'met' if speed_ok else 'NOT met'}"


def _print_row(row: dict[str, Any]) -> None:
    f, p = row["full"], row["partial"]
    share = "-" if row["speedup_share"] is None else f"{100 * row['speedup_share']:.0f} %"
    print(f"{row['detector']:6s} {row['method']:10s} full INT8 AP {f['candidate_ap']:.4f} (drop {f['drop']:+.4f}, "
          f"{f['drop_ci95_low']:+.4f}..{f['drop_ci95_high']:+.4f}) | partial AP {p['candidate_ap']:.4f} (drop "
          f"{p['drop']:+.4f}, {p['drop_ci95_low']:+.4f}..{p['drop_ci95_high']:+.4f}), {len(row['kept'])} of "
          f"{row['quantized_layers'] or '-'} layers FP32 | FP32 AP {f['reference_ap']:.4f} on {f['images']} held-out "
          f"images | ORT ms FP32 {row['ms_fp32']:.1f}, full {row['ms_full']:.1f}, partial {row['ms_partial']:.1f} "
          f"(speed-up kept {share}) | {_verdict(row)}", flush=True)


def coco_detector(args: argparse.Namespace, work: Path) -> tuple[Path, list[Path], Path, Path]:
    """The precision suite's pooled coco128 + coco_mini detector: (FP32 file, calibration files, held-out ann, images)."""
    from detnas.export.source import load_export_source

    data = pooled_coco(args.min_area, args.calib_images, work)
    trained_on = {"min_area": args.min_area, "train_size": args.train_size, "held_out": f"every {HELD_OUT}th image"}
    if args.detector:
        _check_trained_on(args.detector, trained_on)
        final = args.detector
    else:
        final = train_pooled(args.arch, data, args.train_size, args.iterations, args.cls_iterations, work)
        atomic_write_json(final.parent / TRAINED_ON, trained_on)
    source = load_export_source(final, proposals=100)
    fp32 = export_onnx(source.detector, source.arch, source.classes, (args.train_size, args.train_size),
                       work / "coco.fp32.onnx", kind=source.detector_kind, pixels=source.pixels).path
    return fp32, data.calibration, data.evaluated_ann, data.images


def demo_detector(results: Path, val_images: int, calib_images: int, work: Path) -> tuple[Path, list[Path], Path, Path]:
    """The demo's winner: (its FP32 file, training images, fresh validation-like ann, images)."""
    from detnas.data.demo import make_demo_detection
    from detnas.workflows.main_job import MainJobPlan

    plan = MainJobPlan.recorded(results)
    data = make_demo_detection(work / "demo_eval", 0, val_images, plan.seed + 1, plan.layout)
    calibration = sorted((results / "data" / "det" / "train").glob("*.png"))[:calib_images]
    return results / "model" / "detector.onnx", calibration, data.val_ann, data.val_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(CALIB_METHODS))
    parser.add_argument("--arch", default="COCO-FPN-300M")
    parser.add_argument("--min-area", type=float, default=0.05)
    parser.add_argument("--train-size", type=int, default=160)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--cls-iterations", type=int, default=200)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--detector", type=Path, default=None, help="weights precision_speed --work trained")
    parser.add_argument("--skip-coco", action="store_true")
    parser.add_argument("--demo-results", type=Path, default=None)
    parser.add_argument("--demo-val-images", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    methods = args.methods.split(",")
    if unknown := sorted(set(methods) - set(CALIB_METHODS)):
        raise DetnasError(f"--methods {args.methods}: {unknown[0]} is not one of {', '.join(CALIB_METHODS)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.demo_results:
            rows += compare("demo", *demo_detector(args.demo_results, args.demo_val_images, args.calib_images, work),
                            methods, args, work)
        if not args.skip_coco:
            rows += compare("coco", *coco_detector(args, work), methods, args, work)
    if args.json:
        atomic_write_json(args.json, {"goals": {"drop": DROP_GOAL, "drop_bound": DROP_BOUND,
                                                "speedup_share": SPEEDUP_SHARE}, "rows": rows})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_suite(main)
