"""What an exported detector carries about itself, stored as ONNX `metadata_props` and in the TensorRT sidecar.

Everything a consumer needs to feed the model and read its answers travels with the file: the arch and its
space, the classes (contiguous label -> COCO category id and name), the input tensor spec and pixel convention,
the post-processing thresholds (score, nms_iou, max_detections, and the graph's own caps, such as the FPN RoI
head's pre_nms_top_k and its test-time rpn_proposals) and the versions that produced it. Nothing downstream re-derives these.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from detnas.arch import Arch
from detnas.bench.onnx_metadata import FORMAT, PREFIX, OnnxMetadata
from detnas.checkpoint import CheckpointMeta
from detnas.errors import DetnasError
from detnas.pixels import PixelConvention


@dataclass(frozen=True)
class ClassInfo:
    """Contiguous model label (1..K; 0 is background) -> dataset category id and name."""

    label: int
    category_id: int
    name: str


@dataclass(frozen=True)
class InputSpec:
    """One input tensor `name`: float32 NCHW RGB in [0, 1] of exactly height x width; batch None = dynamic."""

    height: int
    width: int
    batch: int | None = 1
    name: str = "images"
    dtype: str = "float32"
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    resize: str = "letterbox: scale to fit keeping aspect, place top-left, pad right/bottom with the pixel mean"

    def shape(self, batch: int | None = None) -> tuple[int, int, int, int]:
        return (batch or self.batch or 1, 3, self.height, self.width)


@dataclass(frozen=True)
class PrecisionInfo:
    """The numeric precision of the file's network and, for INT8, how its ranges were calibrated: method (with the
    percentile method's cut), image count and the sha256 of the sorted calibration file names (which images,
    without shipping them)."""

    precision: str = "fp32"
    calib_method: str | None = None
    calib_images: int = 0
    calib_digest: str | None = None
    calib_percentile: float | None = None  # the percentile method's cut (files from before it was recorded: None)


@dataclass(frozen=True)
class ModelMeta:
    """The metadata of one exported detector (see the module docstring)."""

    arch: Arch
    detector: str
    classes: tuple[ClassInfo, ...]
    input: InputSpec
    pixels: PixelConvention
    thresholds: dict[str, float]
    outputs: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    precision: PrecisionInfo = PrecisionInfo()

    def category_id(self, label: int) -> int:
        if not 1 <= label <= len(self.classes):
            raise DetnasError(f"model returned label {label}; its metadata lists labels 1..{len(self.classes)}")
        return self.classes[label - 1].category_id

    def to_props(self) -> dict[str, str]:
        """Flat string -> string pairs for ONNX metadata_props (each value is JSON)."""
        values: dict[str, Any] = {
            "format": FORMAT, "arch": self.arch.to_dict(), "space": self.arch.space.to_dict(),
            "detector": self.detector, "classes": [asdict(c) for c in self.classes], "input": asdict(self.input),
            "pixels": self.pixels.to_dict(), "thresholds": self.thresholds, "outputs": self.outputs,
            "versions": self.versions, "precision": asdict(self.precision),
        }
        return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in values.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str) -> ModelMeta:
        """Inverse of `to_props`; a file exported by something else is a one-line DetnasError."""
        return cls.from_metadata(OnnxMetadata.from_props(props, source))

    @classmethod
    def from_metadata(cls, metadata: OnnxMetadata) -> ModelMeta:
        """The typed record of metadata read by the bench's reader (`detnas.bench.onnx_metadata`)."""
        source = metadata.source
        values = metadata.values()
        if values.get("format") != FORMAT:
            raise DetnasError(f"{source}: no detnas metadata ({PREFIX}format != {FORMAT}); export the model with "
                              "`detnas export`, which records classes, input size and pixel convention")
        spec = dict(values["input"])
        spec["value_range"] = tuple(spec["value_range"])
        return cls(
            arch=Arch.from_dict(values["arch"], source=f"{source}: {PREFIX}arch"),
            detector=values["detector"],
            classes=tuple(ClassInfo(**c) for c in values["classes"]),
            input=InputSpec(**spec),
            pixels=PixelConvention.from_dict(values["pixels"]),
            thresholds=values["thresholds"],
            outputs=values["outputs"],
            versions=values["versions"],
            precision=PrecisionInfo(**values.get("precision", {})),  # files from before precision was recorded: fp32
        )


def class_table(names: list[str], label_to_cat_id: dict[int, int] | None = None) -> tuple[ClassInfo, ...]:
    """ClassInfo for labels 1..K; without a category map, category id = label."""
    mapping = label_to_cat_id or {i: i for i in range(1, len(names) + 1)}
    if sorted(mapping) != list(range(1, len(names) + 1)):
        raise DetnasError(f"class map covers labels {sorted(mapping)[:5]}...; expected exactly 1..{len(names)}")
    return tuple(ClassInfo(i, int(mapping[i]), name) for i, name in enumerate(names, start=1))


def checkpoint_difference(meta: ModelMeta, checkpoint: CheckpointMeta) -> tuple[str, str, str] | None:
    """(field, the checkpoint's value, the file's value) of the first field in which `checkpoint` is another detector
    than the exported file `meta` describes, or None when the file can be its export: the detector kind, the classes
    (names and category ids), the arch (a supernet checkpoint holds every path of its space: the space)."""
    if checkpoint.detector != meta.detector:
        return "detector kind", str(checkpoint.detector or f"none (a {checkpoint.kind} checkpoint)"), meta.detector
    classes = class_table(list(checkpoint.classes), checkpoint.label_to_cat_id or None)
    if classes != meta.classes:
        return "classes", _classes_text(classes), _classes_text(meta.classes)
    space = meta.arch.space
    if checkpoint.space.digest != space.digest:
        return "space", f"{checkpoint.space.name} ({checkpoint.space.digest})", f"{space.name} ({space.digest})"
    if checkpoint.arch is not None and checkpoint.arch.hash != meta.arch.hash:
        return "arch", f"{checkpoint.arch.hash} ({checkpoint.arch.compact()})", f"{meta.arch.hash} ({meta.arch.compact()})"
    return None


def export_difference(meta: ModelMeta, other: ModelMeta) -> tuple[str, str, str] | None:
    """(field, `other`'s value, `meta`'s value) of the first field in which `other` is another detector or input than
    `meta` (detector kind, classes, arch, input shape), or None when both are exports of one detector: one table or
    comparison may set them side by side, whatever their precision."""
    if other.detector != meta.detector:
        return "detector kind", other.detector, meta.detector
    if other.classes != meta.classes:
        return "classes", _classes_text(other.classes), _classes_text(meta.classes)
    if other.arch.hash != meta.arch.hash:
        return "arch", f"{other.arch.hash} ({other.arch.compact()})", f"{meta.arch.hash} ({meta.arch.compact()})"
    if other.input != meta.input:
        return "input", "x".join(map(str, other.input.shape())), "x".join(map(str, meta.input.shape()))
    return None


def _classes_text(classes: tuple[ClassInfo, ...], shown: int = 4) -> str:
    names = ", ".join(f"{c.name}={c.category_id}" for c in classes[:shown])
    return f"{len(classes)} ({names}{', ...' if len(classes) > shown else ''})"


def software_versions() -> dict[str, str]:
    import onnx
    import torch
    import torchvision

    import detnas

    return {"detnas": detnas.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnx": onnx.__version__}
