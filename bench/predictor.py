"""Latency predictor: a per-position lookup table of block latencies plus a learned linear correction.

Blocks timed one by one miss what the whole network pays once (framework overhead per run, memory traffic
between blocks, fusion across blocks), so the raw table sum is biased. A least-squares correction fitted on
fully measured random archs removes that bias: per stage, latency ~ scale_s * table sum of stage s, plus a term
per block of each choice (a block timed alone pays its own run overhead, and its channel split/shuffle and node
count in context differ by choice), plus one intercept that absorbs the fixed parts and the per-run overhead.
Where that correction would fit noise (few archs, a backbone that is a small share of the timed network), one
scale for the whole table sum plus the intercept is used instead, chosen by leave-one-out error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detnas.errors import DetnasError


@dataclass(frozen=True)
class LatencyPredictor:
    """`table[p][c]`: ms of choice c at block position p; `stage_of[p]`: its stage; `coef`: stage scales, per-block
    terms of every choice but the last (the intercept carries that one), intercept."""

    KIND = "lut+stage-linear+choice-count"

    table: tuple[dict[int, float], ...]
    stage_of: tuple[int, ...]
    fixed_ms: float
    coef: tuple[float, ...]

    def features(self, choices: Sequence[int]) -> np.ndarray:
        """Table sum per stage, the number of blocks of each choice but the last, and a constant."""
        if len(choices) != len(self.table):
            raise DetnasError(f"arch has {len(choices)} choices but the profile has {len(self.table)} positions")
        stages, counted = max(self.stage_of) + 1, sorted(self.table[0])[:-1]
        row = np.zeros(stages + len(counted) + 1)
        for p, c in enumerate(choices):
            if c not in self.table[p]:
                raise DetnasError(f"choice {c} at position {p} is not in the profile (it has {sorted(self.table[p])})")
            row[self.stage_of[p]] += self.table[p][c]
            if c in counted:
                row[stages + counted.index(c)] += 1
        row[-1] = 1.0
        return row

    def table_sum(self, choices: Sequence[int]) -> float:
        """Uncorrected estimate: fixed parts + every chosen block's table entry."""
        return self.fixed_ms + sum(self.table[p][c] for p, c in enumerate(choices))

    def predict(self, choices: Sequence[int]) -> float:
        return float(self.features(choices) @ np.asarray(self.coef))

    @classmethod
    def fit(cls, table: Sequence[dict[int, float]], stage_of: Sequence[int], fixed_ms: float,
            archs: Sequence[Sequence[int]], measured_ms: Sequence[float]) -> LatencyPredictor:
        """Least squares on relative error (rows scaled by 1/measured), since accuracy is judged in percent.

        Two corrections compete: the full one, and one scale for the whole table sum plus the intercept (the full
        layout with equal stage scales and no per-choice terms). The one with the lower leave-one-out error on
        the measured archs wins: where the backbone is a small share of the timed network, the full correction
        fits the measurement noise of a few archs instead of the blocks.
        """
        base = cls(tuple(dict(t) for t in table), tuple(stage_of), fixed_ms, ())
        x = np.stack([base.features(a) for a in archs])
        y = np.asarray(measured_ms, dtype=float)
        if len(y) < x.shape[1] + 2:
            raise DetnasError(f"fitting the correction needs at least {x.shape[1] + 2} measured archs, got {len(y)}")
        one_scale = np.zeros((2, x.shape[1]))  # reduced coefficients (scale, intercept) -> the full layout
        one_scale[0, : max(stage_of) + 1] = 1.0
        one_scale[1, -1] = 1.0
        expansion = min((np.eye(x.shape[1]), one_scale), key=lambda e: _loo_relative_error(x @ e.T, y))
        coef = _relative_lstsq(x @ expansion.T, y) @ expansion
        return cls(base.table, base.stage_of, fixed_ms, tuple(float(c) for c in coef))

    @classmethod
    def transfer(cls, reference: LatencyPredictor, archs: Sequence[Sequence[int]],
                 measured_ms: Sequence[float]) -> LatencyPredictor:
        """The reference device's block table carried to another device: latency ~ scale_s * table sum of stage s
        + intercept, fitted (relative least squares) on whole archs measured there, or one scale for the whole table
        when that predicts the measured archs better by leave-one-out. A device changes how fast each stage's
        convolutions run (their sizes differ by stage) and what a run costs besides, far more than the order of the
        choices within a stage, so a few archs fix these few numbers."""
        stages = max(reference.stage_of) + 1
        base = cls(reference.table, reference.stage_of, reference.fixed_ms, ())
        if len(archs) < stages + 2:
            raise DetnasError(f"the transfer fits {stages + 1} numbers and needs at least {stages + 2} measured archs, "
                              f"got {len(archs)}")
        x = np.stack([base.features(a) for a in archs])
        y = np.asarray(measured_ms, dtype=float)
        per_stage = np.zeros((stages + 1, x.shape[1]))  # reduced coefficients -> the full layout
        per_stage[np.arange(stages), np.arange(stages)] = 1.0
        per_stage[-1, -1] = 1.0
        one_scale = np.zeros((2, x.shape[1]))
        one_scale[0, :stages] = 1.0
        one_scale[1, -1] = 1.0
        # per-stage scales fit the noise when the archs' stage sums barely vary: one scale wins by leave-one-out then
        expansion = min((per_stage, one_scale), key=lambda e: _loo_relative_error(x @ e.T, y))
        coef = _relative_lstsq(x @ expansion.T, y) @ expansion
        return cls(base.table, base.stage_of, base.fixed_ms, tuple(float(c) for c in coef))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "table": [{str(c): ms for c, ms in t.items()} for t in self.table],
            "stage_of": list(self.stage_of),
            "fixed_ms": self.fixed_ms,
            "coef": list(self.coef),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyPredictor:
        if data.get("kind") != cls.KIND:
            raise DetnasError(f"latency profile predictor is of kind '{data.get('kind')}', not '{cls.KIND}' (an older "
                              "detnas wrote it); rebuild the profile with `detnas bench profile`")
        return cls(
            table=tuple({int(c): float(ms) for c, ms in t.items()} for t in data["table"]),
            stage_of=tuple(int(s) for s in data["stage_of"]),
            fixed_ms=float(data["fixed_ms"]),
            coef=tuple(float(c) for c in data["coef"]),
        )


def _relative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return coef


def _loo_relative_error(x: np.ndarray, y: np.ndarray) -> float:
    """Mean |error| / measured of each arch predicted by the fit on all the others."""
    keep = np.ones(len(y), dtype=bool)
    errors = []
    for i in range(len(y)):
        keep[i] = False
        errors.append(abs(x[i] @ _relative_lstsq(x[keep], y[keep]) - y[i]) / y[i])
        keep[i] = True
    return float(np.mean(errors))
