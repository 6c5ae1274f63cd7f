"""Benchmark: the exported detector on ONNX Runtime CPU vs the same detector in PyTorch eager, and the
time the export takes.

Same weights, same letterboxed real images (coco_mini val when present, else random pixels), same thread count.
PyTorch eager is timed twice: the torchvision detector's own forward (what a user runs) and the export wrapper's
eager forward (exactly the exported computation). ONNX Runtime is timed on the raw traced graph and on the
onnxslim-simplified one. Rounds are interleaved so machine noise hits all variants alike.
Goal: ORT (kept graph) >= 1.5x faster than PyTorch eager. For FPN it also times the box head alone in both
runtimes: eager total / ORT box head is the most any graph of this detector could gain on this CPU.
Run: python -m detnas.bench.suite.export_speed [--arch COCO-FPN-300M] [--kind fpn] [--size 320] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from detnas.arch import resolve_arch
from detnas.bench.backends import Prepared, time_prepared
from detnas.bench.stats import summarize
from detnas.detection import build_detector
from detnas.detection.deployable import DeployableDetector
from detnas.export import class_table, export_onnx
from detnas.export.preprocess import letterbox
from detnas.export.runtime import onnx_runner
from detnas.images import read_image
from detnas.io import atomic_write_json
from detnas.pixels import DEFAULT_PIXELS, Normalize
from detnas.supernet import ChildNet

SHARED = Path(os.environ.get("DETNAS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _images(size: int, count: int) -> tuple[list[torch.Tensor], list[torch.Tensor], str]:
    """(uint8 originals, letterboxed model inputs, source)."""
    files = sorted((SHARED / "coco_mini" / "val2017").glob("*.jpg"))[:count]
    if files:
        originals = [read_image(f) for f in files]
        source = f"{len(files)} coco_mini val images"
    else:
        generator = torch.Generator().manual_seed(0)
        originals = [torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8, generator=generator)
                     for _ in range(count)]
        source = f"{count} random 640x480 images (coco_mini not found at {SHARED})"
    return originals, [letterbox(im, size, size, DEFAULT_PIXELS)[0] for im in originals], source


def _calibrate_bn(detector: torch.nn.Module, inputs: list[torch.Tensor]) -> None:
    """Backbone BN statistics from real images, so a random-init detector's scores are not all at the prior."""
    for m in detector.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    detector.train()
    with torch.no_grad():
        detector.backbone(Normalize(DEFAULT_PIXELS)(torch.stack(inputs)))
    detector.eval()


def _detectron_box_init(detector: torch.nn.Module) -> None:
    """Box regression weights ~ N(0, 0.001) as Detectron initialises them: a random-init torchvision head
    predicts huge deltas whose exp() turns float32 rounding into >1e-3 px box differences, which a trained
    detector does not have."""
    predictor = getattr(getattr(detector, "roi_heads", None), "box_predictor", None)
    if predictor is not None:
        torch.nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
        torch.nn.init.zeros_(predictor.bbox_pred.bias)


def _spread_class_scores(detector: torch.nn.Module) -> None:
    """Class weights ~ N(0, 0.1): a random-init head leaves every score near the 1/(K+1) prior, under the 0.05
    threshold, so NMS would have no work and parity nothing to compare. Spread like this, the FPN head keeps its
    100 detections per coco_mini image with top scores 0.4-0.6, as a trained detector on a busy image does."""
    predictor = getattr(getattr(detector, "roi_heads", None), "box_predictor", None)
    if predictor is not None:
        torch.nn.init.normal_(predictor.cls_score.weight, std=0.1)


def ort_time_by_part(path: Path, batch: np.ndarray, threads: int, runs: int = 3) -> dict[str, float]:
    """Share of ONNX Runtime's kernel time per detector part, from its profiler over `runs` runs.

    A node named /roi_heads/box_head/... belongs to 'roi_heads.box_head' (ORT's fused nodes keep the name); a
    module's own top-level ops (box decoding, NMS) to the module ('roi_heads'); the export wrapper's own ops (the
    RPN's proposal filter, the RoI pooling, the output padding) to 'graph <op type>'.
    Says where the time goes, e.g. whether the dense convolutions (the same GEMMs in every runtime) dominate."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {session.get_inputs()[0].name: batch})
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            parts = event["name"].removesuffix("_kernel_time").removeprefix("fused ").strip("/").split("/")
            submodule = len(parts) > 2 and parts[1][:1].islower()  # modules are snake_case, ops CamelCase
            part = f"graph {event['args']['op_name']}" if len(parts) == 1 else \
                parts[0] + (f".{parts[1]}" if submodule else "")
            totals[part] += event["dur"]
    total = sum(totals.values())
    return {k: v / total for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def box_head_alone(detector: torch.nn.Module, rois: int, threads: int, runs: int, rounds: int) -> dict[str, float]:
    """Median ms of the FPN box head alone (its convolutions and FC on [rois, C, 7, 7] pooled features), in PyTorch
    eager and in ONNX Runtime. It is dense GEMM work that both runtimes run near this CPU's arithmetic peak, so
    eager_total / ort_box_head bounds the speed-up any ONNX graph of this detector can reach here."""
    from detnas.bench.backends.ort_backend import open_session
    from detnas.bench.models import module_to_onnx as export_module

    head = detector.roi_heads.box_head.eval()
    side = detector.roi_heads.box_roi_pool.output_size[0]
    pooled = torch.randn(rois, head[0][0].in_channels, side, side)
    with tempfile.TemporaryDirectory() as work:
        session = open_session(export_module(head, pooled, Path(work) / "box_head.onnx"), "cpu", threads)
        feed = {session.get_inputs()[0].name: pooled.numpy()}

        def eager(_: int) -> None:
            with torch.inference_mode():
                head(pooled)

        variants = {"torch_eager_ms": eager, "ort_ms": lambda _: session.run(None, feed)}
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                samples[name] += time_prepared(Prepared(call=fn, n_inputs=1), warmup=1, runs=runs)
    return {name: summarize(v).median_ms for name, v in samples.items()}


def run(arch_name: str, kind: str, size: int, proposals: int, threads: int, runs: int, rounds: int,
        num_classes: int = 80, box_tol: float = 1e-3) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    arch = resolve_arch(arch_name)
    detector = build_detector(kind, ChildNet(arch), num_classes + 1, size, size, proposals=proposals)
    originals, inputs, source = _images(size, 4)
    _calibrate_bn(detector, inputs)
    _detectron_box_init(detector)
    _spread_class_scores(detector)
    classes = class_table([f"class{i}" for i in range(1, num_classes + 1)])
    exports, paths = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for name, simplify in (("raw", False), ("slim", True)):
            start = time.perf_counter()
            report = export_onnx(detector, arch, classes, (size, size), Path(work) / f"{name}.onnx", kind=kind,
                                 parity_images=originals, simplify=simplify, box_tol=box_tol)
            exports[name] = {"total_s": time.perf_counter() - start, "trace_s": report.export_seconds,
                             "nodes": report.nodes, "parity": report.parity.summary() if report.parity else None,
                             "notes": report.notes, "simplified": report.simplified}
            paths[name] = report.path
        batch = inputs[0][None]
        wrapper = DeployableDetector(detector, DEFAULT_PIXELS, 100)
        runners = {name: onnx_runner(p, threads=threads) for name, p in paths.items()}
        numpy_batch = batch.numpy()

        def eager_torchvision(_: int) -> None:
            with torch.inference_mode():
                detector([batch[0]])

        def eager_wrapper(_: int) -> None:
            with torch.inference_mode():
                wrapper(batch)

        variants = {"torch_eager_torchvision": eager_torchvision, "torch_eager_wrapper": eager_wrapper}
        for name, runner in runners.items():
            variants[f"ort_{name}"] = lambda _, r=runner: r.run(numpy_batch)
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                samples[name] += time_prepared(Prepared(call=fn, n_inputs=1), warmup=1, runs=runs)
        detections = int(runners["slim"].run(numpy_batch)[0][0])
        breakdown = ort_time_by_part(paths["raw"], numpy_batch, threads)
    head_alone = box_head_alone(detector, proposals, threads, runs, rounds) if kind == "fpn" else None
    stats = {k: summarize(v).to_dict() for k, v in samples.items()}
    kept = "slim" if exports["slim"]["simplified"] else "raw"
    eager = stats["torch_eager_torchvision"]["median_ms"]
    return {
        "arch": arch_name, "kind": kind, "num_classes": num_classes, "size": size, "proposals": proposals if kind == "fpn" else None,
        "threads": threads, "images": source, "detections_on_timed_image": detections, "export": exports,
        "latency": stats, "kept_graph": kept, "ort_time_share_by_part": breakdown,
        "speedup_ort_vs_torch_eager": eager / stats[f"ort_{kept}"]["median_ms"],
        "speedup_ort_raw_vs_torch_eager": eager / stats["ort_raw"]["median_ms"],
        "speedup_ort_vs_wrapper_eager": stats["torch_eager_wrapper"]["median_ms"] / stats[f"ort_{kept}"]["median_ms"],
        "goal_speedup": 1.5,
        "box_head_alone": head_alone,
        "speedup_ceiling": eager / head_alone["ort_ms"] if head_alone else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="COCO-FPN-300M")
    parser.add_argument("--kind", default="fpn", choices=("fpn", "retinanet"))
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--proposals", type=int, default=1000, help="FPN: RPN proposals per image at test time")
    parser.add_argument("--num-classes", type=int, default=80,
                        help="K (FPN: class scores are spread so NMS has work, see _spread_class_scores)")
    parser.add_argument("--box-tol", type=float, default=1e-3, help="parity box tolerance in px (printed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="export_speed.json")
    args = parser.parse_args()
    result = run(args.arch, args.kind, args.size, args.proposals, args.threads, args.runs, args.rounds,
                 args.num_classes, args.box_tol)
    print(f"{result['arch']} {result['kind']} {result['size']}x{result['size']}, {result['num_classes']} classes, "
          f"{result['proposals']} proposals, {result['threads']} threads, "
          f"{result['images']}, {result['detections_on_timed_image']} detections on the timed image")
    for name, e in result["export"].items():
        print(f"export {name:4s}: {e['total_s']:.1f} s total ({e['trace_s']:.1f} s tracing), {e['nodes']} nodes; "
              f"{e['parity']}")
    for name, s in result["latency"].items():
        print(f"{name:24s} median {s['median_ms']:8.1f} ms  p90 {s['p90_ms']:8.1f} ms  cv {s['cv']:.2f}")
    print("ONNX Runtime kernel time by part: " + ", ".join(
        f"{part} {100 * share:.1f}%" for part, share in result["ort_time_share_by_part"].items() if share >= 0.005))
    if result["box_head_alone"]:
        head = result["box_head_alone"]
        print(f"box head alone on {result['proposals']} RoIs: ORT {head['ort_ms']:.1f} ms, PyTorch eager "
              f"{head['torch_eager_ms']:.1f} ms; with everything else free, ORT could be at most "
              f"{result['speedup_ceiling']:.2f}x faster than the eager detector")
    print(f"ORT ({result['kept_graph']} graph) vs PyTorch eager (torchvision forward): "
          f"{result['speedup_ort_vs_torch_eager']:.2f}x (goal >= {result['goal_speedup']}x); raw graph "
          f"{result['speedup_ort_raw_vs_torch_eager']:.2f}x; vs the wrapper's eager forward "
          f"{result['speedup_ort_vs_wrapper_eager']:.2f}x")
    atomic_write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
