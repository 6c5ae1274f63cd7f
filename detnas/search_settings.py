"""What decided a search's scores, written beside its winner so the export rebuilds the detector the search scored.

A search scores a path of a detection supernet after re-estimating its BN statistics on some training images, at
some input sizes and proposal count, and times it at some scope, size and precision. `best_arch.json` carries
these settings (key `search`) with the winner's journal metrics, so `detnas export --arch best_arch.json` needs no
option repeated, and can say where an explicit option departs from what was scored. Paths are absolute, so the
file works from any folder. It lives in the core because the search writes it and the export reads it, and those
two rooms never import each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError

SETTINGS_KEY = "search"


@dataclass(frozen=True)
class SearchSettings:
    """The settings one search scored every candidate with (see the module docstring)."""

    supernet: str  # the detection supernet checkpoint, absolute
    supernet_digest: str  # sha256[:16] of its weights, as the journal's configuration names it
    val_ann: str  # the search-validation split, absolute
    val_images: str  # its image folder, absolute
    val_count: int  # search-validation images each candidate was scored on
    bn_ann: str  # the supernet-training split BN statistics were re-estimated on, absolute
    bn_images: str  # its image folder, absolute
    bn_count: int  # images used for BN re-estimation (the search's --bn-count, capped by the split's size)
    bn_batch: int
    min_size: int  # the detector's short side and long-side cap while scoring (and re-estimating BN)
    max_size: int
    proposals: int | None  # FPN: test-time RPN proposals per image; None for a kind without them
    detector: str  # detector kind (fpn, retinanet)
    style: str  # detector style of the supernet's recipe (torchvision, detnas)
    precision: str  # of the timed candidates
    latency_scope: str
    latency_size: tuple[int, int]
    latency_backend: str
    metric: str = "AP"  # what the fitness ranked by
    journal: str = ""  # the journal these settings head, absolute
    scored: dict[str, float] = field(default_factory=dict)  # the winner's metrics in the journal (best_arch.json)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_size"] = list(self.latency_size)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str) -> SearchSettings:
        if not isinstance(data, dict):
            raise DetnasError(f"{source}: '{SETTINGS_KEY}' must be an object of search settings")
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names - set(data) if n not in ("metric", "journal", "scored"))
        if missing:
            raise DetnasError(f"{source}: search settings lack {', '.join(missing)}; rewrite the file with "
                              "`detnas search report JOURNAL`")
        values = {k: v for k, v in data.items() if k in names}
        values["latency_size"] = tuple(int(s) for s in values["latency_size"])
        values["scored"] = {k: float(v) for k, v in (values.get("scored") or {}).items()}
        return cls(**values)

    def with_scored(self, metrics: dict[str, float]) -> SearchSettings:
        return SearchSettings(**{**self.__dict__, "scored": dict(metrics)})

    def lines(self) -> list[str]:
        """What the export takes from the search, as printed: one line per group of settings."""
        proposals = "" if self.proposals is None else f", {self.proposals} proposals"
        return [f"supernet {self.supernet} ({self.detector}, style {self.style}{proposals}, "
                f"min/max size {self.min_size}/{self.max_size})",
                f"BN re-estimated on {self.bn_count} images of {self.bn_ann} (images {self.bn_images}), "
                f"batch {self.bn_batch}",
                f"scored on {self.val_count} images of {self.val_ann} (images {self.val_images})"
                + (f": {self.metric} {self.scored[self.metric]:.4f}" if self.metric in self.scored else ""),
                f"timed at {self.latency_scope}, {'x'.join(map(str, self.latency_size))}, {self.precision} "
                f"({self.latency_backend})"]


def read_search_settings(arch_source: str) -> SearchSettings | None:
    """The settings an arch file (`best_arch.json`) carries, or None for a name, inline JSON or a plain arch file."""
    path = Path(arch_source)
    if arch_source.lstrip().startswith("{") or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # resolve_arch names what is wrong with the file
    if not isinstance(data, dict) or SETTINGS_KEY not in data:
        return None
    return SearchSettings.from_dict(data[SETTINGS_KEY], str(path))
