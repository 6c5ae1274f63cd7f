"""`detnas export` and `detnas predict`: thin typer commands over detnas.export's Python API."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
PARITY_IMAGES = 4


def export_cmd(
    weights: Annotated[Path, typer.Option(help="Detection checkpoint (child-det or supernet-det) from detnas train.")],
    out: Annotated[Path, typer.Option(help="Output .onnx file (and .engine with --format trt).")],
    arch: Annotated[str | None, typer.Option(help="Released name, arch file or inline JSON; selects the path of a "
                                             "supernet checkpoint, must match a child checkpoint.")] = None,
    format: Annotated[str, typer.Option("--format", help="onnx or trt (builds the ONNX file, then the engine).")]
    = "onnx",
    size: Annotated[str | None, typer.Option(help="Model input HxW, multiples of 32 (default: the training "
                                             "max_size rounded up to 32, square).")] = None,
    batch: Annotated[int, typer.Option(help="Fixed batch size of the graph.")] = 1,
    dynamic_batch: Annotated[bool, typer.Option(help="Accept any batch (the batch-1 graph inside an ONNX Loop).")]
    = False,
    max_detections: Annotated[int, typer.Option(help="K: detections per image in the padded outputs.")] = 100,
    score_thresh: Annotated[float | None, typer.Option(help="Score threshold baked into the graph "
                                                       "(default: the detector's, 0.05).")] = None,
    nms_thresh: Annotated[float | None, typer.Option(help="NMS IoU threshold (default: the detector's, 0.5).")]
    = None,
    proposals: Annotated[int, typer.Option(help="FPN: RPN proposals per image at test time.")] = 1000,
    parity_data: Annotated[Path | None, typer.Option(help=f"Folder of real images; the first {PARITY_IMAGES} "
                                                     "check ONNX Runtime against PyTorch.")] = None,
    no_parity: Annotated[bool, typer.Option(help="Skip the parity check (not recommended).")] = False,
    box_tol: Annotated[float, typer.Option(help="Parity: largest box difference in pixels.")] = 1e-3,
    score_tol: Annotated[float, typer.Option(help="Parity: largest score difference.")] = 1e-4,
    min_parity_detections: Annotated[int, typer.Option(help="Parity fails when it compared fewer detections (use "
                                                       "more --parity-data images or a lower --score-thresh).")] = 20,
    no_simplify: Annotated[bool, typer.Option(help="Keep the unsimplified graph (no onnxslim).")] = False,
    precision: Annotated[str, typer.Option(help="TensorRT: fp32, fp16 or int8.")] = "fp32",
    calib_data: Annotated[Path | None, typer.Option(help="TensorRT INT8: folder of calibration images.")] = None,
    gate_data: Annotated[Path | None, typer.Option(help="TensorRT: COCO json to gate the engine's AP on.")] = None,
    gate_images: Annotated[Path | None, typer.Option(help="Image folder of --gate-data.")] = None,
    max_ap_drop: Annotated[float, typer.Option(help="TensorRT: largest allowed AP drop vs ONNX (0.01 = 1 point).")]
    = 0.01,
) -> None:
    """Export a trained detector with post-processing and NMS inside the graph (ONNX, optionally TensorRT)."""
    from detnas.arch import resolve_arch
    from detnas.checkpoint import load_meta
    from detnas.errors import DetnasError
    from detnas.export.onnx_export import export_onnx, parse_size
    from detnas.export.predict import read_image
    from detnas.export.source import load_export_source
    from detnas.export.trt import check_trt_request, export_trt, image_files

    if format not in ("onnx", "trt"):
        raise DetnasError(f"--format {format}: choose onnx or trt")
    if out.suffix != ".onnx":
        raise DetnasError(f"--out {out}: give the ONNX file name ending in .onnx (the engine goes next to it)")
    if format == "trt":
        from detnas.bench.backends.trt_backend import require_tensorrt

        check_trt_request(precision, calib_data, dynamic_batch)
        require_tensorrt()  # before the ONNX export: without TensorRT nothing is written
    if (gate_data is None) != (gate_images is None):
        raise DetnasError("--gate-data and --gate-images go together (COCO json and its image folder)")
    if parity_data is None and not no_parity:
        raise DetnasError("pass --parity-data DIR (real images for the ONNX Runtime vs PyTorch check) or --no-parity")
    height, width = parse_size(size) if size else _default_size(load_meta(weights))
    parity_files = image_files(parity_data)[:PARITY_IMAGES] if parity_data and not no_parity else []
    parity_images = [read_image(f) for f in parity_files]
    source = load_export_source(weights, resolve_arch(arch) if arch else None, proposals)
    report = export_onnx(source.detector, source.arch, source.classes, (height, width), out, kind=source.kind,
                         pixels=source.pixels, batch=batch, dynamic_batch=dynamic_batch,
                         max_detections=max_detections, score_thresh=score_thresh, nms_thresh=nms_thresh,
                         parity_images=parity_images, simplify=not no_simplify, box_tol=box_tol,
                         score_tol=score_tol, min_detections=min_parity_detections)
    console.print(f"ONNX: {report.path}  input {list(report.meta.input.shape())}"
                  f"{' (dynamic batch)' if dynamic_batch else ''}, {report.nodes} nodes, traced in "
                  f"{report.export_seconds:.1f} s", highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    if report.parity is not None:
        console.print(f"  parity OK: {report.parity.summary()}", highlight=False, soft_wrap=True)
    if format == "trt":
        gate = (gate_data, gate_images) if gate_data and gate_images else None
        trt = export_trt(out, out.with_suffix(".engine"), precision=precision, calib_data=calib_data,
                         parity_images=parity_files, gate_data=gate, max_ap_drop=max_ap_drop)
        console.print(f"TensorRT {precision}: {trt.engine} (sidecar {trt.sidecar})", highlight=False, soft_wrap=True)
        if trt.parity is not None:
            console.print(f"  parity: {trt.parity.summary()}", highlight=False, soft_wrap=True)
        if trt.ap:
            console.print(f"  AP gate OK: engine {trt.ap['engine_ap']:.4f} vs ONNX {trt.ap['onnx_ap']:.4f}",
                          highlight=False)


def _default_size(meta: dict) -> tuple[int, int]:
    recipe = meta.get("recipe") or {}
    side = 32 * math.ceil(int(recipe.get("max_size", 1333)) / 32)
    return side, side


def predict_cmd(
    model: Annotated[Path, typer.Option(help="Exported model: .onnx, or a TensorRT .engine with its sidecar.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG / PNG).")],
    out: Annotated[Path, typer.Option(help="Folder for the drawn images and results.json.")],
    draw_thresh: Annotated[float, typer.Option(help="Draw boxes with at least this score.")] = 0.3,
) -> None:
    """Detect objects with an exported model: drawn images plus a COCO results json."""
    from detnas.export.predict import predict

    report = predict(model, list(images), out, draw_thresh)
    console.print(f"{report.detections} detections on {len(report.drawn)} images ({report.backend}); "
                  f"drawn images and {report.results_json.name} in {report.out_dir}", highlight=False,
                  soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `export` and `predict` to the root app."""
    app.command("export")(export_cmd)
    app.command("predict")(predict_cmd)


def eval_exported(model: Path, data: Path, images: Path, max_images: int | None, batch_size: int,
                  out_json: Path | None) -> None:
    """`detnas eval --model`: COCO AP of the exported file itself, on data with the model's class list."""
    from detnas.cli.eval import metric_table
    from detnas.data.coco import CocoDetection
    from detnas.errors import DetnasError
    from detnas.evaluation import evaluate
    from detnas.export.runtime import exported_predictor, load_exported

    runner = load_exported(model)
    dataset = CocoDetection(data, images)
    if [c.name for c in runner.meta.classes] != dataset.classes:
        raise DetnasError(f"{data}: its classes differ from the model's ({len(runner.meta.classes)} classes in the "
                          f"metadata of {model}); evaluate on data with the same category list")
    metrics = evaluate(exported_predictor(runner), dataset, out_json=out_json, batch_size=batch_size,
                       max_images=max_images)
    console.print(f"COCO bbox metrics of {model} ({runner.backend}) on {data} ({int(metrics['images'])} images)",
                  highlight=False, soft_wrap=True)
    console.print(metric_table(metrics))
    if out_json is not None:
        console.print(f"detections: {out_json}", highlight=False)
