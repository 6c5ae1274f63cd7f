"""Parity before NMS: the heads' raw outputs of an exported graph against the PyTorch model, tensor by tensor.

Matching detections proves nothing when there are none (an untrained or broken model), and thresholds hide raw
changes below them. So the parity check also reads the RPN / RetinaNet head outputs (one value per anchor and
level) and the RoI head's class logits and box deltas (one row per RoI) out of the *same* ONNX graph, by exposing
those intermediate tensors as extra outputs of an in-memory copy of it, and compares them with the same modules'
outputs in the PyTorch reference, captured with forward hooks.

The ONNX tensors are found by the TorchScript exporter's scope names: a module `…head.cls_logits` called k times
becomes nodes `…/head/cls_logits/Conv`, `…/head/cls_logits_1/Conv`, … in call order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from detnas.detection.kinds import HeadOutput, detector_kind, kind_of
from detnas.export.parity import TensorParity, compare_rows, compare_values


def onnx_scope(output: HeadOutput) -> re.Pattern[str]:
    """The node names the TorchScript exporter gives `output`'s module, the k-th call suffixed `_k`."""
    parent, leaf = output.module.split(".")[-2:]
    return re.compile(rf"(?:^|/){parent}/{leaf}(?:_(\d+))?/[A-Za-z]+$")


Captured = dict[str, list[np.ndarray]]  # label -> one array per module call, in call order, over all batches
REAL_ROIS = "real RoIs"  # the reference's per-image masks of real (not padding) RoIs, in call order


def capture_hooks(graph: nn.Module) -> tuple[Captured, Callable[[], None]]:
    """Forward hooks on a `DeployableDetector` recording each head output of its detector's kind (float64 numpy)
    and, under `REAL_ROIS`, which RoI rows belong to real proposals; returns the record and a remover."""
    outputs = kind_of(graph.detector).head_outputs
    captured: Captured = {out.label: [] for out in outputs}
    targets = [(out.label, graph.detector.get_submodule(out.module)) for out in outputs]
    if any(out.rows for out in outputs):
        captured[REAL_ROIS] = []
        targets.append((REAL_ROIS, graph.real_rois))
    handles = []
    for label, module in targets:
        def record(_module: nn.Module, _args: Any, output: torch.Tensor, label: str = label) -> None:
            captured[label].append(output.detach().to(torch.float64 if output.is_floating_point() else output.dtype)
                                   .numpy().copy())
        handles.append(module.register_forward_hook(record))
    return captured, lambda: [h.remove() for h in handles]


def _unwrap_loop(model: Any) -> Any:
    """A dynamic-batch file (the batch-1 graph inside an ONNX Loop, see `batch_loop`) -> that batch-1 graph, so its
    intermediate tensors can be outputs; any other model is returned as is."""
    import onnx
    from onnx import helper

    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    body = next((a.g for a in loops[0].attribute if a.name == "body"), None) if len(loops) == 1 else None
    if body is None or not any("loop_image" in n.output for n in body.node):
        return model
    image = model.graph.input[0]
    nodes = [n for n in body.node[2:] if not (n.op_type == "Identity" and
                                               (n.output[0].startswith("loop_out_") or n.output[0] == "loop_cond_out"))]
    single = onnx.ValueInfoProto()
    single.CopyFrom(image)
    single.name = "loop_image"
    single.type.tensor_type.shape.dim[0].dim_value = 1
    graph = helper.make_graph(nodes, body.name, [single], [], initializer=list(model.graph.initializer))
    unwrapped = helper.make_model(graph, opset_imports=list(model.opset_import))
    unwrapped.ir_version = model.ir_version
    return unwrapped


def onnx_head_outputs(model_path: str, kind: str, batches: list[np.ndarray]) -> Captured:
    """Run the file's graph with the head outputs exposed; per label the tensors in call order over `batches`.
    A label whose tensors are not in the graph stays empty (and fails the comparison)."""
    import onnx
    import onnxruntime as ort

    model = _unwrap_loop(onnx.load(model_path))
    names: dict[str, list[str]] = {}
    for out in detector_kind(kind).head_outputs:
        found, scope = [], onnx_scope(out)
        for node in model.graph.node:
            match = scope.search(node.name)
            if match:
                found.append((int(match.group(1) or 0), node.output[0]))
        names[out.label] = [name for _, name in sorted(found)]
    del model.graph.output[:]
    for tensor_names in names.values():
        for name in tensor_names:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    captured: Captured = {label: [] for label in names}
    wanted = [n for tensor_names in names.values() for n in tensor_names]
    if not wanted:
        return captured
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for batch in batches:
        values = dict(zip(wanted, session.run(wanted, {input_name: np.ascontiguousarray(batch, np.float32)})))
        for label, tensor_names in names.items():
            captured[label].extend(values[n] for n in tensor_names)
    return captured


def compare_heads(reference: Captured, candidate: Captured, kind: str) -> list[TensorParity]:
    """One `TensorParity` per head output: dense outputs element by element, RoI rows matched (the reference's
    real ones only, when it recorded `REAL_ROIS`)."""
    results = []
    real = np.concatenate(reference[REAL_ROIS]) if reference.get(REAL_ROIS) else None
    for out in detector_kind(kind).head_outputs:
        ref, cand = reference.get(out.label, []), candidate.get(out.label, [])
        if not ref or len(ref) != len(cand):
            results.append(TensorParity(f"{out.label} ({len(cand)} tensors in the graph vs {len(ref)} in PyTorch)",
                                        sum(r.size for r in ref), float("inf"), 0.0))
        elif out.rows:
            results.append(compare_rows(out.label, np.concatenate(ref), np.concatenate(cand), real))
        elif any(r.shape != c.shape for r, c in zip(ref, cand)):
            first = next(i for i, (r, c) in enumerate(zip(ref, cand)) if r.shape != c.shape)
            results.append(compare_values(out.label, ref[first], cand[first]))  # reports the shape mismatch
        else:
            results.append(compare_values(out.label, np.concatenate([r.ravel() for r in ref]),
                                          np.concatenate([c.ravel() for c in cand])))
    return results
