"""The AP gate: COCO AP of a reference (the FP32 file; for a TensorRT engine, the ONNX file it was built from) and of
the candidate on the same annotated images, through the exported predictor; a drop above the limit fails it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError


@dataclass(frozen=True)
class Gate:
    """COCO AP of the FP32 reference vs the reduced file on `ann` / `images`; fails above `max_drop` (0.01 = 1 point)."""

    ann: Path
    images: Path
    max_drop: float
    max_images: int | None = None


@dataclass(frozen=True)
class GateResult:
    """COCO AP of the FP32 reference and of the reduced file on the same images."""

    reference_ap: float
    candidate_ap: float
    images: int
    annotations: int
    max_drop: float

    @property
    def drop(self) -> float:
        return self.reference_ap - self.candidate_ap

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def summary(self, reference: str = "FP32") -> str:
        """`reference` names what the candidate was compared with (FP32 for a reduced file, ONNX for an engine)."""
        return (f"AP {self.candidate_ap:.4f} vs {reference} {self.reference_ap:.4f} on {self.images} images "
                f"({self.annotations} annotations): drop {self.drop:.4f} (limit {self.max_drop:g})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop, "passed": self.passed}


def ap_gate(reference: str | Path, candidate: str | Path, gate: Gate,
            detections_dir: Path | None = None) -> GateResult:
    """COCO AP (pycocotools) of both exported files through the exported predictor; refuses empty data and a
    reference whose AP is within the allowed drop (a gate that cannot fail). With `detections_dir`, both files' COCO
    results are kept there as reference.json and candidate.json."""
    from detnas.data.coco import CocoDetection
    from detnas.evaluation import evaluate
    from detnas.export.runtime import exported_predictor, load_exported

    dataset = CocoDetection(gate.ann, gate.images)
    count = len(dataset) if gate.max_images is None else min(gate.max_images, len(dataset))
    annotations = sum(len(r.labels) for r in dataset.records[:count])
    if count == 0 or annotations == 0:
        raise DetnasError(f"--gate-ann {gate.ann}: {count} images with {annotations} annotations; the AP gate needs "
                          "annotated images (pass the validation json and its --gate-images folder)")
    ref_runner = load_exported(reference)
    if [c.name for c in ref_runner.meta.classes] != dataset.classes:
        raise DetnasError(f"--gate-ann {gate.ann}: its classes differ from the model's "
                          f"({len(ref_runner.meta.classes)} classes); gate on data with the same category list")
    kept = {} if detections_dir is None else {side: detections_dir / f"{side}.json" for side in ("reference", "candidate")}
    reference_ap = evaluate(exported_predictor(ref_runner), dataset, kept.get("reference"), max_images=count)["AP"]
    if reference_ap <= gate.max_drop:  # no file scores below 0, so no drop could exceed the limit
        raise DetnasError(f"--gate-ann {gate.ann}: the reference {Path(reference).name} scores AP {reference_ap:.4f} on its {count} "
                          f"images, no more than the allowed drop {gate.max_drop:g}, so no file could fail; gate on "
                          "images the model detects (its validation split) or lower --max-ap-drop")
    candidate_ap = evaluate(exported_predictor(candidate), dataset, kept.get("candidate"), max_images=count)["AP"]
    return GateResult(reference_ap, candidate_ap, count, annotations, gate.max_drop)

