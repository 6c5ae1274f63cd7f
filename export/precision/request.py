"""What `--precision` asks for, validated (and its calibration images read) before any export work."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from detnas.bench.result import PRECISIONS
from detnas.errors import DetnasError
from detnas.export.metadata import PrecisionInfo
from detnas.export.precision.gate import Gate
from detnas.export.precision.quantize import CALIB_COUNT, CALIB_METHODS, DEFAULT_CALIB_METHOD, percentile_cut
from detnas.images import image_files, shared_images


@dataclass(frozen=True)
class Calibration:
    """The calibration images of an INT8 file: the files, where the list came from and the range method."""

    files: tuple[Path, ...]
    images: tuple[torch.Tensor, ...]  # uint8 CHW, read up front so a bad file fails before any export
    method: str
    source: str

    @property
    def digest(self) -> str:
        """sha256 of the sorted file names, one a line: which images calibrated the file, without shipping them."""
        return hashlib.sha256("\n".join(sorted(f.name for f in self.files)).encode()).hexdigest()


@dataclass(frozen=True)
class PrecisionRequest:
    """What `--precision` asks for, validated before any export work."""

    precision: str = "fp32"
    calibration: Calibration | None = None
    gate: Gate | None = None

    @property
    def reduced(self) -> bool:
        return self.precision != "fp32"

    def info(self) -> PrecisionInfo:
        cal = self.calibration
        if cal is None:
            return PrecisionInfo(self.precision)
        return PrecisionInfo(self.precision, cal.method, len(cal.files), cal.digest, percentile_cut(cal.method))


def training_split(weights: str | Path) -> tuple[Path, Path | None] | None:
    """(image folder, COCO json or None) of the run that wrote `weights`, from the run's config.json (next to
    `final.*` or one level above `checkpoints/`); None when the checkpoint does not come from a detnas run."""
    for folder in (Path(weights).parent, Path(weights).parent.parent):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data, ann = Path(str(config.get("data") or "")), str(config.get("ann") or "")
        if config.get("task") == "det" and data.is_dir():
            return data, Path(ann) if ann.endswith(".json") and Path(ann).is_file() else None
    return None


def refuse_calibration_options(calib_data: Path | None, calib_images: int | None, calib_method: str | None = None, *,
                               why: str, fix: str) -> None:
    """Where nothing is calibrated, INT8 calibration options given (not None: their defaults are resolved only for an
    INT8 conversion) are refused in one line naming them, `why` and the `fix`, rather than silently ignored."""
    given = [f"--{name}" for name, value in (("calib-images", calib_data), ("calib-count", calib_images),
                                             ("calib-method", calib_method)) if value is not None]
    if given:
        raise DetnasError(f"{', '.join(given)}: INT8 calibration options, but {why}; drop them, or {fix}")


def evaluated_files(gate: Gate) -> list[Path]:
    """The image files the AP gate evaluates: those its annotation file lists, in its image folder."""
    from detnas.data.coco import read_coco_json

    return [gate.images / im["file_name"] for im in read_coco_json(gate.ann)["images"]]


def _split_files(images_dir: Path, ann: Path | None) -> list[Path]:
    if ann is None:
        return image_files(images_dir)
    from detnas.data.coco import read_coco_json

    return sorted(images_dir / im["file_name"] for im in read_coco_json(ann)["images"])


def precision_request(precision: str, *, weights: Path, calib_data: Path | None, calib_images: int | None,
                      calib_method: str | None, gate_data: Path | None, gate_images: Path | None, max_ap_drop: float,
                      dynamic_batch: bool) -> PrecisionRequest:
    """Validate the precision options and read the calibration images (bad input is a one-line error, before
    anything is exported). INT8 calibrates on --calib-images, else on the training split recorded by the run that
    wrote `weights`; never on the gate's (evaluation) images. The calibration options are None unless given
    (defaults: CALIB_COUNT images, DEFAULT_CALIB_METHOD): given for an FP32 or FP16 file, which nothing calibrates,
    they are refused rather than silently ignored."""
    from detnas.images import read_image

    if precision not in PRECISIONS:
        raise DetnasError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if precision != "int8":
        refuse_calibration_options(calib_data, calib_images, calib_method, why=f"the file is {precision}, which "
                                   "nothing calibrates", fix="pass --precision int8")
    calib_images = CALIB_COUNT if calib_images is None else calib_images
    calib_method = calib_method or DEFAULT_CALIB_METHOD
    if calib_method not in CALIB_METHODS:
        raise DetnasError(f"--calib-method {calib_method}: choose one of {', '.join(CALIB_METHODS)}")
    if not 0 <= max_ap_drop <= 1:  # also refuses nan (every comparison with it is false) and inf
        raise DetnasError(f"--max-ap-drop {max_ap_drop}: the largest allowed AP drop is a number from 0 to 1 "
                          "(AP is a fraction; 0.01 = 1 AP point)")
    if calib_images < 1:
        raise DetnasError(f"--calib-count {calib_images}: calibrate on at least 1 image (a few hundred is typical)")
    gate = Gate(gate_data, gate_images, max_ap_drop) if gate_data and gate_images else None
    if precision == "fp32":
        return PrecisionRequest(gate=gate)  # a TensorRT engine is gated against the FP32 file
    if dynamic_batch:
        raise DetnasError(f"--precision {precision} with --dynamic-batch: the batch Loop's body cannot be converted; "
                          "export a fixed batch (--batch N)")
    if precision == "fp16":
        return PrecisionRequest(precision, gate=gate)
    if calib_data is not None:
        files, source = image_files(calib_data), f"--calib-images {calib_data}"
    elif (split := training_split(weights)) is not None:
        files, source = _split_files(*split), f"the training split of {weights} ({split[1] or split[0]})"
    else:
        raise DetnasError(f"--precision int8 needs calibration images: pass --calib-images DIR (training images; "
                          f"the run that wrote {weights} records no training split)")
    if len(files) < calib_images:
        raise DetnasError(f"--calib-count {calib_images}: {source} has only {len(files)} images; lower "
                          "--calib-count or add images")
    files = files[:calib_images]
    if gate is not None and (overlap := shared_images(files, evaluated_files(gate))):
        raise DetnasError(f"--calib-images: {len(overlap)} calibration images (e.g. {overlap[0].name}) are images of "
                          f"--gate-ann {gate.ann} (same file name or content); calibrate on training images, not on "
                          "the evaluation split")
    images = []
    for f in files:
        try:
            images.append(read_image(f))
        except DetnasError as exc:
            raise DetnasError(f"--calib-images: {exc}; remove the file or pass a folder of readable images") from None
    return PrecisionRequest(precision, Calibration(tuple(files), tuple(images), calib_method, source), gate)

