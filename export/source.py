"""The detector to export, from a detection checkpoint: a child checkpoint as stored, a supernet checkpoint
cut down to the chosen path with `materialize`, so the exported graph holds exactly one standalone network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from detnas.arch import Arch
from detnas.checkpoint import CheckpointMeta
from detnas.errors import DetnasError
from detnas.export.metadata import ClassInfo, class_table
from detnas.pixels import DEFAULT_PIXELS, PixelConvention
from detnas.supernet import Supernet, materialize


@dataclass
class ExportSource:
    """A detector on a standalone ChildNet and what its checkpoint sidecar says about it."""

    detector: nn.Module
    arch: Arch
    detector_kind: str  # "fpn" or "retinanet"
    classes: tuple[ClassInfo, ...]
    pixels: PixelConvention


def load_export_source(weights: str | Path, arch: Arch | None = None, proposals: int | None = None) -> ExportSource:
    """Load a child-det or supernet-det checkpoint; `arch` is required for a supernet and checked for a child.

    `proposals` sets the FPN's RPN proposals per image at test time (baked into the graph).
    """
    from detnas.detection import load_detector

    detector, meta = load_detector(weights, arch, proposals=proposals)
    backbone = detector.backbone
    if isinstance(backbone.body, Supernet):
        backbone.body = materialize(backbone.body, backbone.arch)
    return detector_source(detector, meta)


def detector_source(detector: nn.Module, meta: CheckpointMeta) -> ExportSource:
    """A detector on a standalone ChildNet (e.g. a supernet path with its BN statistics re-estimated) and the
    checkpoint sidecar it came from."""
    return ExportSource(detector.eval(), detector.backbone.body.arch, str(meta.detector),
                        class_table(list(meta.classes), meta.label_to_cat_id or None), meta.pixels)


def random_init_source(arch: Arch, kind: str, num_classes: int, proposals: int | None = None,
                       seed: int = 0) -> ExportSource:
    """An untrained detector of `arch` (torchvision's initialisation, seeded): to check that a graph exports and
    parses, and to time it, before anything is trained. Classes are named class1..classK."""
    import torch

    from detnas.detection import build_detector
    from detnas.supernet import ChildNet

    if num_classes < 1:
        raise DetnasError(f"--num-classes {num_classes}: give the number of object classes K (>= 1)")
    torch.manual_seed(seed)
    detector = build_detector(kind, ChildNet(arch), num_classes + 1, pixels=DEFAULT_PIXELS, proposals=proposals)
    names = [f"class{i}" for i in range(1, num_classes + 1)]
    return ExportSource(detector.eval(), arch, kind, class_table(names), DEFAULT_PIXELS)

