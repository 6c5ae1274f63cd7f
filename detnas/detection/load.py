"""Rebuild a detector from a detection checkpoint: the sidecar says kind, space, arch, pixels and classes, so
nothing is guessed. The one checkpoint -> detector loader: evaluation, the search and export all come here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from detnas.arch import Arch
from detnas.checkpoint import load_checkpoint
from detnas.detection.build import DETECTOR_KINDS, build_detector, detector_style, set_arch
from detnas.detection.elastic import ElasticDetector, extract_child
from detnas.errors import DetnasError
from detnas.pixels import PixelConvention
from detnas.sizes import checkpoint_sizes
from detnas.space import SearchSpace
from detnas.supernet import ChildNet, Supernet

DETECTION_CHECKPOINT_KINDS = ("supernet-det", "child-det")


@dataclass
class LoadedDetector:
    """A detection checkpoint, loaded: the detector with its weights (in eval mode) and what its sidecar says."""

    detector: nn.Module
    meta: dict[str, Any]
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
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") not in accept:
        hint = (" (a classification supernet; fine-tune it with `detnas train supernet-det` first)"
                if meta.get("kind") == "supernet-cls" else "")
        raise DetnasError(f"{path}: checkpoint kind is '{meta.get('kind')}'{hint}; {needed_by} needs a checkpoint "
                          f"written by detnas train of kind {' or '.join(accept)}")
    try:
        kind, classes = str(meta["detector"]), list(meta["classes"])
        space = SearchSpace.from_dict(meta["space"], source=f"{path}: space")
        pixels = PixelConvention.from_dict(meta["pixels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DetnasError(f"{path}: sidecar lacks or garbles {exc}; pass a checkpoint written by detnas train") \
            from None
    if kind not in DETECTOR_KINDS:
        raise DetnasError(f"{path}: sidecar detector '{kind}' is not one of {', '.join(DETECTOR_KINDS)}")
    if meta["kind"] == "child-det":
        stored = Arch.from_dict(meta.get("arch"), source=f"{path}: arch")
        if arch is not None and arch.hash != stored.hash:
            raise DetnasError(f"{path}: checkpoint holds arch {stored.compact()}, not {arch.compact()}; "
                              "drop --arch or pass the matching checkpoint")
        body: Supernet | ChildNet = ChildNet(stored)
    else:
        body = Supernet(space)
    min_size, max_size = checkpoint_sizes(meta, min_size, max_size)
    style = detector_style(meta)
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
                  max_size: int | None = None, proposals: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(detector ready to run, sidecar): `load_detection_checkpoint`, where a supernet checkpoint needs `arch`."""
    loaded = load_detection_checkpoint(path, arch, min_size, max_size, proposals)
    if arch is None and loaded.meta["kind"] == "supernet-det":
        raise DetnasError(f"{path}: a supernet checkpoint runs one path; pass --arch")
    return loaded.detector, loaded.meta
