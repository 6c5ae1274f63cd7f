"""Rebuild a detector from a detection checkpoint: the sidecar says kind, space, arch, pixels and classes, so
nothing is guessed. The one checkpoint -> detector loader: evaluation, the search and export all come here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from detnas.arch import Arch
from detnas.checkpoint import CheckpointMeta, read_checkpoint
from detnas.detection.build import DETECTOR_KINDS, build_detector, set_arch
from detnas.detection.elastic import ElasticDetector, extract_child
from detnas.errors import DetnasError
from detnas.pixels import PixelConvention
from detnas.space import SearchSpace
from detnas.supernet import ChildNet, Supernet

DETECTION_CHECKPOINT_KINDS = ("supernet-det", "child-det")


@dataclass
class LoadedDetector:
    """A detection checkpoint, loaded: the detector with its weights (in eval mode) and what its sidecar says."""

    detector: nn.Module
    meta: CheckpointMeta
    detector_kind: str  # "fpn" or "retinanet"
    space: SearchSpace
    classes: list[str]
    pixels: PixelConvention
    min_size: int
    max_size: int
    style: str  # the recipe's detector style (see detnas.detection.build)

    @property
    def num_classes(self) -> int:
        """K + 1, as the detector was built (labels 1..K, 0 = background)."""
        return len(self.classes) + 1


def load_detection_checkpoint(path: str | Path, arch: Arch | None = None, min_size: int | None = None,
                              max_size: int | None = None, proposals: int | None = None,
                              accept: tuple[str, ...] = DETECTION_CHECKPOINT_KINDS,
                              needed_by: str = "a detector") -> LoadedDetector:
    """Load a `supernet-det` or `child-det` checkpoint (those in `accept`; `needed_by` names who refuses others).

    `arch` picks the path of a supernet checkpoint (without it the supernet runs whichever path `set_arch` sets)
    and must equal the stored arch of a child checkpoint. Sizes default to the training recipe's (else 800 /
    1333); `proposals` caps the FPN's test-time RPN proposals per image (`build_detector`).
    """
    tensors, meta = read_checkpoint(path)
    if meta.kind not in accept:
        hint = (" (a classification supernet; fine-tune it with `detnas train supernet-det` first)"
                if meta.kind == "supernet-cls" else "")
        raise DetnasError(f"{path}: checkpoint kind is '{meta.kind}'{hint}; {needed_by} needs a checkpoint "
                          f"written by detnas train of kind {' or '.join(accept)}")
    kind, classes, space, pixels = str(meta.detector), list(meta.classes), meta.space, meta.pixels
    if kind not in DETECTOR_KINDS:
        raise DetnasError(f"{path}: sidecar detector '{kind}' is not one of {', '.join(DETECTOR_KINDS)}")
    if meta.kind == "child-det" and meta.arch is not None:  # a child's sidecar always has one (CheckpointMeta)
        stored = meta.arch
        if arch is not None and arch.hash != stored.hash:
            raise DetnasError(f"{path}: checkpoint holds arch {stored.compact()}, not {arch.compact()}; "
                              "drop --arch or pass the matching checkpoint")
        body: Supernet | ChildNet = ChildNet(stored)
    else:
        body = Supernet(space)
    min_size, max_size = meta.sizes(min_size, max_size)
    style = meta.detector_style
    detector = build_detector(kind, body, len(classes) + 1, min_size, max_size, pixels, style, proposals)
    try:
        detector.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise DetnasError(f"{path}: weights do not fit a '{kind}' detector on space '{space.name}' ({first})") \
            from None
    if arch is not None:
        set_arch(detector, arch)
        if isinstance(detector, ElasticDetector):  # an elastic path runs, exports and times as its own detector
            detector = extract_child(detector, arch)
    return LoadedDetector(detector.eval(), meta, kind, space, classes, pixels, min_size, max_size, style)


def load_detector(path: str | Path, arch: Arch | None = None, min_size: int | None = None,
                  max_size: int | None = None, proposals: int | None = None) -> tuple[nn.Module, CheckpointMeta]:
    """(detector ready to run, sidecar): `load_detection_checkpoint`, where a supernet checkpoint needs `arch`."""
    loaded = load_detection_checkpoint(path, arch, min_size, max_size, proposals)
    if arch is None and loaded.meta.kind == "supernet-det":
        raise DetnasError(f"{path}: a supernet checkpoint runs one path; pass --arch")
    return loaded.detector, loaded.meta
