"""Parity before NMS, for untrained detectors: the dense head outputs of PyTorch and ONNX Runtime compared.

A randomly initialised detector scores every box near the head's prior (RetinaNet ~0.01, Faster R-CNN ~1/(K+1)),
below any useful score threshold, so parity on its final detections compares two empty lists. What random
weights do exercise is the network: backbone, FPN and the dense head over every anchor. `check_head_parity`
traces exactly those modules of the detector (the same exporter and opset as the deployable graph), and compares
their raw outputs — RPN objectness and box deltas for FPN Faster R-CNN, classification logits and box regression
for RetinaNet — element by element. The RoI box head of Faster R-CNN runs on post-NMS proposals and is not covered.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN

from detnas.errors import DetnasError
from detnas.pixels import Normalize, PixelConvention

REL_TOL = 1e-4  # of the output's largest magnitude; raised to twice PyTorch's own float32 error where larger


class DenseHeads(nn.Module):
    """images [B, 3, H, W] in [0, 1] -> the detector's dense head outputs, flattened per image."""

    def __init__(self, detector: nn.Module, pixels: PixelConvention) -> None:
        super().__init__()
        self.detector = detector
        self.normalize = Normalize(pixels)

    @staticmethod
    def output_names(detector: nn.Module) -> tuple[str, str]:
        return ("rpn_objectness", "rpn_box_deltas") if isinstance(detector, FasterRCNN) \
            else ("cls_logits", "bbox_regression")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = list(self.detector.backbone(self.normalize(images)).values())
        if isinstance(self.detector, FasterRCNN):
            objectness, deltas = self.detector.rpn.head(features)
            return torch.cat([o.flatten(1) for o in objectness], 1), torch.cat([d.flatten(1) for d in deltas], 1)
        outputs = self.detector.head(features)
        return outputs["cls_logits"].flatten(1), outputs["bbox_regression"].flatten(1)


@dataclass
class HeadParityReport:
    """Largest absolute difference per output against the float64 PyTorch reference, with its tolerance."""

    outputs: tuple[str, ...]
    values: int
    max_diff: tuple[float, ...]
    tolerance: tuple[float, ...]
    images: int

    @property
    def passed(self) -> bool:
        return all(d <= t for d, t in zip(self.max_diff, self.tolerance))

    def summary(self) -> str:
        parts = ", ".join(f"{n} max diff {d:.3g} (tol {t:.3g})" for n, d, t in
                          zip(self.outputs, self.max_diff, self.tolerance))
        return f"pre-NMS head outputs, ONNX Runtime CPU vs PyTorch float64 on {self.images} images, " \
               f"{self.values} values: {parts}"

    def check(self) -> HeadParityReport:
        if not self.passed:
            raise DetnasError(f"pre-NMS parity FAILED: {self.summary()}")
        return self


def check_head_parity(detector: nn.Module, pixels: PixelConvention, inputs: list[torch.Tensor],
                      opset: int) -> HeadParityReport:
    """Trace the detector's dense heads, run them in ONNX Runtime and compare with PyTorch on `inputs`
    (model-size float images [3, H, W] in [0, 1])."""
    import onnxruntime as ort

    module = DenseHeads(detector.cpu().eval(), pixels).eval()
    names = DenseHeads.output_names(detector)
    batch = torch.stack(inputs)
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        path = Path(work) / "heads.onnx"
        torch.onnx.export(module, (batch,), str(path), dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=list(names))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_out = session.run(list(names), {"images": batch.numpy().astype(np.float32)})
        float32 = [t.numpy() for t in module(batch)]
        reference = [t.numpy() for t in copy.deepcopy(module).double()(batch.double())]
    diffs, tols = [], []
    for ref, own, candidate in zip(reference, float32, onnx_out):
        own_error = float(np.abs(own - ref).max())
        diffs.append(float(np.abs(candidate.astype(np.float64) - ref).max()))
        tols.append(max(REL_TOL * float(np.abs(ref).max()), 2 * own_error))
    return HeadParityReport(names, sum(r.size for r in reference), tuple(diffs), tuple(tols), len(inputs))
