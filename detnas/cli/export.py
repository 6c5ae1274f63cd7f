"""`detnas export` and `detnas predict`: thin typer commands over detnas.export's Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from detnas.cli.options import DetectorName, PrecisionName, SizeHW, number_in, option, writable_json
from detnas.console import plain_console, quiet_onnxruntime
from detnas.detection.recalibrate import BN_BATCH, BN_IMAGES
from detnas.export.api import PARITY_IMAGES
from detnas.export.precision.quantize import CALIB_COUNT, CALIB_METHODS, DEFAULT_CALIB_METHOD, PERCENTILE

console = plain_console()


export_app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)


@export_app.callback(invoke_without_command=True)
def export_cmd(
    ctx: typer.Context,
    weights: Annotated[Path | None, option("weights")] = None,
    out: Annotated[Path | None, typer.Option(help="Output .onnx file (and .engine with --format trt).")] = None,
    arch: Annotated[str | None, option("arch", "Selects the path of a supernet checkpoint, must match a child "
                                       "checkpoint.")] = None,
    bn_ann: Annotated[Path | None, option("ann", "A supernet checkpoint's path gets BN statistics of its own, "
                                          "re-estimated on these training images as the search does (its --bn-ann; "
                                          "with its --bn-count and --bn-batch the file is the detector it scored).",
                                          prefix="bn")] = None,
    bn_images: Annotated[Path | None, option("images", "The images of --bn-ann.", prefix="bn")] = None,
    bn_count: Annotated[int | None, typer.Option(help="Training images for BN recalibration (default: the search's "
                                                 f"with a best_arch.json, else {BN_IMAGES}).")] = None,
    bn_batch: Annotated[int | None, typer.Option(help="Batch size of BN recalibration (default: the search's with a "
                                                 f"best_arch.json, else {BN_BATCH}).")] = None,
    random_init: Annotated[bool, typer.Option(help="No weights: an untrained detector of --arch, to check that it "
                                              "exports and parses and to time it (parity compares pre-NMS outputs)."
                                              )] = False,
    detector: Annotated[DetectorName | None, option("detector", "With --random-init (default fpn; a checkpoint "
                                                    "names its own).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="--random-init: object classes K (default 80).")] = None,
    format: Annotated[Literal["onnx", "trt"], typer.Option("--format", help="onnx, or trt (builds the ONNX file, "
                                                           "then the engine).")] = "onnx",
    size: Annotated[SizeHW, option("size", "Multiples of 32 (default: the training max_size rounded up to 32, "
                                   "square; an elastic path at its input-size gene's share of it).")] = None,
    device: Annotated[str | None, option("device", "The ONNX export traces and checks parity on the CPU; --format "
                                         "trt builds and checks the engine on this GPU (default cuda).")] = None,
    batch: Annotated[int, typer.Option(help="Fixed batch size of the graph.")] = 1,
    dynamic_batch: Annotated[bool, typer.Option(help="Accept any batch (the batch-1 graph inside an ONNX Loop).")]
    = False,
    max_detections: Annotated[int, typer.Option(help="K: detections per image in the padded outputs.")] = 100,
    score_thresh: Annotated[float | None, typer.Option(help="Score threshold baked into the graph "
                                                       "(default: the detector's, 0.05).")] = None,
    nms_thresh: Annotated[float | None, typer.Option(help="NMS IoU threshold (default: the detector's, 0.5).",
                                                     callback=number_in(0, 1, above=True))]
    = None,
    proposals: Annotated[int | None, typer.Option(min=1, help="FPN: RPN proposals per image at test time (default: the "
                                                  "search's with a best_arch.json, else 1000).")] = None,
    parity_images: Annotated[Path | None, option("images", f"Real images; the first {PARITY_IMAGES} check ONNX "
                                                 "Runtime against PyTorch.", prefix="parity")] = None,
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="Check the ONNX file against PyTorch "
                                         "(skipping it is not recommended).")] = True,
    box_tol: Annotated[float, typer.Option(help="Parity: largest box difference in pixels.", callback=number_in(0))] = 1e-3,
    score_tol: Annotated[float, typer.Option(help="Parity: largest score difference.", callback=number_in(0))] = 1e-4,
    min_parity_detections: Annotated[int, typer.Option(min=0, help="Parity fails when it compared fewer detections (use "
                                                       "more --parity-images or a lower --score-thresh).")] = 20,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify the graph with onnxslim.")]
    = True,
    precision: Annotated[PrecisionName, option("precision", "fp16 keeps FP32 islands for post-processing, int8 "
                                               "is a QDQ graph: the precision of the written ONNX file, which "
                                               "--format trt builds (default: the search's with a best_arch.json, "
                                               "else fp32).")] = None,
    calib_images: Annotated[Path | None, option("images", "INT8 calibration (default: the training split the "
                                                "checkpoint's run records).", prefix="calib")] = None,
    calib_count: Annotated[int | None, typer.Option(help=f"INT8: calibration images used (the first N, sorted; "
                                                    f"default {CALIB_COUNT}).")] = None,
    calib_method: Annotated[Literal[CALIB_METHODS] | None, typer.Option(
        help="INT8 ranges: average (the mean of the calibration batches' own min-max ranges), percentile (cuts "
        f"{(100 - PERCENTILE) / 2:g} % of the values at each end), entropy (the range of least KL divergence, as "
        f"TensorRT's calibrator) or minmax (every value); default {DEFAULT_CALIB_METHOD}.")] = None,
    gate_ann: Annotated[Path | None, option("ann", "Gates the fp16/int8 file's AP (and the engine's) against FP32.",
                                            prefix="gate")] = None,
    gate_images: Annotated[Path | None, option("images", "The images of --gate-ann.", prefix="gate")] = None,
    max_ap_drop: Annotated[float, typer.Option(help="Largest allowed AP drop vs FP32 (0.01 = 1 point); the "
                                                        "reference must score above it or the gate refuses to judge.")] = 0.01,
    tf32: Annotated[bool, typer.Option("--tf32/--no-tf32", help="--format trt: let the engine's FP32 layers run in "
                                       "TF32 (judged with FP16's parity bounds); off, they compute in FP32.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", callback=writable_json, help="Write what was exported and checked as JSON "
                                                  "(schema detnas.export/2, docs/json.md).")] = None,
    search_check: Annotated[bool, typer.Option("--search-check/--no-search-check", help="With --arch "
                                               "best_arch.json: evaluate the file on the search-validation split "
                                               "and compare its AP with the journal's (when the split is at hand)."
                                               )] = True,
) -> None:
    """Export a detector with post-processing and NMS inside the graph (ONNX, optionally TensorRT); the written
    ONNX file is linted for TensorRT's ONNX parser (`detnas export check` runs the lint alone)."""
    if ctx.invoked_subcommand is not None:
        return
    from detnas.export.api import (
        BnData,
        EngineOptions,
        ExportRequest,
        GraphOptions,
        ParityOptions,
        PrecisionOptions,
        SourceOptions,
        run_export,
    )

    given = (bn_ann, bn_images, bn_count, bn_batch)
    bn = BnData(bn_ann, bn_images, bn_count, bn_batch) if any(v is not None for v in given) else None
    request = ExportRequest(
        out=out, json_out=json_out, search_check=search_check,
        source=SourceOptions(weights=weights, arch=arch, bn=bn, random_init=random_init, detector=detector,
                             num_classes=num_classes, proposals=proposals),
        graph=GraphOptions(size=size, batch=batch, dynamic_batch=dynamic_batch, max_detections=max_detections,
                           score_thresh=score_thresh, nms_thresh=nms_thresh, simplify=simplify),
        parity=ParityOptions(images=parity_images, check=parity, box_tol=box_tol, score_tol=score_tol,
                             min_detections=min_parity_detections),
        precision=PrecisionOptions(precision=precision, calib_images=calib_images, calib_count=calib_count,
                                   calib_method=calib_method, gate_ann=gate_ann, gate_images=gate_images,
                                   max_ap_drop=max_ap_drop),
        engine=EngineOptions(format=format, device=device, tf32=tf32))
    run_export(request)


@export_app.command("check")
def check_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX file to lint.")],
    trt: Annotated[list[str] | None, typer.Option("--trt", help="TensorRT parser version: 8.6, 10.0, 10.3 or 11 "
                                                  "(repeatable; default: all four).")] = None,
) -> None:
    """Lint an ONNX file for TensorRT's ONNX parser: every node (subgraphs included) each version would reject or
    translate differently, with the rule; exit code 2 when any finding."""
    from detnas.export.trt_lint import PARSER_VERSIONS, lint

    reports = lint(model, tuple(trt or PARSER_VERSIONS))
    for report in reports:
        console.print(f"TensorRT {report.version}: {report.summary()}", markup=False, highlight=False)
        for finding in report.findings:
            console.print(f"  {finding.line()}", markup=False, highlight=False, soft_wrap=True)
    if not all(report.passed for report in reports):
        raise typer.Exit(2)


def predict_cmd(
    model: Annotated[Path, option("model")],
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG / PNG).")],
    out: Annotated[Path, typer.Option(help="Folder for the drawn images and results.json.")],
    draw_thresh: Annotated[float, typer.Option(help="Draw boxes with at least this score.", callback=number_in(0))] = 0.3,
    device: Annotated[str | None, option("device", "Default: cpu for .onnx (ONNX Runtime), cuda for an engine.")]
    = None,
) -> None:
    """Detect objects with an exported model: drawn images plus a COCO results json."""
    from detnas.export.predict import predict

    quiet_onnxruntime()
    report = predict(model, list(images), out, draw_thresh, device)
    console.print(f"{report.detections} detections on {len(report.drawn)} images ({report.backend}); "
                  f"drawn images and {report.results_json.name} in {report.out_dir}", highlight=False,
                  soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `export` (with `export check`) and `predict` to the root app."""
    app.add_typer(export_app, name="export")
    app.command("predict")(predict_cmd)
