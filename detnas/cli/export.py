"""`detnas export` and `detnas predict`: thin typer commands over detnas.export's Python API."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from detnas.cli.options import DetectorName, PrecisionName, SizeHW, option
from detnas.console import plain_console, quiet_onnxruntime
from detnas.export.precision.quantize import CALIB_METHODS, DEFAULT_CALIB_METHOD, PERCENTILE
from detnas.search.evaluators import BN_BATCH, BN_IMAGES

if TYPE_CHECKING:
    from detnas.export.source import ExportSource
    from detnas.export.trt_lint import LintReport

console = plain_console()
PARITY_IMAGES = 4


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
    bn_count: Annotated[int, typer.Option(help="Training images for BN recalibration (as the search's).")] = BN_IMAGES,
    bn_batch: Annotated[int, typer.Option(help="Batch size of BN recalibration (as the search's).")] = BN_BATCH,
    random_init: Annotated[bool, typer.Option(help="No weights: an untrained detector of --arch, to check that it "
                                              "exports and parses and to time it (parity compares pre-NMS outputs)."
                                              )] = False,
    detector: Annotated[DetectorName | None, option("detector", "With --random-init (default fpn; a checkpoint "
                                                    "names its own).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="--random-init: object classes K (default 80).")] = None,
    format: Annotated[Literal["onnx", "trt"], typer.Option("--format", help="onnx, or trt (builds the ONNX file, "
                                                           "then the engine).")] = "onnx",
    size: Annotated[SizeHW, option("size", "Multiples of 32 (default: the training max_size rounded up to 32, "
                                   "square).")] = None,
    device: Annotated[str | None, option("device", "The ONNX export traces and checks parity on the CPU; --format "
                                         "trt builds and checks the engine on this GPU (default cuda).")] = None,
    batch: Annotated[int, typer.Option(help="Fixed batch size of the graph.")] = 1,
    dynamic_batch: Annotated[bool, typer.Option(help="Accept any batch (the batch-1 graph inside an ONNX Loop).")]
    = False,
    max_detections: Annotated[int, typer.Option(help="K: detections per image in the padded outputs.")] = 100,
    score_thresh: Annotated[float | None, typer.Option(help="Score threshold baked into the graph "
                                                       "(default: the detector's, 0.05).")] = None,
    nms_thresh: Annotated[float | None, typer.Option(help="NMS IoU threshold (default: the detector's, 0.5).")]
    = None,
    proposals: Annotated[int, typer.Option(help="FPN: RPN proposals per image at test time.")] = 1000,
    parity_images: Annotated[Path | None, option("images", f"Real images; the first {PARITY_IMAGES} check ONNX "
                                                 "Runtime against PyTorch.", prefix="parity")] = None,
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="Check the ONNX file against PyTorch "
                                         "(skipping it is not recommended).")] = True,
    box_tol: Annotated[float, typer.Option(help="Parity: largest box difference in pixels.")] = 1e-3,
    score_tol: Annotated[float, typer.Option(help="Parity: largest score difference.")] = 1e-4,
    min_parity_detections: Annotated[int, typer.Option(help="Parity fails when it compared fewer detections (use "
                                                       "more --parity-images or a lower --score-thresh).")] = 20,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify the graph with onnxslim.")]
    = True,
    precision: Annotated[PrecisionName, option("precision", "fp16 keeps FP32 islands for post-processing, int8 "
                                               "is a QDQ graph: the precision of the written ONNX file, which "
                                               "--format trt builds.")] = "fp32",
    calib_images: Annotated[Path | None, option("images", "INT8 calibration (default: the training split the "
                                                "checkpoint's run records).", prefix="calib")] = None,
    calib_count: Annotated[int, typer.Option(help="INT8: calibration images used (the first N, sorted).")] = 64,
    calib_method: Annotated[Literal[CALIB_METHODS], typer.Option(
        help="INT8 ranges: average (the mean of the calibration batches' own min-max ranges), percentile (cuts "
        f"{(100 - PERCENTILE) / 2:g} % of the values at each end), entropy (the range of least KL divergence, as "
        "TensorRT's calibrator) or minmax (every value).")] = DEFAULT_CALIB_METHOD,
    gate_ann: Annotated[Path | None, option("ann", "Gates the fp16/int8 file's AP (and the engine's) against FP32.",
                                            prefix="gate")] = None,
    gate_images: Annotated[Path | None, option("images", "The images of --gate-ann.", prefix="gate")] = None,
    max_ap_drop: Annotated[float, typer.Option(help="Largest allowed AP drop vs FP32 (0.01 = 1 point); the "
                                                        "reference must score above it or the gate refuses to judge.")] = 0.01,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write what was exported and checked as JSON "
                                                  "(schema detnas.export/2, docs/json.md).")] = None,
) -> None:
    """Export a detector with post-processing and NMS inside the graph (ONNX, optionally TensorRT); the written
    ONNX file is linted for TensorRT's ONNX parser (`detnas export check` runs the lint alone)."""
    if ctx.invoked_subcommand is not None:
        return
    from detnas.errors import DetnasError
    from detnas.export.onnx_export import check_size, export_onnx
    from detnas.export.precision import precision_request, reduce_exported
    from detnas.export.trt import check_trt_request, export_trt
    from detnas.images import image_files, read_image

    if format == "onnx" and device not in (None, "cpu"):
        raise DetnasError(f"--device {device}: the ONNX export traces and checks parity on the CPU; a GPU device "
                          "goes with --format trt")
    if format == "trt" and device == "cpu":
        raise DetnasError("--device cpu: a TensorRT engine is built on a GPU; pass --device cuda or cuda:N")
    if out is None or out.suffix != ".onnx":
        raise DetnasError(f"--out{f' {out}' if out else ''}: give the ONNX file name ending in .onnx (the engine goes "
                          "next to it)")
    trt_version = None
    if format == "trt":
        from detnas.bench.backends.trt_backend import require_tensorrt

        check_trt_request(dynamic_batch)
        trt_version = require_tensorrt().__version__  # before the ONNX export: without TensorRT nothing is written
    if (gate_ann is None) != (gate_images is None):
        raise DetnasError("--gate-ann and --gate-images go together (COCO json and its image folder)")
    if parity_images is None and parity and not random_init:
        raise DetnasError("pass --parity-images DIR (real images for the ONNX Runtime vs PyTorch check) or "
                          "--no-parity")
    request = precision_request(precision, weights=weights, calib_data=calib_images, calib_images=calib_count,
                                calib_method=calib_method, gate_data=gate_ann, gate_images=gate_images,
                                max_ap_drop=max_ap_drop, dynamic_batch=dynamic_batch)
    if request.gate is not None and not request.reduced and format == "onnx":
        raise DetnasError("--gate-ann: an FP32 ONNX export has nothing to gate (it is the reference); the AP gate "
                          "judges a --precision fp16/int8 file or a --format trt engine")
    recalibration = BnData(bn_ann, bn_images, bn_count, bn_batch) if bn_ann or bn_images else None
    source, meta = _export_source(weights, arch, random_init, detector, num_classes, proposals, recalibration)
    if size is not None:
        check_size(size)
    height, width = size or _default_size(meta)
    parity_files = image_files(parity_images)[:PARITY_IMAGES] if parity_images and parity else []
    parity_inputs = [read_image(f) for f in parity_files]
    if random_init and parity and not parity_inputs:
        parity_inputs = _seeded_images(1 if dynamic_batch else batch, height, width)
    report = export_onnx(source.detector, source.arch, source.classes, (height, width), out, kind=source.detector_kind,
                         pixels=source.pixels, batch=batch, dynamic_batch=dynamic_batch,
                         max_detections=max_detections, score_thresh=score_thresh, nms_thresh=nms_thresh,
                         parity_images=parity_inputs, simplify=simplify, box_tol=box_tol,
                         score_tol=score_tol,
                         # random weights leave few detections: parity rests on the head outputs before NMS
                         min_detections=0 if random_init else min_parity_detections)
    console.print(f"ONNX: {report.path}  input {list(report.meta.input.shape())}"
                  f"{' (dynamic batch)' if dynamic_batch else ''}, {report.nodes} nodes, traced in "
                  f"{report.export_seconds:.1f} s", highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    if report.parity is not None:
        console.print(f"  parity OK: {report.parity.summary()}", highlight=False, soft_wrap=True)
    reduced = None
    if request.reduced:  # the verified FP32 file becomes the precision's file, or nothing stays under --out
        reduced = reduce_exported(out, request, parity_inputs)
        _print_precision(reduced)
    lint_reports = _lint_written(out, trt_version)
    trt = None
    if format == "trt":
        import torch

        with torch.cuda.device(torch.device(device or "cuda")):
            trt = export_trt(out, out.with_suffix(".engine"), parity_images=parity_files, gate=request.gate)
        console.print(f"TensorRT {trt.precision}: {trt.engine} (sidecar {trt.sidecar})", highlight=False, soft_wrap=True)
        if trt.parity is not None:
            console.print(f"  parity: {trt.parity.summary()}", highlight=False, soft_wrap=True)
        if trt.gate is not None:
            console.print(f"  AP gate passed: engine {trt.gate.summary('ONNX')}", highlight=False, soft_wrap=True)
    if json_out is not None:
        from detnas.jsonout import write_document

        write_document(json_out, "detnas.export/2", {
            "onnx": report.to_dict(), "precision": reduced.to_dict() if reduced else None,
            "lint": [lint.to_dict() for lint in lint_reports], "tensorrt": trt.to_dict() if trt else None})


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


ONNX_LINT_NOTE_VERSIONS = ("10.3", "11")


def _lint_written(out: Path, trt_version: str | None) -> list[LintReport]:
    """Lint the written ONNX file: refuse (one line, exit 2) before an engine build for the installed TensorRT;
    otherwise note the result for the current parsers. Returns the reports."""
    from detnas.export.trt_lint import lint, refuse_if_rejected

    if trt_version is not None:
        report = refuse_if_rejected(out, trt_version)
        console.print(f"  TensorRT {trt_version} parser lint: {report.summary()}", markup=False, highlight=False)
        return [report]
    reports = lint(out, ONNX_LINT_NOTE_VERSIONS)
    for report in reports:
        first = f"; first: {report.findings[0].line()} (all: detnas export check {out})" if report.findings else ""
        console.print(f"  note: TensorRT {report.version} parser lint {report.summary()}{first}", markup=False,
                      highlight=False, soft_wrap=True)
    return reports


@dataclass(frozen=True)
class BnData:
    """`--bn-ann/--bn-images/--bn-count/--bn-batch`: training images a supernet path's BN statistics come from."""

    ann: Path | None
    images: Path | None
    count: int
    batch: int


def _export_source(weights: Path | None, arch: str | None, random_init: bool, detector: str | None,
                   num_classes: int | None, proposals: int, bn: BnData | None = None) -> tuple[ExportSource, dict]:
    """(the detector to export, its checkpoint sidecar or {} for --random-init)."""
    from detnas.arch import resolve_arch
    from detnas.checkpoint import load_meta
    from detnas.detection import DETECTOR_KINDS
    from detnas.errors import DetnasError
    from detnas.export.source import load_export_source, random_init_source

    if not random_init:
        if weights is None:
            raise DetnasError("--weights: pass a detection checkpoint, or --arch NAME --random-init for an untrained "
                              "detector")
        if detector is not None or num_classes is not None:
            raise DetnasError("--detector / --num-classes go with --random-init; a checkpoint names its own")
        meta = load_meta(weights)
        if meta.get("kind") == "supernet-det" and arch is not None:
            return _recalibrated_path(weights, resolve_arch(arch), proposals, bn, meta), meta
        if bn is not None:
            raise DetnasError(f"--bn-ann / --bn-images: {weights} is a {meta.get('kind')} checkpoint whose BN "
                              "statistics are its own; they re-estimate a supernet path's only, drop them")
        return load_export_source(weights, resolve_arch(arch) if arch else None, proposals), meta
    if weights is not None:
        raise DetnasError("--weights and --random-init exclude each other: drop one")
    if arch is None:
        raise DetnasError("--random-init needs --arch NAME (a released name, arch file or inline JSON)")
    kind = detector or "fpn"
    if kind not in DETECTOR_KINDS:
        raise DetnasError(f"--detector {kind}: choose one of {', '.join(DETECTOR_KINDS)}")
    return random_init_source(resolve_arch(arch), kind, 80 if num_classes is None else num_classes, proposals), {}


def _recalibrated_path(weights: Path, arch: Any, proposals: int, bn: BnData | None, meta: dict) -> ExportSource:
    """A supernet path as the search scored it: materialised, BN statistics re-estimated on the training images."""
    from detnas.errors import DetnasError
    from detnas.export.source import detector_source
    from detnas.search.evaluators import recalibrated_path

    if bn is None or bn.ann is None or bn.images is None:
        raise DetnasError(f"--arch on the supernet {weights}: its BN statistics mix every path, so the file would not "
                          "be the detector the search scored; pass --bn-ann JSON --bn-images DIR (the supernet-training "
                          "split the search used) or export a retrained child checkpoint")
    return detector_source(recalibrated_path(weights, arch, bn.ann, bn.images, bn.count, bn.batch, proposals), meta)


def _seeded_images(count: int, height: int, width: int) -> list[Any]:
    """Seeded random uint8 images at the model size: inputs for the pre-NMS parity of an untrained detector."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator) for _ in range(count)]


def _print_precision(report: Any) -> None:
    from detnas.export.precision import report_path

    info = report.info
    cut = f" {info.calib_percentile:g}" if info.calib_percentile is not None else ""
    calibrated = f", {info.calib_method}{cut} ranges from {info.calib_images} images" if info.calib_method else ""
    console.print(f"{info.precision.upper()}: {report.path} (converted in {report.convert_seconds:.1f} s{calibrated}; "
                  f"report {report_path(report.path).name})", highlight=False, soft_wrap=True)
    if report.parity is not None:
        console.print(f"  parity OK: {report.parity.summary()}", highlight=False, soft_wrap=True)
    if report.gate is not None:
        console.print(f"  AP gate OK: {report.gate.summary()}", highlight=False, soft_wrap=True)


def _default_size(meta: dict) -> tuple[int, int]:
    """A square input that holds the checkpoint's long side, rounded up to the FPN's stride of 32."""
    from detnas.sizes import checkpoint_sizes

    side = 32 * math.ceil(checkpoint_sizes(meta)[1] / 32)
    return side, side


def predict_cmd(
    model: Annotated[Path, option("model")],
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG / PNG).")],
    out: Annotated[Path, typer.Option(help="Folder for the drawn images and results.json.")],
    draw_thresh: Annotated[float, typer.Option(help="Draw boxes with at least this score.")] = 0.3,
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
