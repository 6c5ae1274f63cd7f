"""The network that is timed for an arch at a given scope, and its ONNX export."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from detnas.arch import Arch
from detnas.bench.result import Scope
from detnas.errors import DetnasError
from detnas.pixels import Normalize


class TupleOutputs(nn.Module):
    """Backbone feature dict -> tuple, so ONNX export and every backend see plain named outputs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)
        return tuple(out.values()) if isinstance(out, dict) else (out,)


class DenseNetwork(nn.Module):
    """The detector network without post-processing: backbone + FPN + the dense head's raw outputs, as its
    registered kind names them (FPN Faster R-CNN: the RPN head, the RoI head belongs to network+nms; RetinaNet:
    the classification and box-regression head).
    """

    def __init__(self, detector: nn.Module) -> None:
        from detnas.detection.kinds import kind_of

        super().__init__()
        self.detector = detector
        self.kind = kind_of(detector)
        self.normalize = Normalize(detector.pixels)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = list(self.detector.backbone(self.normalize(images)).values())
        return self.kind.dense_outputs(self.detector, features)


def timed_module(arch: Arch, scope: Scope, detector: str = "fpn", num_classes: int = 81,
                 max_detections: int = 100) -> nn.Module:
    """The eval-mode module an arch is timed as, with random weights.

    network+nms is the deployable graph of `detnas export` (NMS inside, padded outputs) with the detector's
    default thresholds. With random weights few boxes pass the score threshold, so NMS is cheaper than for a
    trained detector: the search times the trained (materialised) detector through `scoped_detector`.
    """
    from detnas.supernet import ChildNet

    if scope is Scope.BACKBONE:
        return TupleOutputs(ChildNet(arch)).eval()
    _refuse_end_to_end(scope)
    from detnas.detection import build_detector

    return scoped_detector(build_detector(detector, ChildNet(arch), num_classes), scope, max_detections)


def scoped_detector(detector: nn.Module, scope: Scope, max_detections: int = 100) -> nn.Module:
    """The part of a built detector (random-init or trained) that `scope` times: its dense network, or the
    deployable graph with NMS inside."""
    if scope is Scope.NETWORK:
        return DenseNetwork(detector.eval()).eval()
    if scope is Scope.NETWORK_NMS:
        from detnas.detection.deployable import DeployableDetector

        return DeployableDetector(detector.eval(), detector.pixels, max_detections).eval()
    _refuse_end_to_end(scope)
    raise DetnasError("scope 'backbone' times the backbone alone; time the arch, not its whole detector")


def _refuse_end_to_end(scope: Scope) -> None:
    if scope is Scope.END_TO_END:
        raise DetnasError("scope 'end-to-end' includes host pre/post-processing, which an arch alone does not "
                          "define; time the exported model with its runner, or use network+nms")


def module_to_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17) -> Path:
    """A plain module to ONNX for timing: TorchScript-based, static shapes (the engine is built for one size and
    batch), outputs named out0..outN; `detnas.export.export_onnx` writes a deployable detector with its metadata."""
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the TorchScript exporter is legacy; it is chosen on purpose
        outputs = module(example)
        names = [f"out{i}" for i in range(len(outputs) if isinstance(outputs, tuple) else 1)]
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=names,
                          opset_version=opset, dynamo=False)
    return path

