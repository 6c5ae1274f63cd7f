"""Reduced-precision detectors: the verified FP32 ONNX -> an FP16 file with FP32 islands or an INT8 QDQ file,
checked against the FP32 file (matched-detection share, COCO AP gate) before it takes its final name.

Precision lives in the file: TensorRT 10+ builds strongly typed engines from it and ONNX Runtime runs it as is.
Both conversions are ONNX Runtime's own tools (already a dependency; NVIDIA ModelOpt's ONNX PTQ would be a new,
CUDA-oriented one for the same QDQ output):

- FP16: `onnxruntime.transformers.float16.convert_float_to_float16` on the network (backbone, FPN, heads). Every
  other node (normalisation, anchors, box decoding, NMS, RoiAlign and its coordinates, padding) is blocked and
  stays FP32; the converter puts an FP32 -> FP16 -> FP32 cast pair between two blocked nodes, which would round
  boxes to FP16 between the decoding steps, so `_fuse_cast_round_trips` turns those pairs back into the FP32 edge.
- INT8: `onnxruntime.quantization.quantize_static` in QDQ format, the form TensorRT's explicit quantization takes:
  symmetric INT8 activations and weights (every zero point 0), per-channel weights, only Conv/Gemm/MatMul of the
  network, ranges from letterboxed calibration images. The predictor layers (class logits, box deltas) keep FP32
  weights and outputs, so box decoding, NMS and RoI coordinates never see an INT8 value.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detnas.bench.result import PRECISIONS
from detnas.errors import DetnasError
from detnas.export.metadata import ModelMeta, PrecisionInfo
from detnas.export.parity import Detections
from detnas.io import atomic_write_json
from detnas.progress import task

CALIB_METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
#: module scopes (as the TorchScript exporter names nodes) of the network proper: everything else is post-processing
NETWORK_SCOPES = frozenset({"backbone", "head", "box_head", "box_predictor"})
#: the layers whose outputs are decoded into boxes and scores: FP32 in the INT8 file
PREDICTOR_LAYERS = frozenset({"cls_logits", "bbox_pred", "cls_score", "bbox_reg"})


@dataclass(frozen=True)
class Tolerance:
    """How close a reduced-precision detection must be to its FP32 partner, and the share that must match."""

    box_px: float
    score: float
    min_share: float


#: FP16 keeps ~3 significant digits through the network, INT8 ~2; both keep post-processing in FP32, so a detection
#: near the score threshold or an NMS tie may flip: judged by the share of detections matched within tolerance.
TOLERANCES = {"fp16": Tolerance(box_px=1.0, score=0.01, min_share=0.9),
              "int8": Tolerance(box_px=4.0, score=0.05, min_share=0.5)}


# ----------------------------------------------------------------------------------------------- request


@dataclass(frozen=True)
class Calibration:
    """The calibration images of an INT8 file: the files, where the list came from and the range method."""

    files: tuple[Path, ...]
    images: tuple[torch.Tensor, ...]  # uint8 CHW, read up front so a bad file fails before any export
    method: str
    source: str

    @property
    def digest(self) -> str:
        """sha256 of the sorted file names, one a line: which images calibrated the file, without shipping them."""
        return hashlib.sha256("\n".join(sorted(f.name for f in self.files)).encode()).hexdigest()


@dataclass(frozen=True)
class Gate:
    """COCO AP of the FP32 reference vs the reduced file on `ann` / `images`; fails above `max_drop` (0.01 = 1 point)."""

    ann: Path
    images: Path
    max_drop: float
    max_images: int | None = None


@dataclass(frozen=True)
class PrecisionRequest:
    """What `--precision` asks for, validated before any export work."""

    precision: str = "fp32"
    calibration: Calibration | None = None
    gate: Gate | None = None

    @property
    def reduced(self) -> bool:
        return self.precision != "fp32"

    def info(self) -> PrecisionInfo:
        cal = self.calibration
        if cal is None:
            return PrecisionInfo(self.precision)
        return PrecisionInfo(self.precision, cal.method, len(cal.files), cal.digest)


def training_split(weights: str | Path) -> tuple[Path, Path | None] | None:
    """(image folder, COCO json or None) of the run that wrote `weights`, from the run's config.json (next to
    `final.*` or one level above `checkpoints/`); None when the checkpoint does not come from a detnas run."""
    for folder in (Path(weights).parent, Path(weights).parent.parent):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data, ann = Path(str(config.get("data") or "")), str(config.get("ann") or "")
        if config.get("task") == "det" and data.is_dir():
            return data, Path(ann) if ann.endswith(".json") and Path(ann).is_file() else None
    return None


def _split_files(images_dir: Path, ann: Path | None) -> list[Path]:
    from detnas.export.trt import image_files

    if ann is None:
        return image_files(images_dir)
    from detnas.data.coco import read_coco_json

    return sorted(images_dir / im["file_name"] for im in read_coco_json(ann)["images"])


def precision_request(precision: str, *, weights: Path, calib_data: Path | None, calib_images: int,
                      calib_method: str, gate_data: Path | None, gate_images: Path | None, max_ap_drop: float,
                      dynamic_batch: bool) -> PrecisionRequest:
    """Validate the precision options and read the calibration images (bad input is a one-line error, before
    anything is exported). INT8 calibrates on --calib-images, else on the training split recorded by the run that
    wrote `weights`; never on the gate's (evaluation) images."""
    from detnas.images import read_image

    if precision not in PRECISIONS:
        raise DetnasError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if calib_method not in CALIB_METHODS:
        raise DetnasError(f"--calib-method {calib_method}: choose one of {', '.join(CALIB_METHODS)}")
    if max_ap_drop < 0:
        raise DetnasError(f"--max-ap-drop {max_ap_drop}: the largest allowed AP drop must be >= 0 (0.01 = 1 AP point)")
    if calib_images < 1:
        raise DetnasError(f"--calib-count {calib_images}: calibrate on at least 1 image (a few hundred is typical)")
    if precision == "fp32":
        return PrecisionRequest()
    if dynamic_batch:
        raise DetnasError(f"--precision {precision} with --dynamic-batch: the batch Loop's body cannot be converted; "
                          "export a fixed batch (--batch N)")
    gate = Gate(gate_data, gate_images, max_ap_drop) if gate_data and gate_images else None
    if precision == "fp16":
        return PrecisionRequest(precision, gate=gate)
    if calib_data is not None:
        from detnas.export.trt import image_files

        files, source = image_files(calib_data), f"--calib-images {calib_data}"
    elif (split := training_split(weights)) is not None:
        files, source = _split_files(*split), f"the training split of {weights} ({split[1] or split[0]})"
    else:
        raise DetnasError(f"--precision int8 needs calibration images: pass --calib-images DIR (training images; "
                          f"the run that wrote {weights} records no training split)")
    if len(files) < calib_images:
        raise DetnasError(f"--calib-count {calib_images}: {source} has only {len(files)} images; lower "
                          "--calib-count or add images")
    files = files[:calib_images]
    if gate is not None:
        gated = {p.resolve() for p in gate.images.glob("*")}
        if overlap := [f for f in files if f.resolve() in gated]:
            raise DetnasError(f"--calib-images: {len(overlap)} calibration images (e.g. {overlap[0].name}) are in "
                              f"--gate-images {gate.images}; calibrate on training images, not on the evaluation split")
    images = []
    for f in files:
        try:
            images.append(read_image(f))
        except DetnasError as exc:
            raise DetnasError(f"--calib-images: {exc}; remove the file or pass a folder of readable images") from None
    return PrecisionRequest(precision, Calibration(tuple(files), tuple(images), calib_method, source), gate)


# ----------------------------------------------------------------------------------------------- conversions


def _scopes(node_name: str) -> set[str]:
    """'/head/cls_logits_3/Conv' -> {'head', 'cls_logits'}: the module path the TorchScript exporter names a node
    by (a module called again gets a _N suffix)."""
    return {re.sub(r"_\d+$", "", part) for part in node_name.split("/")[1:-1]}


def network_nodes(graph: Any) -> set[str]:
    """Names of the network's nodes (backbone, FPN, heads); a graph without those scopes (a bare backbone, as the
    bench times one) is all network."""
    named = {n.name for n in graph.node if NETWORK_SCOPES & _scopes(n.name)}
    return named or {n.name for n in graph.node}


def quantized_nodes(graph: Any) -> list[str]:
    """The Conv/Gemm/MatMul nodes of the network that INT8 quantizes: all but the predictor layers."""
    network = network_nodes(graph)
    return [n.name for n in graph.node
            if n.op_type in QUANTIZED_OPS and n.name in network and not PREDICTOR_LAYERS & _scopes(n.name)]


def quantize_int8(source: str | Path, target: str | Path, batches: Sequence[np.ndarray],
                  method: str = "minmax") -> Path:
    """Static INT8 QDQ quantization of `source` (see the module docstring) with ranges from `batches`, each a
    float32 input batch the model accepts; returns `target`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise DetnasError(f"--calib-method {method}: choose one of {', '.join(CALIB_METHODS)}")
    if not batches:
        raise DetnasError("INT8 quantization needs calibration images; pass --calib-images DIR")
    graph = onnx.load(str(source), load_external_data=False).graph
    feeds = iter([{graph.input[0].name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # ORT logs a pre-processing hint on every call
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # and the histogram calibrators print their progress
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=quantized_nodes(graph),
                            calibrate_method=methods[method],
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    finally:
        logging.getLogger().setLevel(quiet)
    return Path(target)


def convert_fp16(source: str | Path, target: str | Path) -> Path:
    """FP16 network with FP32 inputs, outputs and post-processing (see the module docstring); returns `target`."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    network = network_nodes(model.graph)
    blocked = [n.name for n in model.graph.node if n.name not in network]
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked,
                                    op_block_list=[*DEFAULT_OP_BLOCK_LIST, "If", "Loop"])  # bodies stay FP32
    _fuse_cast_round_trips(half.graph)
    del half.graph.value_info[:]  # the converter's are stale after the fusion; ORT and TensorRT infer them
    onnx.save(half, str(target))
    return Path(target)


def _fuse_cast_round_trips(graph: Any) -> None:
    """Undo the FP32 -> FP16 -> FP32 round trips the converter puts between blocked nodes: each Cast(FP16 -> FP32)
    of a converter-inserted Cast(FP32 -> FP16) becomes an Identity of the FP32 tensor, blocked subgraphs (If /
    Loop bodies) read the FP32 tensor too, then unused and duplicate casts are dropped and the nodes re-sorted."""
    from onnx import TensorProto, helper

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    fp32_of = {n.output[0]: n.input[0] for n in graph.node if cast_to(n) == TensorProto.FLOAT16
               and (n.name.endswith("_cast_to_fp16_node") or n.name.startswith("graph_input_cast"))}
    for node in graph.node:
        if cast_to(node) == TensorProto.FLOAT and node.input[0] in fp32_of:
            node.CopyFrom(helper.make_node("Identity", [fp32_of[node.input[0]]], list(node.output), name=node.name))
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename_inputs(sub, fp32_of)
    kept, seen = [], set()
    for node in graph.node:
        if node.output[0] not in seen:
            seen.update(node.output)
            kept.append(node)
    graph_outputs = {o.name for o in graph.output}
    while True:
        used = set().union(*(_names_used(n) for n in kept)) | graph_outputs
        alive = [n for n in kept if n.op_type != "Cast" or any(o in used for o in n.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    del graph.node[:]
    graph.node.extend(_topological(kept))


def _rename_inputs(graph: Any, names: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename_inputs(sub, names)


def _names_used(node: Any) -> set[str]:
    """A node's inputs plus the outer-scope names its subgraphs (If / Loop bodies) read."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in sub.node:
                names |= _names_used(inner)
    return names


def _topological(nodes: list[Any]) -> list[Any]:
    """Nodes in an order where each comes after its producers (the converter appends its casts at the end)."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    order, state = [], [0] * len(nodes)  # 0 new, 1 visiting, 2 placed

    def place(i: int) -> None:
        stack = [(i, iter(sorted({producer[x] for x in _names_used(nodes[i]) if x in producer} - {i})))]
        state[i] = 1
        while stack:
            j, deps = stack[-1]
            k = next((d for d in deps if state[d] == 0), None)
            if k is None:
                stack.pop()
                state[j] = 2
                order.append(nodes[j])
            else:
                state[k] = 1
                stack.append((k, iter(sorted({producer[x] for x in _names_used(nodes[k]) if x in producer} - {k}))))

    for i in range(len(nodes)):
        if state[i] == 0:
            place(i)
    return order


# ----------------------------------------------------------------------------------------------- checks


@dataclass
class PrecisionParity:
    """The reduced file vs the FP32 ONNX on the same images: the share of FP32 detections with a partner of the
    same label within the precision's tolerance."""

    precision: str
    images: int
    detections: int
    matched: int
    tolerance: Tolerance

    @property
    def share(self) -> float:
        return self.matched / self.detections

    @property
    def passed(self) -> bool:
        return self.share >= self.tolerance.min_share

    def summary(self) -> str:
        t = self.tolerance
        return (f"{self.precision} vs FP32 ONNX on {self.images} images: {self.matched} of {self.detections} "
                f"detections matched ({100 * self.share:.1f} %, need {100 * t.min_share:.0f} %) within "
                f"{t.box_px:g} px and score {t.score:g}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share, "passed": self.passed}


def _matched(ref: Detections, cand: Detections, tol: Tolerance) -> int:
    """Greedy in FP32 score order: each FP32 detection takes the closest free candidate of its label in tolerance."""
    free = np.ones(len(cand[1]), dtype=bool)
    matched = 0
    for i in np.argsort(-ref[1], kind="stable"):
        box_diff = np.abs(cand[0] - ref[0][i]).max(axis=1) if len(cand[1]) else np.zeros(0)
        ok = free & (cand[2] == ref[2][i]) & (box_diff <= tol.box_px) & (np.abs(cand[1] - ref[1][i]) <= tol.score)
        if ok.any():
            free[np.flatnonzero(ok)[np.argmin(box_diff[ok])]] = False
            matched += 1
    return matched


def precision_parity(reference: list[Detections], candidate: list[Detections], precision: str) -> PrecisionParity:
    """Compare per-image detections; zero FP32 detections is an error, not a pass."""
    detections = sum(len(r[1]) for r in reference)
    if detections == 0:
        raise DetnasError(f"{precision} parity compared 0 detections: the FP32 model detects nothing on the "
                          f"{len(reference)} parity images; pass --parity-images images it detects objects on")
    tol = TOLERANCES[precision]
    matched = sum(_matched(r, c, tol) for r, c in zip(reference, candidate))
    return PrecisionParity(precision, len(reference), detections, matched, tol)


@dataclass(frozen=True)
class GateResult:
    """COCO AP of the FP32 reference and of the reduced file on the same images."""

    reference_ap: float
    candidate_ap: float
    images: int
    annotations: int
    max_drop: float

    @property
    def drop(self) -> float:
        return self.reference_ap - self.candidate_ap

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def summary(self) -> str:
        return (f"AP {self.candidate_ap:.4f} vs FP32 {self.reference_ap:.4f} on {self.images} images "
                f"({self.annotations} annotations): drop {self.drop:.4f} (limit {self.max_drop:g})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop, "passed": self.passed}


def ap_gate(reference: str | Path, candidate: str | Path, gate: Gate) -> GateResult:
    """COCO AP (pycocotools) of both exported files through the exported predictor; refuses empty data."""
    from detnas.data.coco import CocoDetection
    from detnas.evaluation import evaluate
    from detnas.export.runtime import exported_predictor, load_exported

    dataset = CocoDetection(gate.ann, gate.images)
    count = len(dataset) if gate.max_images is None else min(gate.max_images, len(dataset))
    annotations = sum(len(r.labels) for r in dataset.records[:count])
    if count == 0 or annotations == 0:
        raise DetnasError(f"--gate-ann {gate.ann}: {count} images with {annotations} annotations; the AP gate needs "
                          "annotated images (pass the validation json and its --gate-images folder)")
    ref_runner = load_exported(reference)
    if [c.name for c in ref_runner.meta.classes] != dataset.classes:
        raise DetnasError(f"--gate-ann {gate.ann}: its classes differ from the model's "
                          f"({len(ref_runner.meta.classes)} classes); gate on data with the same category list")
    reference_ap = evaluate(exported_predictor(ref_runner), dataset, max_images=count)["AP"]
    candidate_ap = evaluate(exported_predictor(candidate), dataset, max_images=count)["AP"]
    return GateResult(reference_ap, candidate_ap, count, annotations, gate.max_drop)


# ----------------------------------------------------------------------------------------------- the file


@dataclass
class PrecisionReport:
    """What `write_precision` produced and proved; also written as `<out stem>.precision.json`."""

    path: Path
    info: PrecisionInfo
    convert_seconds: float
    parity: PrecisionParity | None
    gate: GateResult | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **asdict(self.info), "convert_seconds": self.convert_seconds,
                "parity": self.parity.to_dict() if self.parity else None,
                "gate": self.gate.to_dict() if self.gate else None}


def report_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".precision.json")


def calibration_batches(images: Sequence[torch.Tensor], meta: ModelMeta) -> list[np.ndarray]:
    """Letterboxed model inputs in the file's batch size; a short last batch is filled with its own first images."""
    from detnas.export.preprocess import letterbox

    spec, batch = meta.input, meta.input.batch or 1
    inputs = [letterbox(im, spec.height, spec.width, meta.pixels)[0] for im in images]
    batches = []
    for first in range(0, len(inputs), batch):
        chunk = inputs[first:first + batch]
        chunk += [chunk[i % len(chunk)] for i in range(batch - len(chunk))]
        batches.append(torch.stack(chunk).numpy())
    return batches


def reduce_exported(out: str | Path, request: PrecisionRequest,
                    parity_images: Sequence[torch.Tensor] = ()) -> PrecisionReport:
    """The verified FP32 export at `out` becomes the reference and `out` the precision's file, or, when a check
    fails, nothing: the FP32 file is moved aside into a temporary folder that is removed either way."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.fp32-", dir=out.parent) as work:
        reference = Path(work) / out.name
        os.replace(out, reference)
        return write_precision(reference, out, request, parity_images)


def write_precision(fp32_onnx: str | Path, out: str | Path, request: PrecisionRequest,
                    parity_images: Sequence[torch.Tensor] = ()) -> PrecisionReport:
    """Turn the verified FP32 file into `request.precision` at `out`, atomically: converted under a temporary
    name, checked (parity share on `parity_images`, AP gate), and renamed into place only if every check passed."""
    import onnx

    from detnas.export.preprocess import letterbox
    from detnas.export.runtime import load_exported, read_onnx_meta, run_images

    out = Path(out)
    meta = replace(read_onnx_meta(fp32_onnx), precision=request.info())
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.{request.precision}-", dir=out.parent) as work:
        staged = Path(work) / out.name
        start = time.perf_counter()
        with task(f"export: converting to {request.precision}"):
            if request.precision == "int8":
                assert request.calibration is not None  # precision_request guarantees it
                quantize_int8(fp32_onnx, staged, calibration_batches(request.calibration.images, meta),
                              request.calibration.method)
            else:
                convert_fp16(fp32_onnx, staged)
        seconds = time.perf_counter() - start
        model = onnx.load(str(staged))
        del model.metadata_props[:]
        for key, value in meta.to_props().items():
            model.metadata_props.add(key=key, value=value)
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise DetnasError(f"{request.precision} graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
        onnx.save(model, str(staged))
        parity = None
        if parity_images:
            inputs = [letterbox(im, meta.input.height, meta.input.width, meta.pixels)[0] for im in parity_images]
            with task(f"export: {request.precision} parity on {len(inputs)} images"):
                parity = precision_parity(run_images(load_exported(fp32_onnx), inputs),
                                          run_images(load_exported(staged), inputs), request.precision)
        gate = ap_gate(fp32_onnx, staged, request.gate) if request.gate else None
        if gate is not None and not gate.passed:  # the AP verdict first: it is what the file is for
            raise DetnasError(f"AP gate FAILED: {request.precision} {gate.summary()}; nothing written to {out}; "
                              "calibrate on more / more representative training images or try fp16"
                              + (f" (parity: {parity.summary()})" if parity else ""))
        if parity is not None and not parity.passed:
            raise DetnasError(f"parity FAILED: {parity.summary()}; nothing written to {out}")
        report = PrecisionReport(out, meta.precision, seconds, parity, gate)
        os.replace(staged, out)
    atomic_write_json(report_path(out), report.to_dict())
    return report
