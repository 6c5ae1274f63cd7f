"""The network that is timed for an arch at a given scope, and its ONNX export."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from detnas.bench.result import Scope
from torch import nn

from detnas.arch import Arch
from detnas.errors import DetnasError


class TupleOutputs(nn.Module):
    """Backbone feature dict -> tuple, so ONNX export and every backend see plain named outputs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)
        return tuple(out.values()) if isinstance(out, dict) else (out,)


def timed_module(arch: Arch, scope: Scope) -> nn.Module:
    """The eval-mode module an arch is timed as: for now the backbone (stem + stages, C2..C5)."""
    from detnas.supernet import ChildNet

    if scope is not Scope.BACKBONE:
        raise DetnasError(f"scope '{scope.value}' for an arch needs the detector export; time an ONNX/engine file "
                          "exported with that scope (--onnx/--engine) or use --scope backbone")
    return TupleOutputs(ChildNet(arch)).eval()


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17) -> Path:
    """TorchScript-based export with static shapes (the engine is built for one size and batch)."""
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the TorchScript exporter is legacy; it is chosen on purpose
        outputs = module(example)
        names = [f"out{i}" for i in range(len(outputs) if isinstance(outputs, tuple) else 1)]
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=names,
                          opset_version=opset, dynamo=False)
    return path


def file_sha256(path: str | Path) -> str:
    """Content hash of a model file: the cache key of ONNX / engine sources."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DetnasError(f"{path}: cannot read model file ({exc.strerror})") from None
    return digest.hexdigest()
