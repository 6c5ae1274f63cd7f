"""Latency predictor of an elastic whole-detector space: each part's cost from its genes, linear in a few features.

An elastic path (`detnas.space`: block widths and depths, FPN width, head convs / FC, proposals, input size) has
far too many combinations for a per-path table, and its cost moves with every gene, so the op-choice table of
`LatencyPredictor` cannot predict it. Here every path is a feature row, each feature a part's cost at the path's
own input size, and latency is linear in them (fitted by relative least squares on measured paths):

- per stage, the backbone's cost: either the analytic MACs of its run blocks (`detnas.detection.cost`) or the
  measured block table ('lut': every (position, op, width multiple) block timed alone at the profile's base size,
  scaled by the path's pixels / the base's pixels); a skipped (identity) block costs nothing;
- the number of run blocks (a block pays its own node overheads whatever its width);
- the input pixels (stem, normalisation, anchors and everything else per pixel);
- beyond the backbone: the FPN + dense head MACs (FPN width, pyramid size), and the FPN width x pixels (the
  pyramid's activations: upsample-adds, ReLUs, memory traffic, which MACs (~ width²) miss);
- at network+nms: the box head MACs (its convs and FC on the RoIs), the RoI count (`proposals`, capped by the
  candidates the RPN keeps; RetinaNet: its pre-NMS top-k), which also sizes the box NMS, and RoIs x FPN width x 7x7
  (the RoIAlign output);
- an intercept (per-run overhead).

Why MACs and pixels rather than one table per input size: the input size scales every conv's work by the pixel
count, which the MACs carry exactly, and a table per size would multiply the timing by the number of sizes. Which
feature set (MACs or the measured table) and how many separate scales (one per stage and part, one per part, or
backbone / head / RoIs) predict best is decided by leave-one-out error on the measured training paths, the
held-out error the profile can see before it is used; the profile also judges every candidate on the held-out
random paths ('alternatives'), so the choice can be checked.

Measured on `bench-elastic-demo` (ORT CPU, network+nms, base 160 px, paths at 96/128/160 px, 30 training paths,
40 random ones; `bench/suite/latency_profile.py`): the block table scaled by pixels and the analytic MACs predict
the random paths equally well (MAPE 2.93-3.09 % vs 3.04-3.13 %, R² 0.989-0.990 both; in a run with all training
paths stratified 3.47-4.55 % vs 3.39-4.24 %), so the input size enters through MACs and pixels rather than a table
per size (three times the block timing for no measured gain). One scale per part ('parts', 'coarse') wins the
leave-one-out over a scale per stage ('full'), which fits the training paths' noise. Without the two
activation-volume features, paths with the narrow FPN ran 8 % over the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from detnas.arch import PAPER_DETECTOR, Arch
from detnas.errors import DetnasError
from detnas.space import SearchSpace

MODELS = ("full", "parts", "coarse")
HEAD_COLUMNS = ("neck", "neck_px", "box", "rois", "roi_px")  # from most to fewest coefficients (see `_expansion`)
FEATURE_SETS = ("macs", "lut")
ROI_BINS = 7 * 7  # RoIAlign output bins per RoI and channel
_GIGA, _MEGA, _KILO = 1e9, 1e6, 1e3


@lru_cache(maxsize=64)
def _backbone_table(space: SearchSpace, hw: tuple[int, int]) -> tuple[dict[tuple[int, float], int], ...]:
    from detnas.flops import width_table

    return width_table(space, hw)


def columns(space: SearchSpace, scope: str, kind: str) -> tuple[str, ...]:
    """Feature names, in row order, of an elastic space at `scope` with a `kind` detector."""
    names = [f"stage{s + 1}" for s in range(len(space.stage_depths))] + ["blocks", "pixels"]
    if scope != "backbone":
        names += ["neck", "neck_px"]
    if scope == "network+nms":
        names += ["box", "rois", "roi_px"] if kind == "fpn" else ["rois"]
    return (*names, "const")


@dataclass(frozen=True)
class ElasticPredictor:
    """`coef` over `columns` of the `features` set; `lut[p][(op, width)]`: ms of a block timed alone at `base`
    (empty without a measured table); `num_classes` of the timed detector (its last layers' width)."""

    KIND = "elastic-parts-linear"

    space_digest: str
    scope: str
    detector: str
    num_classes: int
    base: tuple[int, int]
    features: str
    model: str
    coef: tuple[float, ...]
    lut: tuple[dict[tuple[int, float], float], ...] = ()

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SETS or self.model not in MODELS:
            raise DetnasError(f"elastic predictor features '{self.features}' / model '{self.model}' unknown")
        if self.features == "lut" and not self.lut:
            raise DetnasError("an elastic predictor on the measured block table needs the table ('lut')")

    def row(self, arch: Arch, features: str | None = None) -> np.ndarray:
        """The feature row of a path (see the module docstring), in `columns` order."""
        from detnas.detection.cost import _head_macs, path_size

        space = arch.space
        if space.digest != self.space_digest:
            raise DetnasError(f"path of space '{space.name}' ({space.digest}) given to a latency profile of space "
                              f"{self.space_digest}; build a profile for this space")
        features = features or self.features
        hw = path_size(arch, self.base)
        pixels = hw[0] * hw[1]
        stages = len(space.stage_depths)
        names = columns(space, self.scope, self.detector)
        row = np.zeros(len(names))
        skipped, widths = set(arch.skipped_blocks()), arch.block_widths()
        table = _backbone_table(space, hw) if features == "macs" else self.lut
        scale = 1 / _GIGA if features == "macs" else pixels / (self.base[0] * self.base[1])
        for b, (stage, c, w) in enumerate(zip(space.stage_of_block(), arch.choices, widths)):
            if b in skipped:
                continue
            row[stage] += table[b][c, w] * scale
            row[stages] += 1
        row[stages + 1] = pixels / _MEGA
        if self.scope != "backbone":
            det = arch.detector or PAPER_DETECTOR
            fpn, dense, box, rois = _head_macs(space, hw, self.detector, self.num_classes, det)
            row[stages + 2] = (fpn + dense) / _GIGA
            row[stages + 3] = det.fpn_width * pixels / _GIGA
            if self.scope == "network+nms":
                if self.detector == "fpn":
                    row[stages + 4], row[stages + 5] = box / _GIGA, rois / _KILO
                    row[stages + 6] = rois * det.fpn_width * ROI_BINS / _GIGA
                else:
                    row[stages + 4] = det.proposals / _KILO
        row[-1] = 1.0
        return row

    def predict(self, arch: Arch) -> float:
        return float(self.row(arch) @ np.asarray(self.coef))

    def contributions(self, arch: Arch) -> dict[str, float]:
        """ms per column for one path (what each part costs by the fit)."""
        return dict(zip(self.names(arch.space), self.row(arch) * np.asarray(self.coef)))

    def names(self, space: SearchSpace) -> tuple[str, ...]:
        return columns(space, self.scope, self.detector)

    @classmethod
    def candidates(cls, space: SearchSpace, *, scope: str, detector: str, num_classes: int, base: tuple[int, int],
                   lut: Sequence[dict[tuple[int, float], float]] = ()) -> list[ElasticPredictor]:
        """Unfitted predictors of every feature set (the table only when measured) and model."""
        sets = FEATURE_SETS if lut else ("macs",)
        return [cls(space.digest, scope, detector, num_classes, tuple(base), f, m, (), tuple(dict(t) for t in lut))
                for f in sets for m in MODELS]

    def fitted(self, x: np.ndarray, y: np.ndarray, expansion: np.ndarray) -> ElasticPredictor:
        from detnas.bench.predictor import _relative_lstsq

        coef = _relative_lstsq(x @ expansion.T, y) @ expansion
        return ElasticPredictor(self.space_digest, self.scope, self.detector, self.num_classes, self.base,
                                self.features, self.model, tuple(float(c) for c in coef), self.lut)

    @classmethod
    def fit_candidates(cls, space: SearchSpace, archs: Sequence[Arch], measured_ms: Sequence[float], *, scope: str,
                       detector: str, num_classes: int, base: tuple[int, int],
                       lut: Sequence[dict[tuple[int, float], float]] = ()) -> dict[str, tuple[float, ElasticPredictor]]:
        """Every candidate (feature set x model) that the measured paths can fit (2 more paths than coefficients),
        fitted on all of them, by 'features/model', with its leave-one-out relative error (in %)."""
        from detnas.bench.predictor import _loo_relative_error

        y = np.asarray(measured_ms, dtype=float)
        fits: dict[str, tuple[float, ElasticPredictor]] = {}
        for candidate in cls.candidates(space, scope=scope, detector=detector, num_classes=num_classes, base=base,
                                        lut=lut):
            x = np.stack([candidate.row(a) for a in archs])
            expansion = _expansion(space, scope, detector, candidate.model)
            if len(y) < expansion.shape[0] + 2:
                continue
            fits[f"{candidate.features}/{candidate.model}"] = (100 * _loo_relative_error(x @ expansion.T, y),
                                                               candidate.fitted(x, y, expansion))
        if not fits:
            fewest = _expansion(space, scope, detector, MODELS[-1]).shape[0] + 2
            raise DetnasError(f"fitting an elastic latency predictor needs at least {fewest} measured paths, got {len(y)}")
        return fits

    @classmethod
    def fit(cls, space: SearchSpace, archs: Sequence[Arch], measured_ms: Sequence[float], *, scope: str,
            detector: str, num_classes: int, base: tuple[int, int],
            lut: Sequence[dict[tuple[int, float], float]] = ()) -> ElasticPredictor:
        """The candidate with the lowest leave-one-out error on the measured paths (see `fit_candidates`)."""
        fits = cls.fit_candidates(space, archs, measured_ms, scope=scope, detector=detector, num_classes=num_classes,
                                  base=base, lut=lut)
        return min(fits.values(), key=lambda f: f[0])[1]

    @classmethod
    def transfer(cls, reference: ElasticPredictor, space: SearchSpace, archs: Sequence[Arch],
                 measured_ms: Sequence[float]) -> tuple[ElasticPredictor, dict[str, float]]:
        """The reference device's fit carried here by a few measured paths: the reference's backbone and head
        contributions scaled apart plus an intercept ('scales'), one scale for the whole prediction plus an
        intercept ('one-scale'), or the coarse model refitted here on the same features ('refit'); the lowest
        leave-one-out error wins. A device changes how fast the backbone's small convs and the head's wide ones
        run and what a run costs besides; the reference's split of the cost within each part carries over."""
        from detnas.bench.predictor import _loo_relative_error

        names = reference.names(space)
        ref = np.asarray(reference.coef)
        head = np.array([n in HEAD_COLUMNS for n in names])
        backbone = ~head
        backbone[-1] = False
        const = np.zeros(len(names))
        const[-1] = 1.0
        options = {"one-scale": np.stack([ref * (backbone | head), const]),
                   "refit": _expansion(space, reference.scope, reference.detector, "coarse")}
        if head.any():
            options["scales"] = np.stack([ref * backbone, ref * head, const])
        x = np.stack([reference.row(a) for a in archs])
        y = np.asarray(measured_ms, dtype=float)
        scored = {name: 100 * _loo_relative_error(x @ e.T, y) for name, e in options.items() if len(y) >= e.shape[0] + 2}
        if not scored:
            raise DetnasError(f"the transfer needs at least 4 measured paths, got {len(y)}")
        best = min(scored, key=lambda name: scored[name])
        return reference.fitted(x, y, options[best]), scored

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "space_digest": self.space_digest, "scope": self.scope, "detector": self.detector,
                "num_classes": self.num_classes, "base": list(self.base), "features": self.features,
                "model": self.model, "coef": list(self.coef),
                "lut": [{f"{c}x{w:g}": ms for (c, w), ms in t.items()} for t in self.lut]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ElasticPredictor:
        def key(text: str) -> tuple[int, float]:
            op, _, width = text.partition("x")
            return int(op), float(width)

        return cls(str(data["space_digest"]), str(data["scope"]), str(data["detector"]), int(data["num_classes"]),
                   (int(data["base"][0]), int(data["base"][1])), str(data["features"]), str(data["model"]),
                   tuple(float(c) for c in data["coef"]),
                   tuple({key(k): float(v) for k, v in t.items()} for t in data.get("lut", [])))


def _expansion(space: SearchSpace, scope: str, detector: str, model: str) -> np.ndarray:
    """Reduced coefficients -> the full column layout. 'full': every column its own; 'parts': one scale for the
    backbone's stages, no per-block term, each head column its own; 'coarse': as 'parts' with one scale for the
    head's MACs (neck + box)."""
    names = columns(space, scope, detector)
    stages = len(space.stage_depths)
    if model == "full":
        return np.eye(len(names))
    groups: list[list[int]] = [list(range(stages))]
    if model == "parts":
        groups += [[names.index(n)] for n in names[stages + 1:]]  # pixels, the head's columns, const
    else:
        head = [names.index(n) for n in ("neck", "box") if n in names]
        groups += [head] if head else []
        groups += [[names.index(n)] for n in ("neck_px", "rois", "roi_px", "pixels", "const") if n in names]
    out = np.zeros((len(groups), len(names)))
    for g, members in enumerate(groups):
        out[g, members] = 1.0
    return out
