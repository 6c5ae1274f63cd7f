"""`export_onnx`: a trained detector -> one self-describing ONNX file, proven equal to PyTorch before it is kept.

The TorchScript exporter (`dynamo=False`) is used on purpose: the dynamo exporter fails on NMS's data-dependent
output size, while tracing maps the graph's NMS (`detnas.detection.nms`) to one ONNX NonMaxSuppression. Tracing
unrolls the per-image post-processing loop, so a fixed batch is exported as is, and `dynamic_batch` wraps the
batch-1 graph in an ONNX Loop over the images (`batch_loop`; ONNX Runtime only, TensorRT wants a fixed batch).
The file is written under a temporary name and only renamed into place after the checker and the parity check
pass; onnxslim's simplified graph is kept only if it passes parity too.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detnas.arch import Arch
from detnas.detection.deployable import OUTPUT_NAMES, DeployableDetector
from detnas.detection.kinds import kind_of
from detnas.errors import DetnasError
from detnas.export.head_parity import Captured, capture_hooks, compare_heads, onnx_head_outputs
from detnas.export.metadata import ClassInfo, InputSpec, ModelMeta, software_versions
from detnas.export.parity import BOX_TOL, MIN_DETECTIONS, SCORE_TOL, Detections, ParityReport, compare, rounding_tol
from detnas.export.preprocess import letterbox
from detnas.export.runtime import Runner, onnx_runner, run_images
from detnas.io import atomic_path, remove_stale_temps, temp_dir
from detnas.pixels import DEFAULT_PIXELS, PixelConvention
from detnas.progress import task
from detnas.sizes import check_side, parse_hw

OPSET = 17
OUTPUT_DOC = {
    "num_dets": "int64 [B]: valid detections per image",
    "boxes": "float32 [B, K, 4]: xyxy in model-input pixels, rows >= num_dets are 0",
    "scores": "float32 [B, K]: descending per image, rows >= num_dets are 0",
    "labels": "int64 [B, K]: contiguous labels 1..K_classes (see classes), rows >= num_dets are -1",
}


@dataclass
class ExportReport:
    """What `export_onnx` produced and proved."""

    path: Path
    meta: ModelMeta
    export_seconds: float
    simplified: bool
    nodes: int
    parity: ParityReport | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "export_seconds": self.export_seconds, "simplified": self.simplified,
                "nodes": self.nodes, "parity": self.parity.to_dict() if self.parity else None, "notes": self.notes,
                "input": list(self.meta.input.shape()), "dynamic_batch": self.meta.input.batch is None}


def parse_size(text: str) -> tuple[int, int]:
    """'320' or '320x480' -> (height, width), both positive multiples of 32 (the FPN's coarsest stride)."""
    return parse_hw(text, "--size", multiple=32)


def check_size(size: tuple[int, ...]) -> None:
    if len(size) != 2 or min(size) < 32 or any(s % 32 for s in size):
        raise DetnasError(f"--size {'x'.join(map(str, size))}: height and width must be positive multiples of 32 "
                          "(the detector's coarsest feature stride), e.g. 320x320 or 512x672")
    check_side(size, f"--size {'x'.join(map(str, size))}")


def _thresholds(detector: nn.Module, score_thresh: float | None, nms_thresh: float | None) -> dict[str, float]:
    """Apply requested thresholds to the torchvision detector and return the ones the graph will bake in."""
    heads = kind_of(detector).postprocessor(detector)
    if score_thresh is not None:
        if not 0.0 <= score_thresh < 1.0:
            raise DetnasError(f"--score-thresh {score_thresh}: a detection score threshold lies in [0, 1), e.g. 0.05")
        heads.score_thresh = float(score_thresh)
    if nms_thresh is not None:
        heads.nms_thresh = float(nms_thresh)
    return {"score": float(heads.score_thresh), "nms_iou": float(heads.nms_thresh)}


def torch_detections(module: DeployableDetector, inputs: list[torch.Tensor], batch: int,
                     dtype: torch.dtype = torch.float64) -> list[Detections]:
    """The PyTorch reference for parity: the same graph module, eager, on the same model inputs, by default in
    float64, i.e. the model's exact output, against which any float32 runtime is judged."""
    return _reference(module, inputs, batch, dtype, heads=False)[0]


def _reference(module: DeployableDetector, inputs: list[torch.Tensor], batch: int, dtype: torch.dtype = torch.float64,
               heads: bool = True) -> tuple[list[Detections], Captured]:
    """`torch_detections` plus, with `heads`, the head outputs before NMS (`head_parity`) of every full batch of
    `inputs` (none are recorded without: a pass that only sets tolerances keeps no copy of them)."""
    reference = copy.deepcopy(module).to(dtype)
    captured, remove = capture_hooks(reference) if heads else ({}, lambda: None)
    results = []
    try:
        with torch.inference_mode():
            for first in range(0, len(inputs), batch):
                before = {label: len(values) for label, values in captured.items()}
                chunk = inputs[first:first + batch]
                num, boxes, scores, labels = reference(torch.stack(chunk).to(dtype))
                if len(chunk) < batch:  # the runtime pads a partial batch with blank images: compare full ones only
                    for label, count in before.items():
                        del captured[label][count:]
                for i in range(num.shape[0]):
                    n = int(num[i])
                    results.append((boxes[i, :n].float().numpy(), scores[i, :n].float().numpy(),
                                    labels[i, :n].numpy()))
    finally:
        remove()
    return results, captured


def parity_tolerances(module: DeployableDetector, inputs: list[torch.Tensor], batch: int,
                      reference: list[Detections], box_tol: float, score_tol: float) -> tuple[float, float]:
    """The requested tolerances, raised to what float32 rounding can explain: `rounding_tol` of the largest box
    coordinate (scores: of 1), or twice PyTorch's own float32 error on these images where that is larger.

    Rounding moves a box coordinate in proportion to its magnitude (exp of a regressed delta times the box size):
    measured 6.6e-4 px (PyTorch fp32 vs fp64) and 1.7e-3 px (ONNX Runtime) at 160 px, so a fixed 1e-3 px bound
    failed faithful exports. `rounding_tol` allows ~1.2e-4 of the coordinate (0.02 px at 160 px); a changed op
    or weight moves boxes by pixels and a swapped class leaves detections unmatched whatever the tolerance.
    """
    own = compare(reference, torch_detections(module, inputs, batch, torch.float32), "PyTorch float64",
                  "PyTorch float32", box_tol=1.0, score_tol=1.0)
    largest = max((float(np.abs(boxes).max(initial=0.0)) for boxes, _, _ in reference), default=0.0)
    return (max(box_tol, rounding_tol(largest), 2 * own.max_box_diff),
            max(score_tol, rounding_tol(1.0), 2 * own.max_score_diff))


def export_onnx(
    detector: nn.Module,
    arch: Arch,
    classes: tuple[ClassInfo, ...],
    size: tuple[int, int],
    out_path: str | Path,
    *,
    kind: str,
    pixels: PixelConvention = DEFAULT_PIXELS,
    batch: int = 1,
    dynamic_batch: bool = False,
    max_detections: int = 100,
    score_thresh: float | None = None,
    nms_thresh: float | None = None,
    parity_images: list[torch.Tensor] | None = None,
    simplify: bool = True,
    box_tol: float = BOX_TOL,
    score_tol: float = SCORE_TOL,
    min_detections: int = MIN_DETECTIONS,
) -> ExportReport:
    """Export `detector` (a torchvision detector from `build_detector` on a ChildNet) to `out_path`.

    `parity_images` (uint8 CHW RGB, any size; letterboxed to `size`) are used to trace and for the parity check;
    without them the graph is traced on a random input and no parity is claimed. The detector is put in eval
    mode on CPU and keeps the exported thresholds and `max_detections` afterwards. `export_seconds` in the report
    is the tracing time; simplification and parity come on top. `box_tol` (px) / `score_tol` are the smallest
    parity tolerances (raised to float32 rounding, see `parity_tolerances`), reported with every result; parity
    fails when fewer than `min_detections` detections were compared.
    """
    check_size(size)
    if batch < 1 or max_detections < 1:
        raise DetnasError(f"batch ({batch}) and max_detections ({max_detections}) must be >= 1")
    out_path = Path(out_path)
    detector = detector.cpu().eval()
    module = DeployableDetector(detector, pixels, max_detections)
    thresholds = {**_thresholds(detector, score_thresh, nms_thresh), "max_detections": max_detections,
                  **module.limits()}
    trace_batch = 1 if dynamic_batch else batch
    spec = InputSpec(height=size[0], width=size[1], batch=None if dynamic_batch else batch)
    meta = ModelMeta(arch=arch, detector=kind, classes=tuple(classes), input=spec, pixels=pixels,
                     thresholds=thresholds, outputs=OUTPUT_DOC, versions=software_versions())
    inputs = [letterbox(im, size[0], size[1], pixels)[0] for im in parity_images or []]
    example = (torch.stack(inputs[:trace_batch]) if len(inputs) >= trace_batch
               else torch.rand(trace_batch, 3, *size, generator=torch.Generator().manual_seed(0)))
    notes: list[str] = []
    remove_stale_temps(out_path.parent)  # what killed exports left: scratch folders, half-written files
    with atomic_path(out_path) as final, temp_dir(out_path) as work:
        start = time.perf_counter()
        with task("export: tracing to ONNX"):
            raw = _trace(module, example, Path(work) / "raw.onnx", meta, dynamic_batch)
        export_seconds = time.perf_counter() - start
        with task(f"export: parity with PyTorch on {len(inputs)} images"):
            reference = _reference(module, inputs, trace_batch)
            tols = parity_tolerances(module, inputs, trace_batch, reference[0], box_tol, score_tol) if inputs \
                else (box_tol, score_tol)
            parity = _parity(raw, inputs, reference, kind, *tols, min_detections) if inputs else None
        if parity is not None:
            parity.check()
        else:
            notes.append("no parity images given: parity with PyTorch was not checked")
        chosen, simplified = raw, False
        if simplify:
            with task("export: simplifying (onnxslim) and its parity"):
                chosen, simplified, note, slim_parity = _simplify(raw, Path(work) / "slim.onnx", meta, inputs,
                                                                  reference, (*tols, min_detections))
            notes.append(note)
            parity = slim_parity or parity
        final.write_bytes(chosen.read_bytes())
        nodes = _count_nodes(chosen)
    return ExportReport(out_path, meta, export_seconds, simplified, nodes, parity, notes)


def check_parity(detector: nn.Module, model_path: str | Path, images: list[torch.Tensor],
                 pixels: PixelConvention = DEFAULT_PIXELS, min_detections: int = MIN_DETECTIONS) -> ParityReport:
    """ONNX Runtime on an exported file vs `detector` in PyTorch on the same real images (uint8 CHW, any size),
    letterboxed to the file's input size: detections and head outputs before NMS; call `.check()` on the result
    to fail loudly."""
    from detnas.export.runtime import read_onnx_meta

    meta = read_onnx_meta(model_path)
    inputs = [letterbox(im, meta.input.height, meta.input.width, pixels)[0] for im in images]
    module = deployable_like(detector, pixels, meta)
    batch = meta.input.batch or 1
    reference = _reference(module, inputs, batch)
    tols = parity_tolerances(module, inputs, batch, reference[0], BOX_TOL, SCORE_TOL)
    return _parity(Path(model_path), inputs, reference, meta.detector, *tols, min_detections)


def deployable_like(detector: nn.Module, pixels: PixelConvention, meta: ModelMeta) -> DeployableDetector:
    """`detector` as the PyTorch twin of the exported graph `meta` describes: its thresholds and detections per image
    (the RPN proposals are the detector's own: load it with the value the file was exported with)."""
    _thresholds(detector, meta.thresholds["score"], meta.thresholds["nms_iou"])
    return DeployableDetector(detector.cpu().eval(), pixels, int(meta.thresholds["max_detections"]))


def _trace(module: DeployableDetector, example: torch.Tensor, path: Path, meta: ModelMeta,
           dynamic_batch: bool) -> Path:
    import onnx

    from detnas.export.loop import batch_loop

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints are expected: the size is fixed
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=[meta.input.name], output_names=list(OUTPUT_NAMES))
        except Exception as exc:
            raise DetnasError(f"ONNX export failed in the TorchScript exporter: {str(exc).splitlines()[0]}") from None
    model = onnx.load(str(path))
    if dynamic_batch:
        model = batch_loop(model)
    _write(model, path, meta)
    return path


def _write(model: Any, path: Path, meta: ModelMeta) -> None:
    """Attach metadata, run the ONNX checker and save."""
    import onnx

    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = "detnas detector: " + "; ".join(f"{k} = {v}" for k, v in OUTPUT_DOC.items())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise DetnasError(f"exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    onnx.save(model, str(path))


def _parity(path: Path, inputs: list[torch.Tensor], reference: tuple[list[Detections], Captured], kind: str,
            box_tol: float = BOX_TOL, score_tol: float = SCORE_TOL, min_detections: int = MIN_DETECTIONS) -> ParityReport:
    """ONNX Runtime on `path` vs the float64 reference: matched detections, then the head outputs before NMS on
    the same full batches (a dynamic-batch file: its batch-1 graph, one image at a time)."""
    runner: Runner = onnx_runner(path)
    report = compare(reference[0], run_images(runner, inputs), "PyTorch eager (float64)", "ONNX Runtime CPU", box_tol,
                     score_tol, min_detections)
    batch = runner.meta.input.batch or 1
    batches = [torch.stack(inputs[first:first + batch]).numpy() for first in range(0, len(inputs) - batch + 1, batch)]
    report.tensors = compare_heads(reference[1], onnx_head_outputs(str(path), kind, batches), kind)
    return report


def _simplify(raw: Path, path: Path, meta: ModelMeta, inputs: list[torch.Tensor],
              reference: tuple[list[Detections], Captured], tols: tuple[float, float, int],
              ) -> tuple[Path, bool, str, ParityReport | None]:
    """onnxslim's graph (and its parity) if it is valid and keeps parity; otherwise the raw one, saying why."""
    import onnx
    import onnxslim

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(onnx.load(str(raw)))
        _write(slim, path, meta)
    except Exception as exc:  # any failure of the optional simplifier leaves the verified raw graph in place
        return raw, False, f"onnxslim failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); kept raw graph", None
    before, after = _count_nodes(raw), _count_nodes(path)
    report = _parity(path, inputs, reference, meta.detector, *tols) if inputs else None
    if report is not None and not report.passed:
        return raw, False, f"onnxslim graph broke parity ({report.summary()}); kept raw graph", None
    return path, True, f"onnxslim: {before} -> {after} nodes", report


def _count_nodes(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)
