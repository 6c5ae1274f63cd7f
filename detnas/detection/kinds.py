"""Detector kinds: what each kind of detector around a DetNAS backbone brings, registered by name.

Building, training, timing and exporting a detector only ask its kind, so adding one (FCOS, say) is one module
that builds it and registers a `DetectorKind`:

    DETECTOR_KINDS.register("fcos")(DetectorKind(model=FCOS, build=build_fcos, dense_outputs=fcos_head_outputs,
                                                 deploy=deploy_fcos))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from detnas.errors import DetnasError
from detnas.registry import Registry

Detections = list[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class HeadOutput:
    """A raw head output the export's parity compares before NMS: `module` is its path in the torchvision detector,
    `rows` says it has one row per RoI (matched, as proposals may swap on float32 ties) rather than dense values."""

    label: str
    module: str
    rows: bool = False


@dataclass(frozen=True)
class DetectorKind:
    """One kind of detector.

    `build(backbone_net, num_classes, style, **kw)` makes it around a `Supernet` or `ChildNet` (`kw`: sizes,
    normalisation and torchvision options). `dense_outputs(detector, features)` are its raw head outputs on
    the FPN features: what the 'network' latency scope times. `deploy(graph, images)` is its post-processing in the
    deployable graph's fixed-shape form (`graph` a `DeployableDetector`, `images` an `ImageList` at model size),
    returning per-image dicts of boxes, scores and labels. `postprocessor(detector)` is the module holding
    `score_thresh`, `nms_thresh` and `detections_per_img` (the detector itself unless it says otherwise); `limits(detector)` returns
    the deploy path's own caps where it differs from torchvision, and caps the built detector was given (such as an
    FPN's test-time RPN proposals), read at export from the detector in eval mode and recorded in the file's metadata;
    `proposals_option` is the torchvision keyword that caps its test-time proposals (None: it has none, and
    `build_detector(proposals=...)` leaves it alone); `elastic_proposals_option` is the keyword an elastic
    space's `proposals` gene sets (FPN: the RPN's test-time proposals; RetinaNet: its pre-NMS top-k per level).
    `head_outputs` are its raw head outputs that an exported file's parity check compares with the PyTorch model's
    before NMS. `train_options(cfg)` are the `build` keywords a training run's config sets for this kind (e.g. the
    FPN's RoIs per image): training asks the kind, never its name.
    """

    model: type[nn.Module]
    build: Callable[..., nn.Module]
    dense_outputs: Callable[[nn.Module, list[torch.Tensor]], tuple[torch.Tensor, ...]]
    deploy: Callable[[Any, Any], Detections]
    postprocessor: Callable[[nn.Module], nn.Module] = lambda detector: detector
    limits: Callable[[nn.Module], Mapping[str, int]] = lambda detector: {}
    proposals_option: str | None = None
    elastic_proposals_option: str | None = None
    head_outputs: tuple[HeadOutput, ...] = ()
    train_options: Callable[[Any], Mapping[str, Any]] = lambda cfg: {}


DETECTOR_KINDS: Registry[DetectorKind] = Registry("detector kind", "--detector")


def detector_kind(name: str) -> DetectorKind:
    """The registered kind `name`; an unknown name is refused with the registered ones."""
    return DETECTOR_KINDS.get(name)


def kind_of(detector: nn.Module) -> DetectorKind:
    """The registered kind a built detector is an instance of."""
    for name in DETECTOR_KINDS:
        if isinstance(detector, DETECTOR_KINDS.get(name).model):
            return DETECTOR_KINDS.get(name)
    raise DetnasError(f"a {type(detector).__name__} is no registered detector kind ({', '.join(DETECTOR_KINDS)}); "
                      "build it with build_detector")
