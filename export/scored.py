"""Exporting a search winner as the search scored it: its settings become the export's defaults, and the written
file's AP on the search-validation split is checked against the journal's.

`best_arch.json` carries the search's settings (`detnas.search_settings`). `scored_options` fills every export
option the user left out from them and writes one note per option given with another value, naming the search's;
`check_scored_ap` evaluates the exported file on the split the search scored and compares it with the journal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detnas.errors import DetnasError
from detnas.search_settings import SearchSettings

if TYPE_CHECKING:
    from detnas.arch import Arch

#: |AP of the exported file - the journal's AP| on the search-validation split. The file letterboxes into one fixed
#: size where the scored PyTorch detector resized each image on its own; on square images at the searched size both
#: see the same pixels (the demo: 0.000-0.003 apart).
SHIPPED_AP_TOL = 0.01
STRIDE = 32  # the exported graph's input sides are multiples of the FPN's coarsest stride


@dataclass(frozen=True)
class ScoredOptions:
    """The export's options for a search winner: given ones, else the search's. `faithful` is False when one
    differs from what the search scored, so the AP check can only inform."""

    weights: Path
    bn_ann: Path
    bn_images: Path
    bn_count: int
    bn_batch: int
    proposals: int | None
    size: tuple[int, int]
    precision: str
    min_size: int
    max_size: int
    notes: tuple[str, ...] = ()  # one line per option that differs from the search's, or was adjusted
    differs: tuple[str, ...] = ()  # the options given with another value than the search's

    @property
    def faithful(self) -> bool:
        return not self.differs


def searched_size(settings: SearchSettings, arch: Arch | None = None) -> tuple[tuple[int, int], str | None]:
    """The size the search timed `arch` at, rounded up to the graph's stride (with a note when that changed it). The
    settings hold the run's size; an elastic path ran, was timed and was scored at its input-size gene's share of it
    (`path_size`), so that is the size its file must take to reproduce the journal's AP."""
    from detnas.detection.cost import path_size

    height, width = settings.latency_size if arch is None else path_size(arch, settings.latency_size)
    rounded = (STRIDE * math.ceil(height / STRIDE), STRIDE * math.ceil(width / STRIDE))
    if rounded == (height, width):
        return rounded, None
    return rounded, (f"the search timed {height}x{width}; the graph's sides are multiples of {STRIDE}, so the file "
                     f"takes {rounded[0]}x{rounded[1]}")


def scored_options(settings: SearchSettings, source: str, *, weights: Path | None = None,
                   bn_ann: Path | None = None, bn_images: Path | None = None, bn_count: int | None = None,
                   bn_batch: int | None = None, proposals: int | None = None, size: tuple[int, int] | None = None,
                   precision: str | None = None, arch: Arch | None = None) -> ScoredOptions:
    """Each option left None takes the search's value; one given with another value stays, with a note that names
    the search's. `source` names the arch file in the notes; `arch` (the winner) sets an elastic path's size."""
    from detnas.checkpoint import checkpoint_paths
    from detnas.io import file_sha256

    notes: list[str] = []
    differs: list[str] = []

    def pick(flag: str, given: Any, searched: Any, same: bool | None = None) -> Any:
        if given is None:
            return searched
        if not (given == searched if same is None else same):
            differs.append(flag)
            notes.append(f"note: {flag} {_shown(given)} differs from the search's {_shown(searched)} ({source}): the file is not "
                         "the detector the search scored")
        return given

    if weights is None and not checkpoint_paths(settings.supernet)[0].exists():
        raise DetnasError(f"{source}: the search's supernet {settings.supernet} is gone; pass --weights with that "
                          "checkpoint")
    same_weights = None
    if weights is not None:
        paths = checkpoint_paths(weights)
        same_weights = paths[0].exists() and file_sha256(paths[0])[:16] == settings.supernet_digest
    chosen_weights = pick("--weights", weights, Path(settings.supernet), same_weights)
    timed_size, size_note = searched_size(settings, arch)
    if size is None and size_note:
        notes.append(f"note: {size_note}")
    return ScoredOptions(
        weights=Path(chosen_weights),
        bn_ann=Path(pick("--bn-ann", bn_ann, Path(settings.bn_ann), _same_file(bn_ann, settings.bn_ann))),
        bn_images=Path(pick("--bn-images", bn_images, Path(settings.bn_images),
                            _same_file(bn_images, settings.bn_images))),
        bn_count=pick("--bn-count", bn_count, settings.bn_count),
        bn_batch=pick("--bn-batch", bn_batch, settings.bn_batch),
        proposals=pick("--proposals", proposals, settings.proposals),
        size=tuple(pick("--size", size and tuple(size), timed_size)),
        precision=pick("--precision", precision, settings.precision),
        min_size=settings.min_size, max_size=settings.max_size, notes=tuple(notes), differs=tuple(differs))


def _shown(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _same_file(given: Path | None, searched: str) -> bool | None:
    return None if given is None else Path(given).resolve() == Path(searched)


@dataclass
class ScoredCheck:
    """The exported file's fitness metric on the search-validation split beside the journal's, or why not checked."""

    metric: str
    journal: float | None
    exported: float | None = None
    images: int = 0
    tolerance: float = SHIPPED_AP_TOL
    faithful: bool = True
    skipped: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def within(self) -> bool | None:
        if self.exported is None or self.journal is None:
            return None
        return abs(self.exported - self.journal) <= self.tolerance

    def summary(self) -> str:
        if self.skipped:
            return f"{self.metric} not compared with the journal: {self.skipped}"
        verdict = "within" if self.within else "OUTSIDE"
        return (f"{self.metric} on {self.images} search-validation images: file {self.exported:.4f}, journal "
                f"{self.journal:.4f} ({verdict} {self.tolerance:g}"
                + ("" if self.faithful else "; for information, an option differs from the search's") + ")")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "journal": self.journal, "exported": self.exported, "images": self.images,
                "tolerance": self.tolerance, "within_tolerance": self.within, "faithful": self.faithful,
                "skipped": self.skipped, "metrics": self.metrics}

    def refuse_if_failed(self, path: Path, shown: Path | None = None) -> None:
        """A faithful export outside the tolerance is not what the search scored: the file at `path` (the export's
        staged file, to be published as `shown`) is removed, one line; an earlier file at `shown` is kept."""
        if self.faithful and self.within is False:
            path.unlink(missing_ok=True)
            raise DetnasError(f"{shown or path}: {self.summary()}; the exported file does not reproduce the search's "
                              "score, so it was not kept")


def check_scored_ap(model: Path, settings: SearchSettings, faithful: bool = True,
                    tolerance: float = SHIPPED_AP_TOL) -> ScoredCheck:
    """Evaluate the exported `model` on the first `val_count` images of the search-validation split, as the search
    scored each candidate, and put its fitness metric beside the journal's. Skipped, saying why, when the split
    is not at hand or the file has no journal metric."""
    from detnas.data import CocoDetection
    from detnas.evaluation import evaluate
    from detnas.export.runtime import exported_predictor

    check = ScoredCheck(settings.metric, settings.scored.get(settings.metric), tolerance=tolerance, faithful=faithful)
    missing = [p for p in (settings.val_ann, settings.val_images) if not Path(p).exists()]
    if missing:
        check.skipped = f"the search-validation split is not at hand ({', '.join(missing)} not found)"
    elif check.journal is None:
        check.skipped = "the arch file holds no journal metric for this arch"
    if check.skipped:
        return check
    dataset = CocoDetection(settings.val_ann, settings.val_images)
    check.metrics = {k: float(v) for k, v in evaluate(exported_predictor(model), dataset,
                                                      max_images=settings.val_count).items()}
    check.exported, check.images = check.metrics[settings.metric], min(settings.val_count, len(dataset))
    return check
