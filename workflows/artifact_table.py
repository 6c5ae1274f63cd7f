"""`detnas bench table`: which artifact of one trained detector to ship (a workflow: it composes export's
conversions and runtimes with bench's latency oracle).

Each artifact (the PyTorch eager twin of the exported graph, ONNX files at their precisions, TensorRT engines) gets
its COCO AP on one annotation set, its latency (median and p90 on real images at the model's input, post-processing
and NMS inside), images/s and file size, next to the environment fingerprint the latencies belong to. Every row
runs the same letterboxed inputs through the same pre- and post-processing, so the differences are the runtime's
and the precision's alone. FP16 / INT8 files are produced from the FP32 file with `detnas export`'s conversion
when asked and not present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from detnas.bench.fingerprint import Fingerprint
from detnas.bench.oracle import DEFAULT_PROTOCOL, TimingProtocol, measure_engine, measure_module, measure_onnx
from detnas.bench.result import PRECISIONS, LatencyResult, Scope
from detnas.errors import DetnasError
from detnas.export.metadata import ModelMeta
from detnas.progress import track


@dataclass(frozen=True)
class ArtifactRow:
    """One artifact measured: AP / AP50 as fractions, latency in ms per batch, `produced` if converted here."""

    artifact: str
    path: str
    runtime: str
    precision: str
    file_mb: float
    ap: float
    ap50: float
    median_ms: float
    p90_ms: float
    cv: float
    images_per_s: float
    produced: bool
    transfers: str  # host<->device copies in each timed run (none / timed / untimed)


@dataclass(frozen=True)
class ArtifactTable:
    """The rows with what they were measured on and under; `--json` and the Markdown table both come from it."""

    SCHEMA: ClassVar[str] = "detnas.bench.table/1"
    detector: str
    arch_hash: str
    data: str
    images: int
    input_shape: tuple[int, ...]
    scope: str
    protocol: dict[str, Any]
    fingerprint: Fingerprint
    rows: tuple[ArtifactRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "arch_hash": self.arch_hash, "data": self.data, "images": self.images,
                "input_shape": list(self.input_shape), "scope": self.scope, "protocol": self.protocol,
                "fingerprint": self.fingerprint.to_dict(), "fingerprint_hash": self.fingerprint.hash,
                "rows": [asdict(r) for r in self.rows]}

    def header(self) -> tuple[str, ...]:
        return ("artifact", "precision", "runtime", "AP", "AP50", "median ms", "p90 ms", "images/s", "MB", "copies")

    def cells(self) -> list[tuple[str, ...]]:
        """The rows as the printed / Markdown table shows them (AP in %, as papers report it)."""
        return [(r.artifact + (" (produced)" if r.produced else ""), r.precision, r.runtime, f"{100 * r.ap:.1f}",
                 f"{100 * r.ap50:.1f}", f"{r.median_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.images_per_s:.1f}",
                 f"{r.file_mb:.2f}", r.transfers) for r in self.rows]

    def caption(self) -> str:
        fp, p = self.fingerprint, self.protocol
        return (f"{self.detector} detector, arch {self.arch_hash}; COCO AP on {self.data} ({self.images} images); "
                f"latency of input {'x'.join(map(str, self.input_shape))} at scope {self.scope}, {p['runs']} runs after "
                f"{p['warmup']} warm-up, {p['threads']} thread(s), {p['device']}; device {fp.device}, "
                f"ORT {fp.onnxruntime}, torch {fp.torch}, TensorRT {fp.tensorrt}; fingerprint {fp.hash}"
                + self.mixed_transfers())

    def mixed_transfers(self) -> str:
        """A warning when the rows' timings differ in whether host<->device copies are inside them, else ''."""
        kinds = sorted({r.transfers for r in self.rows})
        return "" if len(kinds) < 2 else (f"; NOT LIKE FOR LIKE: host<->device copies are {' / '.join(kinds)} "
                                          "across rows (column 'copies')")

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header()) + " |", "|" + "|".join("---" for _ in self.header()) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in self.cells()]
        return "\n".join(lines) + f"\n\n{self.caption()}\n"


@dataclass(frozen=True)
class Artifact:
    """A file to put in the table (for the eager twin: its checkpoint)."""

    name: str
    path: Path
    runtime: str
    precision: str
    produced: bool = False


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def converted_path(fp32_onnx: Path, precision: str) -> Path:
    """Where the table's conversion of the FP32 file to `precision` lives (and is reused from)."""
    return fp32_onnx.with_name(f"{fp32_onnx.stem}.{precision}.onnx")


def produce(fp32_onnx: Path, precision: str, weights: Path | None, calib_data: Path | None,
            calib_images: int | None, evaluated: tuple[Path, Path] | None = None) -> tuple[Path, bool]:
    """`<stem>.<precision>.onnx` next to the FP32 file: reused when present, else converted as `detnas export
    --precision` does, with its options' defaults (INT8 calibrates on --calib-images, else on the checkpoint's
    training split). `evaluated` (COCO json, image folder): the images the table scores, which no calibration image
    may be (by name or content), or the INT8 row's AP would be measured on its own ranges."""
    from detnas.bench.backends.trt_backend import onnx_precision
    from detnas.export.api import PrecisionOptions
    from detnas.export.precision import Gate, write_precision
    from detnas.export.precision.request import evaluated_files
    from detnas.images import shared_images

    target = converted_path(fp32_onnx, precision)
    if target.is_file():
        if onnx_precision(target) != precision:
            raise DetnasError(f"{target}: present but not a {precision} file; remove it to have it converted again")
        return target, False
    if weights is None and calib_data is None and precision == "int8":
        raise DetnasError("--convert int8 needs calibration images: pass --calib-images DIR or --weights CKPT of a run")
    # `detnas export`'s precision options, defaults included (the INT8 range method): one conversion, one result
    calibrated = precision == "int8"  # the calibration options belong to INT8 alone
    request = PrecisionOptions(precision, calib_images=calib_data if calibrated else None,
                               calib_count=calib_images if calibrated else None).request(weights or fp32_onnx)
    if request.calibration is not None and evaluated is not None:
        ann, images = evaluated
        if overlap := shared_images(list(request.calibration.files), evaluated_files(Gate(ann, images, 0.0))):
            raise DetnasError(f"--calib-images: {len(overlap)} calibration images (e.g. {overlap[0].name}) are images "
                              f"of --ann {ann} the table scores (same file name or content); calibrate on training "
                              "images")
    write_precision(fp32_onnx, target, request)
    return target, True


def build_table(onnx_files: Sequence[Path], *, data: Path, images: Path, weights: Path | None = None,
                engines: Sequence[Path] = (), convert: Sequence[str] = (), calib_data: Path | None = None,
                calib_images: int | None = None, proposals: int | None = None, max_images: int | None = None,
                batch_size: int = 4, protocol: TimingProtocol = DEFAULT_PROTOCOL, latency_images: int = 16) -> ArtifactTable:
    """Measure every artifact of one detector. `onnx_files` must include its FP32 export (the reference for the
    eager twin, the conversions and the input shape); `weights` adds the PyTorch eager row, and must be the
    checkpoint of the detector the files hold. `calib_data` / `calib_images` (None: the defaults) serve an INT8
    conversion made here and are refused without one."""
    from detnas.bench.backends.trt_backend import onnx_precision
    from detnas.bench.inputs import image_batches
    from detnas.export.runtime import evaluate_exported, read_onnx_meta

    for precision in convert:
        if precision not in PRECISIONS[1:]:
            raise DetnasError(f"--convert {precision}: choose one of {', '.join(PRECISIONS[1:])}")
    artifacts = [Artifact(f"ONNX {onnx_precision(p).upper()}", Path(p), "onnxruntime", onnx_precision(p))
                 for p in onnx_files]
    fp32 = [a.path for a in artifacts if a.precision == "fp32"]
    if not fp32:
        raise DetnasError("--model: give the FP32 export of the detector (the reference for the other rows)")
    meta = read_onnx_meta(fp32[0])
    if weights is not None:
        _check_weights(weights, meta, fp32[0])
    _check_calibration_used(fp32[0], convert, [a for a in artifacts if a.precision == "int8"], calib_data, calib_images)
    engine_rows = [Artifact("TensorRT", Path(e), "tensorrt", _engine_precision(Path(e))) for e in engines]
    for artifact in artifacts + engine_rows:  # the files given, before any conversion
        _check_same_detector(artifact, meta, fp32[0])
    for precision in convert:
        if precision not in {a.precision for a in artifacts}:
            path, produced = produce(fp32[0], precision, weights, calib_data, calib_images, (data, images))
            artifacts.append(Artifact(f"ONNX {precision.upper()}", path, "onnxruntime", precision, produced))
            _check_same_detector(artifacts[-1], meta, fp32[0])  # a reused converted file too
    artifacts += engine_rows

    batch = meta.input.batch or 1
    inputs = image_batches(images, batch, (meta.input.height, meta.input.width), limit=latency_images,
                           pixels=meta.pixels)
    kind = f"images from {images}"
    measured: list[tuple[Artifact, dict[str, float], LatencyResult]] = []
    if weights is not None:
        measured.append(_eager(weights, meta, fp32[0], proposals, inputs, kind, data, images, max_images, batch_size,
                               protocol))
    for artifact in track(artifacts, "table: evaluating and timing each artifact"):
        metrics, _ = evaluate_exported(artifact.path, data, images, max_images, batch_size)
        if artifact.runtime == "tensorrt":
            result = measure_engine(artifact.path, inputs, precision=artifact.precision, scope=Scope.NETWORK_NMS,
                                    protocol=protocol, input_kind=kind)
        else:
            result = measure_onnx(artifact.path, inputs, backend="ort", precision=artifact.precision,
                                  scope=Scope.NETWORK_NMS, protocol=protocol, input_kind=kind)
        measured.append((artifact, metrics, result))
    protocol_fields = {"warmup": protocol.warmup, "runs": protocol.runs, "threads": protocol.threads,
                       "device": protocol.device, "clock": protocol.clock, "input_batches": len(inputs)}
    return ArtifactTable(meta.detector, meta.arch.hash, str(data), int(measured[0][1]["images"]),
                         tuple(inputs[0].shape), Scope.NETWORK_NMS.value, protocol_fields, measured[0][2].fingerprint,
                         tuple(_row(*m) for m in measured))


def _check_same_detector(artifact: Artifact, meta: ModelMeta, fp32: Path) -> None:
    """Every row is an artifact of the detector the caption names: its own metadata (an engine's: its sidecar's)
    has the FP32 file's detector kind, classes, arch and input."""
    from detnas.export.metadata import export_difference
    from detnas.export.runtime import read_engine_meta, read_onnx_meta

    other = read_engine_meta(artifact.path) if artifact.runtime == "tensorrt" else read_onnx_meta(artifact.path)
    if (difference := export_difference(meta, other)) is not None:
        field, theirs, ours = difference
        raise DetnasError(f"{artifact.path}: another detector or input than {fp32}: {field} {theirs} vs {ours}; one "
                          "table compares the artifacts of one detector")


def _check_weights(weights: Path, meta: ModelMeta, fp32: Path) -> None:
    """The eager row is the checkpoint `fp32` was exported from: another detector's (kind, classes, arch) would add
    a row of its AP on these classes (0.0) under this detector's caption; refused before any work."""
    from detnas.checkpoint import read_checkpoint_meta
    from detnas.export.metadata import checkpoint_difference

    if (difference := checkpoint_difference(meta, read_checkpoint_meta(weights))) is not None:
        field, theirs, ours = difference
        raise DetnasError(f"--weights {weights} is another detector than {fp32}: {field} {theirs} vs {ours} in the ONNX "
                          f"file; pass the checkpoint {fp32.name} was exported from, or leave --weights out")


def _check_calibration_used(fp32: Path, convert: Sequence[str], given_int8: Sequence[Artifact],
                            calib_data: Path | None, calib_images: int | None) -> None:
    """Calibration options serve an INT8 file converted here; without one they would be silently ignored."""
    from detnas.export.precision.request import refuse_calibration_options

    if "int8" not in convert:
        why, fix = f"nothing is calibrated ({'--convert ' + ' '.join(convert) if convert else 'no --convert'})", \
            "add --convert int8"
    elif given_int8:
        why, fix = f"nothing is calibrated: the INT8 row is --model {given_int8[0].path}, used as it is", \
            f"leave it out of --model to have {fp32.name} converted"
    elif (present := converted_path(fp32, "int8")).is_file():
        why, fix = f"nothing is calibrated: the INT8 row is {present}, already converted and used as it is", \
            f"remove {present.name} to have it converted again"
    else:
        return
    refuse_calibration_options(calib_data, calib_images, why=why, fix=fix)


def _row(artifact: Artifact, metrics: dict[str, float], result: LatencyResult) -> ArtifactRow:
    s = result.stats
    return ArtifactRow(artifact.name, str(artifact.path), artifact.runtime, artifact.precision,
                       _size_mb(artifact.path), metrics["AP"], metrics["AP50"], s.median_ms, s.p90_ms,
                       s.cv, 1000 * result.batch / s.median_ms, artifact.produced, result.transfers)


def _eager(weights: Path, meta: ModelMeta, fp32: Path, proposals: int | None, inputs: list[torch.Tensor], kind: str,
           data: Path, images: Path, max_images: int | None, batch_size: int,
           protocol: TimingProtocol) -> tuple[Artifact, dict[str, float], LatencyResult]:
    """The checkpoint run in PyTorch as the exported graph (same thresholds, letterbox and outputs)."""
    from detnas.checkpoint import checkpoint_paths
    from detnas.export.onnx_export import deployable_like
    from detnas.export.runtime import Runner, evaluate_exported
    from detnas.export.source import load_export_source

    source = load_export_source(weights, meta.arch, proposals or meta.thresholds.get("rpn_proposals"))
    if source.arch.hash != meta.arch.hash:
        raise DetnasError(f"--weights {weights}: arch {source.arch.hash}, but {fp32} exports arch {meta.arch.hash}")
    module = deployable_like(source.detector, source.pixels, meta)

    def run(batch: Any) -> tuple[Any, ...]:
        with torch.inference_mode():
            return tuple(t.numpy() for t in module(torch.from_numpy(batch)))

    artifact = Artifact("PyTorch eager", checkpoint_paths(weights)[0], "pytorch", "fp32")
    metrics, _ = evaluate_exported(weights, data, images, max_images, batch_size, runner=Runner(meta, run, "pytorch eager"))
    result = measure_module(module, inputs, backend="torch", scope=Scope.NETWORK_NMS, protocol=protocol,
                            label=f"{Path(weights).name} (eager)", input_kind=kind)
    return artifact, metrics, result


def _engine_precision(engine: Path) -> str:
    from detnas.export.runtime import read_engine_meta

    return read_engine_meta(engine).precision.precision
