"""INT8 that keeps its accuracy by itself: when the full INT8 file fails the AP gate, the fewest quantized layers
are kept in FP32 (ORT's `nodes_to_exclude`; TensorRT runs a layer without Q/DQ inputs in FP16/FP32) until the
file passes the gate on the gate images.

Order of the search, cheapest first:
1. `--calib-method auto` tries the range methods (`AUTO_ORDER`) as full INT8 files: one quantization and one AP
   evaluation each, and a full INT8 file is the fastest there is; the first to pass is the file.
2. Otherwise (and only with `partial`) the layers of the full INT8 file with the smallest drop are ranked by
   sensitivity (`sensitivity.layer_sensitivity`: SQNR on the calibration images, one pass) and the k most
   sensitive kept in FP32, k growing 1, 2, 4, 8 ... until the gate passes, then bisected between the last k that
   failed and the first that passed: about 2 log2(layers) trials, not one per layer. Keeping every layer is the
   FP32 network; when even that fails, the search refuses.

Time budget: at most `max_trials(layers, methods)` quantizations + AP evaluations (printed before the search),
and after `PARTIAL_BUDGET_S` seconds the bisection stops at the fewest kept layers that passed so far. The
reference (the FP32 file) is scored once, and its refusals (no annotations, a reference within the allowed drop)
come before any INT8 file is made.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detnas.errors import DetnasError
from detnas.export.precision.gate import Gate, GateResult, GateScorer
from detnas.export.precision.quantize import AUTO, DEFAULT_CALIB_METHOD, quantize_int8
from detnas.export.precision.sensitivity import LayerSensitivity, layer_sensitivity

#: `--calib-method auto`: the default first (it passed on every detector measured), then the histogram methods
AUTO_ORDER = (DEFAULT_CALIB_METHOD, "percentile", "entropy", "minmax")
#: wall-clock seconds after which the bisection keeps the best passing file it has (the doubling always finishes)
PARTIAL_BUDGET_S = 900.0


def max_trials(layers: int, methods: int) -> int:
    """Upper bound of quantizations + AP evaluations: each method once, the doubling (k = 1, 2, 4 ... layers) and
    the bisection between two doubling steps."""
    steps = math.ceil(math.log2(layers)) if layers > 1 else 0
    return methods + (steps + 1) + max(steps - 1, 0)


@dataclass(frozen=True)
class Trial:
    """One candidate file: its range method, how many layers it kept in FP32, its gate result and its cost."""

    method: str
    kept: int
    gate: GateResult
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "kept": self.kept, "gate": self.gate.to_dict(), "seconds": self.seconds}


@dataclass
class Int8Search:
    """What the search chose (method, the layers kept in FP32 with their sensitivity) and every trial it judged."""

    method: str
    kept: tuple[LayerSensitivity, ...]
    ranked: tuple[LayerSensitivity, ...]
    trials: list[Trial]
    budget_trials: int
    seconds: float
    reason: str
    latency_share: dict[str, float] = field(default_factory=dict)  # kept layer -> share of the FP32 file's node time

    @property
    def gate(self) -> GateResult:
        return next(t.gate for t in reversed(self.trials) if t.method == self.method and t.kept == len(self.kept)
                    and t.gate.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "budget_trials": self.budget_trials,
                "seconds": self.seconds, "quantized_layers": len(self.ranked),
                "kept_fp32": [{**asdict(s), "latency_share": self.latency_share.get(s.layer)} for s in self.kept],
                "trials": [t.to_dict() for t in self.trials]}


def search_int8(fp32: Path, target: Path, batches: Sequence[np.ndarray], method: str, gate: Gate, partial: bool,
                say: Callable[[str], None] = lambda _line: None, budget_s: float = PARTIAL_BUDGET_S) -> Int8Search:
    """The INT8 file at `target` that passes `gate` with the fewest layers in FP32 (see the module docstring), or
    a one-line refusal naming what was tried."""
    import onnx

    from detnas.export.precision.quantize import quantized_nodes

    start = time.perf_counter()
    scorer = GateScorer(fp32, gate)  # refuses a reference that cannot pass, before any INT8 file exists
    methods = AUTO_ORDER if method == AUTO else (method,)
    layers = len(quantized_nodes(onnx.load(str(fp32), load_external_data=False).graph))
    budget = max_trials(layers, len(methods)) if partial else len(methods)
    say(f"  INT8 search: up to {budget} trials (quantize + AP on {scorer.count} gate images), "
        f"bisection stops after {budget_s:g} s")
    trials: list[Trial] = []
    work = target.parent

    def attempt(m: str, exclude: Sequence[str], name: str) -> tuple[Trial, Path]:
        began = time.perf_counter()
        path = quantize_int8(fp32, work / name, batches, m, exclude)
        trial = Trial(m, len(exclude), scorer.judge(path), time.perf_counter() - began)
        trials.append(trial)
        say(f"    {m}, {len(exclude)} of {layers} layers FP32: {trial.gate.summary()} -> "
            f"{'pass' if trial.gate.passed else 'fail'}")
        return trial, path

    full = {}
    for m in methods:
        trial, path = attempt(m, (), f"full-{m}.onnx")
        if trial.gate.passed:
            os.replace(path, target)
            return Int8Search(m, (), (), trials, budget, time.perf_counter() - start,
                              f"full INT8 with {m} ranges passed the gate")
        full[m] = path
    failed = "; ".join(f"{t.method} drop {t.gate.drop:.4f}" for t in trials)
    if not partial:
        raise DetnasError(f"AP gate FAILED: int8 {trials[-1].gate.summary()} (full INT8: {failed}); nothing written "
                          f"to {target.name}; --partial keeps the most sensitive layers FP32")
    best = min(trials, key=lambda t: t.gate.drop).method
    ranked = tuple(layer_sensitivity(fp32, full[best], batches))
    names = [s.layer for s in ranked]
    passed: tuple[int, Path] | None = None
    failed_k, k = 0, 1
    while passed is None:
        k = min(k, len(names))
        trial, path = attempt(best, names[:k], f"keep-{k}.onnx")
        if trial.gate.passed:
            passed = (k, path)
        elif k == len(names):
            raise DetnasError(f"AP gate FAILED even with all {k} quantized layers FP32 ({best} ranges: "
                              f"{trial.gate.summary()}); nothing written to {target.name}; the loss is not in the "
                              "quantized layers: export fp16 or fp32")
        else:
            failed_k, k = k, 2 * k
    while passed[0] - failed_k > 1 and time.perf_counter() - start < budget_s:
        mid = (failed_k + passed[0]) // 2
        trial, path = attempt(best, names[:mid], f"keep-{mid}.onnx")
        if trial.gate.passed:
            passed = (mid, path)
        else:
            failed_k = mid
    os.replace(passed[1], target)
    kept = ranked[:passed[0]]
    closest = min(trials[:len(methods)], key=lambda t: t.gate.drop)
    reason = (f"full INT8 failed the AP gate ({failed}); the {passed[0]} lowest-SQNR of {len(ranked)} quantized "
              f"layers ({best} ranges) stay FP32, the fewest that passed (drop {closest.gate.drop:.4f} -> "
              f"{next(t.gate.drop for t in reversed(trials) if t.kept == passed[0]):.4f}, limit {gate.max_drop:g})")
    return Int8Search(best, kept, ranked, trials, budget, time.perf_counter() - start, reason)

