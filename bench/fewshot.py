"""Few-shot device profile: a reference device's profile carried to this device by a handful of whole-network
measurements here, instead of the block table, stem and dozens of archs a full profile times.

The reference's block table keeps the order of the choices at each position; per-stage scales and an intercept,
fitted on up to 20 archs timed here that span the reference table's range (`LatencyPredictor.transfer`), carry
it to this device. An elastic space's part model is carried the same way: the reference's backbone and head
contributions scaled apart, one scale, or its coarse model refitted here, whichever predicts the archs timed here
best by leave-one-out (`ElasticPredictor.transfer`). Its own judgement is leave-one-out on those archs
('report'); `judge_on` judges it beside a full profile of this device on held-out archs, the comparison that says
whether the shortcut holds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from detnas.arch import Arch
from detnas.bench.elastic_predictor import ElasticPredictor
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
from detnas.bench.profile import (
    choose_archs,
    choose_elastic_archs,
    half_medians,
    load_predictor,
    predict_latency,
    profile_header,
    random_archs,
)
from detnas.bench.profile_record import DeviceProfile
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


def fewshot_archs(space: SearchSpace, reference: LatencyPredictor | ElasticPredictor, count: int,
                  rng: random.Random) -> list[Arch]:
    """Archs spanning the reference table's range (its fastest, its slowest, the rest stratified): uniform random
    archs crowd the middle, where the stage sums barely vary and their scales cannot be told apart. In an elastic
    space, half of them stratified by the reference's prediction (the narrowest and the widest path among them) and
    half uniform random paths, as the search draws them: they crowd the middle of the range, where the fit is used
    most (all stratified, 20 paths fitted 77 % of the held-out random paths within +-10 %)."""
    if isinstance(reference, ElasticPredictor):
        spread = max(2, count // 2)
        train, test = choose_elastic_archs(space, reference.predict, spread - 2, 2, rng)
        return test + train + random_archs(space, count - spread, {a.hash for a in test + train}, rng)
    else:
        train, test = choose_archs(space, reference.table, count - 2, 2, rng)
    return test + train


def time_archs(archs: Sequence[Arch], *, scope: Scope, detector: str, shape: tuple[int, ...], backend: str,
               precision: str, protocol: TimingProtocol, options: BackendOptions, rounds: int, seed: int,
               progress: Callable[[str], None] = lambda m: None) -> list[list[float]]:
    """Every arch's runs at `scope`, all prepared first and then timed in the same interleaved rounds; an elastic
    path at its own input size (its `input_size` gene's share of `shape`'s, as the search times it)."""
    from detnas.detection.cost import path_size

    with torch_threads(protocol.threads):
        torch.manual_seed(seed)

        def inputs(arch: Arch) -> list[torch.Tensor]:
            sized = (*shape[:2], *path_size(arch, (shape[2], shape[3])))
            return [torch.rand(sized, generator=torch.Generator().manual_seed(seed))]

        progress(f"preparing {len(archs)} archs at scope {scope.value}")
        runners = [prepare_module(timed_module(a, scope, detector).eval(), inputs(a), backend=backend,
                                  precision=precision, protocol=protocol, options=options) for a in archs]
        return time_interleaved(runners, protocol, rounds, progress, "archs", seed)


def check_reference(reference: DeviceProfile, space: SearchSpace, path: str) -> LatencyPredictor | ElasticPredictor:
    if reference.space_digest != space.digest:
        raise DetnasError(f"--from {path}: not a latency profile of space '{space.name}' ({space.digest}); "
                          "give a profile of the same space built on the reference device")
    if reference.scope is None or reference.input_shape is None:
        raise DetnasError(f"--from {path}: the reference profile records no scope or input shape (an older detnas "
                          "built it); rebuild it with `detnas bench profile`")
    return load_predictor(reference)


def build_fewshot_profile(
    reference: DeviceProfile, space: SearchSpace, *, n_archs: int = MAX_FEWSHOT_ARCHS, backend: str = "ort",
    precision: str = "fp32", protocol: TimingProtocol = DEFAULT_PROTOCOL, options: BackendOptions = DEFAULT_OPTIONS,
    rounds: int = 10, seed: int = 0, reference_path: str = "reference", progress: Callable[[str], None] = lambda m: None,
) -> DeviceProfile:
    """Time `n_archs` archs here at the reference's scope, detector and input shape; fit the transfer; return a
    profile of this device (same format as `build_profile`'s) that records where its table came from."""
    base = check_reference(reference, space, reference_path)
    check_choice("precision", precision, PRECISIONS)
    check_fewshot_archs(n_archs, space, len(space.stage_depths))
    started = time.perf_counter()
    archs = fewshot_archs(space, base, n_archs, random.Random(seed))
    samples = time_archs(archs, scope=Scope.parse(reference.scope or ""), detector=reference.detector or "fpn",
                         shape=reference.input_shape or (), backend=backend, precision=precision,
                         protocol=protocol, options=options, rounds=rounds, seed=seed, progress=progress)
    profile = fit_fewshot(reference, space, archs, samples, rounds, backend=backend, precision=precision,
                          protocol=protocol, options=options, reference_path=reference_path)
    return replace(profile, build_seconds=time.perf_counter() - started)


def fit_fewshot(reference: DeviceProfile, space: SearchSpace, archs: Sequence[Arch], samples: Sequence[list[float]],
                rounds: int, *, backend: str, precision: str, protocol: TimingProtocol, options: BackendOptions,
                reference_path: str) -> DeviceProfile:
    """The few-shot profile of `archs` timed here (`samples`, in `rounds` interleaved rounds): the transfer, its
    leave-one-out judgement on those archs ('report'), and the profile fields the search checks."""
    base = check_reference(reference, space, reference_path)
    measured = [percentile(s, 50) for s in samples]
    if isinstance(base, ElasticPredictor):
        return _fit_elastic(reference, base, space, archs, samples, rounds, backend=backend, precision=precision,
                            protocol=protocol, options=options, reference_path=reference_path)
    choices = [a.choices for a in archs]
    predictor = LatencyPredictor.transfer(base, choices, measured)
    loo = [LatencyPredictor.transfer(base, choices[:i] + choices[i + 1:], measured[:i] + measured[i + 1:])
           .predict(choices[i]) for i in range(len(archs))]
    halves = [half_medians(s, rounds) for s in samples]
    report = judge_predictor(loo, measured, ([h[0] for h in halves], [h[1] for h in halves]))
    stages = max(base.stage_of) + 1
    return DeviceProfile.from_dict({
        **_header(reference, space, backend, protocol, options, precision, rounds),
        "fixed_ms": dict(reference.fixed_ms or {}), "predictor": predictor.to_dict(),
        # each arch's leave-one-out prediction: the held-out error the search's 95 % bound is taken from
        "archs": [{"choices": a.compact(), "hash": a.hash, "split": "loo", "measured_ms": m, "predicted_ms": p,
                   "halves_ms": list(h)} for a, m, p, h in zip(archs, measured, loo, halves)],
        "report": report.to_dict(),
        "transfer": {"from": reference_path, "reference_fingerprint_hash": reference.fingerprint_hash,
                     "reference_backend": reference.backend, "archs": len(archs),
                     "stage_scales": list(predictor.coef[:stages]), "intercept_ms": predictor.coef[-1]},
    }, "detnas bench profile --from")


def _fit_elastic(reference: DeviceProfile, base: ElasticPredictor, space: SearchSpace, archs: Sequence[Arch],
                 samples: Sequence[list[float]], rounds: int, *, backend: str, precision: str, protocol: TimingProtocol,
                 options: BackendOptions, reference_path: str) -> DeviceProfile:
    """`fit_fewshot` of an elastic profile: `ElasticPredictor.transfer` (backbone and head scales, one scale, or
    the coarse model refitted here, by leave-one-out), each arch's leave-one-out prediction judged."""
    measured = [percentile(s, 50) for s in samples]
    predictor, scored = ElasticPredictor.transfer(base, space, archs, measured)
    loo = [ElasticPredictor.transfer(base, space, [*archs[:i], *archs[i + 1:]], measured[:i] + measured[i + 1:])[0]
           .predict(archs[i]) for i in range(len(archs))]
    halves = [half_medians(s, rounds) for s in samples]
    report = judge_predictor(loo, measured, ([h[0] for h in halves], [h[1] for h in halves]))
    rule = min(scored, key=lambda name: scored[name])
    return DeviceProfile.from_dict({
        **_header(reference, space, backend, protocol, options, precision, rounds),
        "fixed_ms": dict(reference.fixed_ms or {}), "predictor": predictor.to_dict(),
        "archs": [{"choices": a.compact(), "hash": a.hash, "split": "loo", "measured_ms": m, "predicted_ms": p,
                   "halves_ms": list(h)} for a, m, p, h in zip(archs, measured, loo, halves)],
        "report": report.to_dict(),
        "transfer": {"from": reference_path, "reference_fingerprint_hash": reference.fingerprint_hash,
                     "reference_backend": reference.backend, "archs": len(archs), "rule": rule,
                     "loo_mape": scored, "stage_scales": _scales(base, predictor), "intercept_ms": predictor.coef[-1]},
    }, "detnas bench profile --from")


def _header(reference: DeviceProfile, space: SearchSpace, backend: str, protocol: TimingProtocol,
            options: BackendOptions, precision: str, rounds: int) -> dict[str, Any]:
    """A few-shot profile's header: timed here, at the reference's scope, detector and input shape."""
    fingerprint = collect_fingerprint(protocol.device, protocol.threads)
    return profile_header(space, backend, protocol, options, precision, Scope.parse(reference.scope or ""),
                          reference.detector, reference.input_shape or (), rounds, fingerprint)


def _scales(reference: ElasticPredictor, fitted: ElasticPredictor) -> list[float]:
    """Per column (but the intercept) how the transfer scaled the reference's coefficient (0.0 where the reference's
    is 0: the 'refit' rule's own coefficients are in the profile's predictor)."""
    return [b / a if a else 0.0 for a, b in zip(reference.coef[:-1], fitted.coef[:-1])]


def judge_on(profiles: dict[str, DeviceProfile], archs: Sequence[Arch], samples: Sequence[list[float]],
             rounds: int) -> dict[str, HeldOutReport]:
    """Each profile's predictor judged on the same held-out archs and their runs (timed in `rounds` interleaved
    rounds, with their split halves for the noise), none of which a transfer was fitted on."""
    fitted = {a.hash for p in profiles.values() for a in p.archs or () if a.split in ("train", "loo")}
    if len(archs) < 5 or fitted & {a.hash for a in archs}:
        raise DetnasError("judging needs at least 5 held-out archs, none of them fitted on")
    measured = [percentile(s, 50) for s in samples]
    halves = [half_medians(s, rounds) for s in samples]
    return {name: judge_predictor([predict_latency(p, a) for a in archs],
                                  measured, ([h[0] for h in halves], [h[1] for h in halves]))
            for name, p in profiles.items()}
