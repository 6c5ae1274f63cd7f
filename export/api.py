"""The export road as one Python call: `run_export(ExportRequest) -> ExportOutcome`.

A detector (a checkpoint, a supernet path with its BN statistics re-estimated, or an untrained one) is exported to
ONNX with NMS inside and checked against PyTorch, optionally reduced to FP16 / INT8 and gated, linted for
TensorRT's ONNX parser, optionally built into a TensorRT engine, and described as JSON. `detnas export` fills the
request from its options; the main job and the artifact table call the same function, so every road exports,
calibrates and checks the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from detnas.detection.recalibrate import BN_BATCH, BN_IMAGES
from detnas.errors import DetnasError
from detnas.export.parity import BOX_TOL, MIN_DETECTIONS, SCORE_TOL
from detnas.search_settings import SearchSettings
from detnas.sizes import DEFAULT_MAX_SIZE

if TYPE_CHECKING:
    import torch

    from detnas.arch import Arch
    from detnas.checkpoint import CheckpointMeta
    from detnas.export.onnx_export import ExportReport
    from detnas.export.precision import PrecisionReport, PrecisionRequest
    from detnas.export.scored import ScoredCheck, ScoredOptions
    from detnas.export.source import ExportSource
    from detnas.export.trt import TrtReport
    from detnas.export.trt_lint import LintReport

logger = logging.getLogger(__name__)
PARITY_IMAGES = 4  # real images of a parity folder compared (ONNX Runtime vs PyTorch)
SEARCH_PARITY_IMAGES = 16  # a search winner's parity on its search-validation folder (a trained detector: few boxes)
ONNX_LINT_NOTE_VERSIONS = ("10.3", "11")  # the parsers an ONNX-only export is linted for, as a note
EXPORT_SCHEMA = "detnas.export/2"


@dataclass(frozen=True)
class BnData:
    """`--bn-ann/--bn-images/--bn-count/--bn-batch`: training images a supernet path's BN statistics come from
    (count and batch: None takes the search's from a best_arch.json, else BN_IMAGES / BN_BATCH)."""

    ann: Path | None
    images: Path | None
    count: int | None = None
    batch: int | None = None


@dataclass(frozen=True)
class SourceOptions:
    """What is exported: a checkpoint (`weights`, with `arch` for a supernet path and `bn` to re-estimate its BN
    statistics), or with `random_init` an untrained detector of `arch`."""

    weights: Path | None = None
    arch: str | None = None
    bn: BnData | None = None
    random_init: bool = False
    detector: str | None = None  # --random-init: the detector kind (default fpn)
    num_classes: int | None = None  # --random-init: object classes K (default 80)
    proposals: int | None = None  # FPN: RPN proposals per image at test time (None: the search's, else 1000)
    min_size: int | None = None  # a supernet path's BN images are resized as the search resized them
    max_size: int | None = None

    def search_settings(self) -> SearchSettings | None:
        """The settings of the search that scored `arch` when it is a best_arch.json and a supernet path is
        exported from it (not a child checkpoint, whose BN statistics and sizes are its own)."""
        from detnas.checkpoint import read_checkpoint_meta
        from detnas.search_settings import read_search_settings

        settings = None if self.random_init or self.arch is None else read_search_settings(self.arch)
        if settings is None or (self.weights is not None and read_checkpoint_meta(self.weights).kind != "supernet-det"):
            return None
        return settings

    def validate(self) -> None:
        """The refusals the options alone decide (a checkpoint's kind is checked when it is read)."""
        if self.random_init:
            if self.weights is not None:
                raise DetnasError("--weights and --random-init exclude each other: drop one")
            if self.arch is None:
                raise DetnasError("--random-init needs --arch NAME (a released name, arch file or inline JSON)")
            return
        if self.weights is None:
            raise DetnasError("--weights: pass a detection checkpoint, or --arch NAME --random-init for an untrained "
                              "detector")
        if self.detector is not None or self.num_classes is not None:
            raise DetnasError("--detector / --num-classes go with --random-init; a checkpoint names its own")

    def load(self) -> tuple[ExportSource, CheckpointMeta | None]:
        """(the detector to export, its checkpoint sidecar or None for --random-init)."""
        from detnas.arch import resolve_arch
        from detnas.checkpoint import read_checkpoint_meta
        from detnas.detection import DETECTOR_KINDS
        from detnas.export.source import load_export_source, random_init_source

        if self.random_init:
            kind = self.detector or "fpn"
            if kind not in DETECTOR_KINDS:
                raise DetnasError(f"--detector {kind}: choose one of {', '.join(DETECTOR_KINDS)}")
            classes = 80 if self.num_classes is None else self.num_classes
            return random_init_source(resolve_arch(self.arch), kind, classes, self.proposals), None
        assert self.weights is not None  # validate() refused the rest
        meta = read_checkpoint_meta(self.weights)
        if meta.kind == "supernet-det" and self.arch is not None:
            return self._recalibrated_path(resolve_arch(self.arch), meta), meta
        if self.bn is not None and (self.bn.ann is not None or self.bn.images is not None):  # a lone count: unused
            raise DetnasError(f"--bn-ann / --bn-images: {self.weights} is a {meta.kind} checkpoint whose BN "
                              "statistics are its own; they re-estimate a supernet path's only, drop them")
        return load_export_source(self.weights, resolve_arch(self.arch) if self.arch else None, self.proposals), meta

    def _recalibrated_path(self, arch: Any, meta: CheckpointMeta) -> ExportSource:
        """A supernet path as the search scored it: materialised, BN statistics re-estimated on the training images."""
        from detnas.detection.recalibrate import recalibrated_path
        from detnas.export.source import detector_source

        bn = self.bn
        if bn is None or bn.ann is None or bn.images is None:
            raise DetnasError(f"--arch on the supernet {self.weights}: its BN statistics mix every path, so the file "
                              "would not be the detector the search scored; pass --bn-ann JSON --bn-images DIR (the "
                              "supernet-training split the search used) or export a retrained child checkpoint")
        return detector_source(recalibrated_path(self.weights, arch, bn.ann, bn.images,
                                                 BN_IMAGES if bn.count is None else bn.count,
                                                 BN_BATCH if bn.batch is None else bn.batch, self.proposals,
                                                 self.min_size, self.max_size), meta)


@dataclass(frozen=True)
class GraphOptions:
    """The exported graph: input size (default: the checkpoint's long side rounded up to 32, square; an elastic
    path's input-size gene scales it, `default_size`), batch, and the post-processing baked in."""

    size: tuple[int, int] | None = None
    batch: int = 1
    dynamic_batch: bool = False
    max_detections: int = 100
    score_thresh: float | None = None
    nms_thresh: float | None = None
    simplify: bool = True


@dataclass(frozen=True)
class ParityOptions:
    """ONNX Runtime against PyTorch on real images: a folder (its first `count` images) or the files themselves."""

    images: Path | tuple[Path, ...] | None = None
    check: bool = True
    count: int = PARITY_IMAGES
    box_tol: float = BOX_TOL
    score_tol: float = SCORE_TOL
    min_detections: int = MIN_DETECTIONS

    def files(self) -> list[Path]:
        from detnas.images import image_files

        if not self.check or self.images is None:
            return []
        files = list(self.images) if isinstance(self.images, tuple) else image_files(self.images)
        return files[:self.count]


@dataclass(frozen=True)
class PrecisionOptions:
    """The precision of the written file (fp16 / int8 are made from the verified FP32 export), INT8 calibration,
    and the AP gate of the reduced file (and of the engine) against FP32."""

    precision: str | None = None  # None: the precision the search timed (best_arch.json), else fp32
    calib_images: Path | None = None  # default: the training split the checkpoint's run records
    calib_count: int | None = None  # INT8 only (default CALIB_COUNT); given for another precision: refused
    calib_method: str | None = None  # INT8 only (default DEFAULT_CALIB_METHOD); given for another precision: refused
    gate_ann: Path | None = None
    gate_images: Path | None = None
    max_ap_drop: float = 0.01

    def request(self, weights: Path, dynamic_batch: bool = False) -> PrecisionRequest:
        """Validated, with the calibration images read (before any export work)."""
        from detnas.export.precision import precision_request

        return precision_request(self.precision or "fp32", weights=weights, calib_data=self.calib_images,
                                 calib_images=self.calib_count, calib_method=self.calib_method,
                                 gate_data=self.gate_ann, gate_images=self.gate_images, max_ap_drop=self.max_ap_drop,
                                 dynamic_batch=dynamic_batch)


@dataclass(frozen=True)
class EngineOptions:
    """`onnx` writes the ONNX file; `trt` also builds and checks a TensorRT engine next to it on `device`."""

    format: Literal["onnx", "trt"] = "onnx"
    device: str | None = None  # the engine's GPU (default cuda); the ONNX export itself runs on the CPU
    tf32: bool = False  # let the engine's FP32 layers run in TF32 (judged with FP16's parity bounds)


@dataclass(frozen=True)
class ExportRequest:
    """Everything `detnas export` asks for, in groups; `validate` holds the refusals that compare options."""

    out: Path | None
    source: SourceOptions
    graph: GraphOptions = GraphOptions()
    parity: ParityOptions = ParityOptions()
    precision: PrecisionOptions = PrecisionOptions()
    engine: EngineOptions = EngineOptions()
    json_out: Path | None = None  # the outcome as JSON (schema detnas.export/2)
    search_check: bool = True  # a search winner: compare the file's AP on the search-validation split with the journal

    def validate(self) -> None:
        """One line naming the options, before anything is read or written."""
        engine, precision = self.engine, self.precision
        if engine.format == "onnx" and engine.device not in (None, "cpu"):
            raise DetnasError(f"--device {engine.device}: the ONNX export traces and checks parity on the CPU; a GPU "
                              "device goes with --format trt")
        if engine.format == "trt" and engine.device == "cpu":
            raise DetnasError("--device cpu: a TensorRT engine is built on a GPU; pass --device cuda or cuda:N")
        if self.out is None or self.out.suffix != ".onnx":
            raise DetnasError(f"--out{f' {self.out}' if self.out else ''}: give the ONNX file name ending in .onnx (the "
                              "engine goes next to it)")
        if engine.format == "trt":
            from detnas.export.trt import check_trt_request

            check_trt_request(self.graph.dynamic_batch)
        if (precision.gate_ann is None) != (precision.gate_images is None):
            raise DetnasError("--gate-ann and --gate-images go together (COCO json and its image folder)")
        if self.parity.images is None and self.parity.check and not self.source.random_init:
            raise DetnasError("pass --parity-images DIR (real images for the ONNX Runtime vs PyTorch check) or "
                              "--no-parity")
        if precision.gate_ann is not None and precision.precision in (None, "fp32") and engine.format == "onnx":
            raise DetnasError("--gate-ann: an FP32 ONNX export has nothing to gate (it is the reference); the AP gate "
                              "judges a --precision fp16/int8 file or a --format trt engine")
        self.source.validate()


@dataclass
class ExportOutcome:
    """What `run_export` wrote and proved: the ONNX export, the precision's file, the lint, the engine."""

    onnx: ExportReport
    precision: PrecisionReport | None = None
    lint: list[LintReport] = field(default_factory=list)
    tensorrt: TrtReport | None = None
    search: SearchedExport | None = None  # exported from a search's best_arch.json: its settings and the AP check

    @property
    def path(self) -> Path:
        """The written ONNX file (the precision's, when one was asked for)."""
        return self.precision.path if self.precision is not None else self.onnx.path

    def to_dict(self) -> dict[str, Any]:
        """The detnas.export/2 document (docs/json.md)."""
        return {"onnx": self.onnx.to_dict(), "precision": self.precision.to_dict() if self.precision else None,
                "lint": [lint.to_dict() for lint in self.lint],
                "tensorrt": self.tensorrt.to_dict() if self.tensorrt else None,
                "search": self.search.to_dict() if self.search else None}


def run_export(request: ExportRequest) -> ExportOutcome:
    """Export, check and describe one detector as `request` asks, one line per finished step to this module's logger
    (the CLI prints them). Bad input is refused (one line) before anything is written; a failed check leaves nothing
    under `out`."""
    from detnas.export.onnx_export import check_size, export_onnx
    from detnas.export.precision import report_path, stage_precision
    from detnas.images import read_image
    from detnas.io import check_outputs, make_dir, publish, remove_stale_temps, temp_dir
    from detnas.lock import output_lock

    settings = request.source.search_settings()
    scored = None
    if settings is not None:
        request, scored = from_search(request, settings)
    request.validate()
    out, graph, parity = request.out, request.graph, request.parity
    assert out is not None  # validate() refused the rest
    check_outputs(("--out", out), ("--json", request.json_out))  # before the work, not after it
    trt_version = None
    if request.engine.format == "trt":
        from detnas.bench.backends.trt_backend import require_tensorrt

        trt_version = require_tensorrt().__version__  # before the ONNX export: without TensorRT nothing is written
    precision = request.precision.request(request.source.weights, graph.dynamic_batch)
    source, meta = request.source.load()
    if graph.size is not None:
        check_size(graph.size)
    height, width = graph.size or default_size(meta.sizes()[1] if meta else DEFAULT_MAX_SIZE, source.arch)
    parity_files = parity.files()
    parity_inputs = [read_image(f) for f in parity_files]
    if request.source.random_init and parity.check and not parity_inputs:
        parity_inputs = seeded_images(1 if graph.dynamic_batch else graph.batch, height, width)
    remove_stale_temps(out.parent)  # what killed exports left: scratch folders, half-written files
    with output_lock(out, folder=False, log=logger.info), temp_dir(out) as stage:
        # everything is built and checked in `stage`; --out and its report change only once all of it passed
        report = export_onnx(source.detector, source.arch, source.classes, (height, width), stage / out.name,
                             kind=source.detector_kind, pixels=source.pixels, batch=graph.batch,
                             dynamic_batch=graph.dynamic_batch, max_detections=graph.max_detections,
                             score_thresh=graph.score_thresh, nms_thresh=graph.nms_thresh, parity_images=parity_inputs,
                             simplify=graph.simplify, box_tol=parity.box_tol, score_tol=parity.score_tol,
                             # random weights leave few detections: parity rests on the head outputs before NMS
                             min_detections=0 if request.source.random_init else parity.min_detections)
        fp32, staged, sidecar = report.path, report.path, None
        outcome = ExportOutcome(report)
        if settings is not None and scored is not None:  # the FP32 file against the journal, before --out changes
            outcome.search = searched_check(fp32, settings, scored, request.search_check, shown=out)
        if precision.reduced:  # the precision's file replaces the FP32 one as what --out receives
            staged, sidecar, outcome.precision = stage_precision(fp32, make_dir(stage / "reduced"), out, precision,
                                                                 parity_inputs)
        # the checked file ships before the TensorRT lint: a refused engine build keeps the ONNX file (ORT runs it)
        publish((staged, out), [(sidecar, report_path(out))])  # an FP32 file keeps no older file's report
        report.path = out
        lint_lines: list[str] = []  # said after the lines of the steps before it
        outcome.lint = _lint_written(out, trt_version, lint_lines.append, shown=out)
        logger.info(f"ONNX: {out}  input {list(report.meta.input.shape())}"
            f"{' (dynamic batch)' if graph.dynamic_batch else ''}, {report.nodes} nodes, traced in "
            f"{report.export_seconds:.1f} s")
        for note in report.notes:
            logger.info(f"  {note}")
        if report.parity is not None:
            logger.info(f"  parity OK: {report.parity.summary()}")
        if outcome.search is not None:
            logger.info(f"  {outcome.search.check.summary()}")
        if outcome.precision is not None:
            for line in precision_lines(outcome.precision):
                logger.info(line)
        for line in lint_lines:
            logger.info(line)
        if request.engine.format == "trt":  # judged against the FP32 export, still in `stage`
            outcome.tensorrt = _build_engine(out, request.engine, parity_files, precision,
                                             fp32 if precision.reduced else None)
    if request.json_out is not None:
        from detnas.jsonout import write_document

        write_document(request.json_out, EXPORT_SCHEMA, outcome.to_dict())
    return outcome


@dataclass
class SearchedExport:
    """A search winner's export: the settings it took from best_arch.json, the notes on options that differ, and
    the file's metric on the search-validation split beside the journal's."""

    settings: SearchSettings
    notes: tuple[str, ...]
    check: ScoredCheck

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "notes": list(self.notes), "ap": self.check.to_dict()}


def from_search(request: ExportRequest, settings: SearchSettings) -> tuple[ExportRequest, ScoredOptions]:
    """`request` with every option left out taken from the search that scored its best_arch.json (weights, BN split,
    count and batch, sizes, proposals, timed size and precision; parity on its search-validation images), saying
    which (to this module's logger), and one note per given option that differs."""
    from dataclasses import replace

    from detnas.arch import resolve_arch
    from detnas.export.scored import scored_options

    source, bn = request.source, request.source.bn or BnData(None, None)
    scored = scored_options(settings, str(source.arch), weights=source.weights, bn_ann=bn.ann, bn_images=bn.images,
                            bn_count=bn.count, bn_batch=bn.batch, proposals=source.proposals, size=request.graph.size,
                            precision=request.precision.precision, arch=resolve_arch(str(source.arch)))
    logger.info(f"from the search ({source.arch}):")
    for line in (*settings.lines(), *scored.notes):
        logger.info(f"  {line}")
    parity = request.parity
    if parity.check and parity.images is None:  # the search-validation folder; more images, so enough detections
        parity = replace(parity, images=Path(settings.val_images), count=max(parity.count, SEARCH_PARITY_IMAGES))
    source = replace(source, weights=scored.weights, proposals=scored.proposals, min_size=scored.min_size,
                     max_size=scored.max_size,
                     bn=BnData(scored.bn_ann, scored.bn_images, scored.bn_count, scored.bn_batch))
    return replace(request, source=source, graph=replace(request.graph, size=scored.size), parity=parity,
                   precision=replace(request.precision, precision=scored.precision)), scored


def searched_check(model: Path, settings: SearchSettings, scored: ScoredOptions, check: bool,
                   shown: Path) -> SearchedExport:
    """The exported FP32 file's metric on the search-validation split against the journal's; a faithful export
    outside the tolerance is refused (the staged `model` removed, nothing published to `shown`)."""
    from detnas.export.scored import ScoredCheck, check_scored_ap

    result = (check_scored_ap(model, settings, scored.faithful) if check else
              ScoredCheck(settings.metric, settings.scored.get(settings.metric), faithful=scored.faithful,
                          skipped="--no-search-check"))
    result.refuse_if_failed(model, shown)
    return SearchedExport(settings, scored.notes, result)


def _build_engine(out: Path, options: EngineOptions, parity_files: Sequence[Path], precision: PrecisionRequest,
                  fp32_reference: Path | None) -> TrtReport:
    """The engine of the file at `out`, judged against the FP32 export (`fp32_reference`, kept aside while a
    reduced file took its name; None: `out` is the FP32 file)."""
    import torch

    from detnas.export.trt import export_trt

    with torch.cuda.device(torch.device(options.device or "cuda")):
        trt = export_trt(out, out.with_suffix(".engine"), parity_images=parity_files, gate=precision.gate,
                         reference=fp32_reference, tf32=options.tf32)
    logger.info(f"TensorRT {trt.precision}{' (TF32)' if trt.tf32 else ''}: {trt.engine} (sidecar {trt.sidecar})")
    if trt.parity is not None:
        logger.info(f"  parity OK: {trt.parity.summary()}")
    if trt.gate is not None:
        logger.info(f"  AP gate OK: engine {trt.gate.summary('FP32 ONNX')}")
    return trt


def _lint_written(out: Path, trt_version: str | None, say: Callable[[str], None], shown: Path) -> list[LintReport]:
    """Lint the ONNX file at `out` (to be published as `shown`): refuse (one line, exit 2) before an engine build
    for the installed TensorRT; otherwise note the result for the current parsers. Returns the reports."""
    from detnas.export.trt_lint import lint, refuse_if_rejected

    if trt_version is not None:
        report = refuse_if_rejected(out, trt_version, shown)
        say(f"  TensorRT {trt_version} parser lint: {report.summary()}")
        return [report]
    reports = lint(out, ONNX_LINT_NOTE_VERSIONS)
    for report in reports:
        first = f"; first: {report.findings[0].line()} (all: detnas export check {shown})" if report.findings else ""
        say(f"  note: TensorRT {report.version} parser lint {report.summary()}{first}")
    return reports


def precision_lines(report: PrecisionReport) -> list[str]:
    """What a reduced-precision file is, how it was calibrated and what it passed, one line each."""
    from detnas.export.precision import report_path

    info = report.info
    cut = f" {info.calib_percentile:g}" if info.calib_percentile is not None else ""
    calibrated = f", {info.calib_method}{cut} ranges from {info.calib_images} images" if info.calib_method else ""
    lines = [f"{info.precision.upper()}: {report.path} (converted in {report.convert_seconds:.1f} s{calibrated}; "
             f"report {report_path(report.path).name})"]
    if report.parity is not None:
        lines.append(f"  parity OK: {report.parity.summary()}")
    if report.gate is not None:
        lines.append(f"  AP gate OK: {report.gate.summary()}")
    return lines


def seeded_images(count: int, height: int, width: int) -> list[torch.Tensor]:
    """Seeded random uint8 images at the model size: inputs for the pre-NMS parity of an untrained detector."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator) for _ in range(count)]


def default_size(long_side: int, arch: Arch | None = None) -> tuple[int, int]:
    """A square input that holds the checkpoint's long side (`CheckpointMeta.sizes`), rounded up to the FPN's stride
    of 32; an elastic path runs at its input-size gene's share of it (`detnas.sizes.path_hw`), the size its detector
    resizes to and the search timed and scored it at."""
    from detnas.sizes import path_hw

    side = 32 * math.ceil(long_side / 32)
    if arch is not None and arch.detector is not None:
        return path_hw(arch.detector.input_size, (side, side))
    return side, side
