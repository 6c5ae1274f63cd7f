"""Few-shot device profile: a reference device's profile carried to this device by a handful of whole-network
measurements here, instead of the block table, stem and dozens of archs a full profile times.

The reference's block table keeps the order of the choices at each position; per-stage scales and an intercept,
fitted on up to 20 uniform random archs timed here (`LatencyPredictor.transfer`), carry it to this device. Its own
judgement is leave-one-out on those archs ('report'); `judge_fewshot` judges it against the random archs of a full
profile of this device, the comparison that says whether the shortcut holds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import torch

from detnas.arch import parse_choices
from detnas.bench.fingerprint import collect_fingerprint
from detnas.bench.models import timed_module
from detnas.bench.oracle import (
    DEFAULT_OPTIONS,
    DEFAULT_PROTOCOL,
    BackendOptions,
    TimingProtocol,
    prepare_module,
    time_interleaved,
    torch_threads,
)
from detnas.bench.predictor import LatencyPredictor
from detnas.bench.profile import PROFILE_FORMAT, half_medians, random_archs
from detnas.bench.result import PRECISIONS, Scope, check_choice
from detnas.bench.stats import HeldOutReport, judge_predictor, percentile
from detnas.errors import DetnasError
from detnas.space import SearchSpace

MAX_FEWSHOT_ARCHS = 20


def check_fewshot_archs(n_archs: int, space: SearchSpace, stages: int) -> None:
    """Refuse an --archs the transfer cannot use: fewer than it fits numbers (+1), more than the few it is for, or
    more than the space has."""
    size = len(space.choices) ** space.num_blocks
    if n_archs < stages + 2 or n_archs > MAX_FEWSHOT_ARCHS or n_archs > size:
        raise DetnasError(f"--archs {n_archs}: a few-shot profile times {stages + 2} to "
                          f"{min(MAX_FEWSHOT_ARCHS, size)} archs of space '{space.name}' (it fits {stages + 1} numbers; "
                          "a full profile is `detnas bench profile` without --from)")


def build_fewshot_profile(
    reference: dict[str, Any], space: SearchSpace, *, n_archs: int = MAX_FEWSHOT_ARCHS, backend: str = "ort",
    precision: str = "fp32", protocol: TimingProtocol = DEFAULT_PROTOCOL, options: BackendOptions = DEFAULT_OPTIONS,
    rounds: int = 10, seed: int = 0, reference_path: str = "reference", progress: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Time `n_archs` random archs here at the reference's scope, detector and input shape; fit the transfer; return
    a profile of this device (same format as `build_profile`'s) that records where its table came from."""
    if reference.get("format") != PROFILE_FORMAT or reference.get("space_digest") != space.digest:
        raise DetnasError(f"--from {reference_path}: not a latency profile of space '{space.name}' ({space.digest}); "
                          "give a profile of the same space built on the reference device")
    check_choice("precision", precision, PRECISIONS)
    base = LatencyPredictor.from_dict(reference["predictor"])
    check_fewshot_archs(n_archs, space, max(base.stage_of) + 1)
    started = time.perf_counter()
    scope, detector = Scope.parse(reference["scope"]), reference.get("detector") or "fpn"
    shape = tuple(reference["input_shape"])
    archs = random_archs(space, n_archs, set(), random.Random(seed))
    with torch_threads(protocol.threads):
        torch.manual_seed(seed)
        inputs = [torch.rand(shape, generator=torch.Generator().manual_seed(seed))]
        progress(f"preparing {len(archs)} archs at scope {scope.value}")
        runners = [prepare_module(timed_module(a, scope, detector).eval(), inputs, backend=backend, precision=precision,
                                  protocol=protocol, options=options) for a in archs]
        samples = time_interleaved(runners, protocol, rounds, progress, "archs", seed)
    measured = [percentile(s, 50) for s in samples]
    choices = [a.choices for a in archs]
    predictor = LatencyPredictor.transfer(base, choices, measured)
    loo = [LatencyPredictor.transfer(base, choices[:i] + choices[i + 1:], measured[:i] + measured[i + 1:])
           .predict(choices[i]) for i in range(len(archs))]
    halves = [half_medians(s, rounds) for s in samples]
    report = judge_predictor(loo, measured, ([h[0] for h in halves], [h[1] for h in halves]))
    fingerprint = collect_fingerprint(protocol.device, protocol.threads)
    stages = max(base.stage_of) + 1
    return {
        "format": PROFILE_FORMAT, "space": space.to_dict(), "space_digest": space.digest, "backend": backend,
        "variant": protocol.variant(options, backend), "precision": precision, "scope": scope.value,
        "detector": reference.get("detector"), "input_shape": list(shape),
        "protocol": {"warmup": protocol.warmup, "runs": protocol.runs, "rounds": rounds, "threads": protocol.threads,
                     "device": protocol.device, "clock": protocol.clock},
        "fingerprint": fingerprint.to_dict(), "fingerprint_hash": fingerprint.hash,
        "fixed_ms": dict(reference.get("fixed_ms", {})), "predictor": predictor.to_dict(),
        # each arch's leave-one-out prediction: the held-out error the search's 95 % bound is taken from
        "archs": [{"choices": a.compact(), "hash": a.hash, "split": "loo", "measured_ms": m, "predicted_ms": p,
                   "halves_ms": list(h)} for a, m, p, h in zip(archs, measured, loo, halves)],
        "report": report.to_dict(),
        "transfer": {"from": reference_path, "reference_fingerprint_hash": reference.get("fingerprint_hash"),
                     "reference_backend": reference.get("backend"), "archs": len(archs),
                     "stage_scales": list(predictor.coef[:stages]), "intercept_ms": predictor.coef[-1]},
        "build_seconds": time.perf_counter() - started,
    }


def judge_fewshot(fewshot: dict[str, Any], full: dict[str, Any]) -> HeldOutReport:
    """The few-shot profile's predictions against the random archs a full profile of the same device measured
    (with their split halves, for the noise), none of which the transfer was fitted on."""
    fitted = {a["hash"] for a in fewshot["archs"]}
    rows = [a for a in full.get("archs", []) if a.get("split") == "random" and a["hash"] not in fitted and "halves_ms" in a]
    if len(rows) < 5:
        raise DetnasError("the full profile holds fewer than 5 random archs the few-shot profile was not fitted on; "
                          "build it with --n-random 30")
    predictor = LatencyPredictor.from_dict(fewshot["predictor"])
    predicted = [predictor.predict(parse_choices(a["choices"])) for a in rows]
    return judge_predictor(predicted, [a["measured_ms"] for a in rows],
                           ([a["halves_ms"][0] for a in rows], [a["halves_ms"][1] for a in rows]))
