"""Rebuild a detector from a detection checkpoint: the sidecar says kind, space, arch, pixels and classes, so
nothing is guessed; a supernet checkpoint needs the path to run (`arch`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from detnas.arch import Arch
from detnas.checkpoint import load_checkpoint
from detnas.detection.build import DETECTOR_KINDS, build_detector, detector_style, set_arch
from detnas.errors import DetnasError
from detnas.pixels import PixelConvention
from detnas.space import SearchSpace
from detnas.supernet import ChildNet, Supernet

DETECTION_CHECKPOINT_KINDS = ("supernet-det", "child-det")


def load_detector(path: str | Path, arch: Arch | None = None, min_size: int | None = None,
                  max_size: int | None = None, **kw: Any) -> tuple[nn.Module, dict[str, Any]]:
    """(detector with the checkpoint's weights, sidecar). `arch` picks the path of a supernet checkpoint and
    must equal the stored arch of a child checkpoint; sizes default to the training recipe's (else 800/1333);
    `kw` goes to `build_detector` (e.g. test-time budgets)."""
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") not in DETECTION_CHECKPOINT_KINDS:
        raise DetnasError(f"{path}: a '{meta.get('kind')}' checkpoint is not a detector; pass one written by "
                          f"detnas train ({' or '.join(DETECTION_CHECKPOINT_KINDS)})")
    try:
        kind, classes = meta["detector"], list(meta["classes"])
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
        if arch is None:
            raise DetnasError(f"{path}: a supernet checkpoint runs one path; pass --arch")
        body = Supernet(space)
    recipe = meta.get("recipe") or {}
    min_size = int(min_size or recipe.get("min_size", 800))
    max_size = int(max_size or recipe.get("max_size", 1333))
    detector = build_detector(kind, body, len(classes) + 1, min_size, max_size, pixels, detector_style(meta), **kw)
    try:
        detector.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise DetnasError(f"{path}: weights do not fit the {kind} detector ({lines[-1].strip()})") from None
    if arch is not None:
        set_arch(detector, arch)
    return detector, meta
