"""`detnas search run` as a Python call: wire the supernet, the data, the latency source and the evolution.

Every check that can refuse the request (checkpoint kind, space, classes, profile fingerprint, unreachable
target, journal of another configuration) runs before the journal is touched.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detnas.detection.recalibrate import BN_BATCH, BN_IMAGES
from detnas.detection.supernet_path import SupernetDetector
from detnas.distributed import init_distributed, shutdown_distributed
from detnas.errors import DetnasError
from detnas.evaluation import fitness_metric
from detnas.io import remove_stale_temps
from detnas.lock import RUN_MARKERS, output_lock
from detnas.search.evaluators import DetectionAP
from detnas.search.evolution import FRESH_ROUNDS, EvolutionSettings, Search
from detnas.search.interfaces import BackboneCost, LatencyEstimator
from detnas.search.latency import OracleLatency, ProfileLatency, Timing, check_target_reachable
from detnas.search.objectives import Constraints, bound_confidence
from detnas.search.probe import ProbeResult, probe_range
from detnas.search.report import SearchRun, write_report
from detnas.search.targets import Target
from detnas.search_settings import SearchSettings
from detnas.space import get_space

if TYPE_CHECKING:
    from detnas.bench.precision import OnnxConverters

logger = logging.getLogger(__name__)
JOURNAL_NAME = RUN_MARKERS["search"]
LATENCY_IMAGES = 4  # real images the latency is timed on (cycled through the timed runs)


@dataclass(kw_only=True)
class SearchRequest:
    """Everything `detnas search run` takes; see the CLI for each field's meaning."""

    supernet: Path
    data: Path
    images: Path
    bn_data: Path
    out: Path
    bn_images_dir: Path | None = None
    settings: EvolutionSettings = field(default_factory=EvolutionSettings)
    constraints: Constraints = field(default_factory=Constraints)
    timing: Timing = field(default_factory=Timing)
    latency_profile: Path | None = None
    force_profile: bool = False
    latency_cache: Path | None = None
    space: str | None = None
    flops_size: int = 224
    bn_images: int = BN_IMAGES
    bn_batch: int = BN_BATCH
    val_images: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    proposals: int | None = None
    resume: bool = False
    top_k: int = 10
    fresh_rounds: int = FRESH_ROUNDS
    targets: list[Target] = field(default_factory=list)  # several named targets (`constraints.targets` mirrors them)
    onnx_converters: OnnxConverters | None = None  # FP16 timing on ONNX Runtime's CPU provider needs export's


def _datasets(request: SearchRequest, supernet: SupernetDetector) -> tuple[Any, Any]:
    from detnas.data import CocoDetection
    from detnas.data.split import shared_images

    val = CocoDetection(request.data, request.images)
    bn = CocoDetection(request.bn_data, request.bn_images_dir or request.images)
    for dataset, path in ((val, request.data), (bn, request.bn_data)):
        supernet.require_classes(dataset, path)
    shared = shared_images(val.records, bn.records)
    if shared:
        raise DetnasError(f"{request.data} and {request.bn_data} share {shared} images (same ids, files or contents); "
                          "BN recalibration must not see the evaluation images: use the two parts of `detnas data "
                          "split` (search-validation and supernet-training)")
    return val, bn


def measured_latency(supernet: SupernetDetector, val: Any, timing: Timing, cache: Path | None = None,
                     converters: OnnxConverters | None = None, bn: Any = None,
                     confidence: float = 0.95) -> tuple[Timing, OracleLatency]:
    """The search's measuring oracle and its timing with the supernet's detector kind and deployment size filled in.

    Beyond the backbone scope it times each candidate's own detector materialised from the supernet (BN statistics
    are the supernet's: latency is planned before evaluation recalibrates them) on the first search-validation
    images at the timed size. INT8 timing files take their ranges from the first image of `bn` (the
    supernet-training split), never from the evaluation split."""
    from detnas.bench.inputs import resized_batches

    timing = replace(timing, detector=supernet.detector_kind, size=timing.size or (supernet.min_size, supernet.max_size))
    calibration = (resized_batches([bn.load_image(0)] * timing.batch, timing.batch, timing.size, supernet.pixels)
                   if timing.precision == "int8" and bn is not None and len(bn) else None)
    if timing.scope == "backbone":
        return timing, OracleLatency(timing, cache, converters=converters, calibration=calibration,
                                     confidence=confidence)
    from detnas.bench.oracle import TrainedDetector

    count = min(len(val), max(timing.batch, LATENCY_IMAGES))
    images = resized_batches([val.load_image(i) for i in range(count)], timing.batch, timing.size, supernet.pixels)
    return timing, OracleLatency(timing, cache, images, TrainedDetector(supernet.materialize,
                                                                        f"supernet-det:{supernet.digest}"), converters,
                                 calibration, confidence)


def _context(request: SearchRequest, digest: str, val: Any, bn: Any, latency: LatencyEstimator, timing: Timing,
             sizes: tuple[int, int], sources: dict[str, LatencyEstimator]) -> dict[str, Any]:
    """What besides the search knobs decides the journal's numbers; a resume must match it exactly."""
    source = ({"latency_profile": str(request.latency_profile), "profile_fingerprint": latency.fingerprint}
              if request.latency_profile else {"latency_fingerprint": latency.fingerprint})
    if request.targets:
        source = {"latency_profiles": {t.name: str(t.profile) for t in request.targets if t.profile},
                  "latency_fingerprints": {name: e.fingerprint for name, e in sources.items()}}
    return {"supernet": digest, "data": str(request.data), "val_images": len(val) if request.val_images is None
            else min(request.val_images, len(val)), "bn_data": str(request.bn_data), "bn_images": request.bn_images,
            "bn_batch": request.bn_batch, "min_size": sizes[0], "max_size": sizes[1], "proposals": request.proposals,
            "timing": timing.to_dict(), "flops_size": request.flops_size,
            **source}


def check_feasibility_rule(constraints: Constraints, latency: LatencyEstimator, timing: Timing,
                           confidence: float) -> None:
    """Refuse a hard target under --feasibility ucb95 when the latency source cannot bound its medians: too few
    timed runs for the confidence the search's budget asks, or a profile without held-out archs."""
    if not (constraints.latency_is_hard or constraints.targets) or constraints.feasibility != "ucb95":
        return
    from detnas.bench.stats import min_runs_for_bound

    if isinstance(latency, ProfileLatency):
        if latency.error_quantile is None:
            raise DetnasError("--latency-profile: the profile records too few held-out archs to bound its predictions "
                              "(--feasibility ucb95); rebuild it with `detnas bench profile` or pass --feasibility median")
    elif timing.runs < (needed := min_runs_for_bound(confidence)):
        raise DetnasError(f"--latency-runs {timing.runs} cannot bound a median at {100 * confidence:.6g} % (--feasibility "
                          f"ucb95 over --population x --generations candidates needs at least {needed} runs); raise "
                          "--latency-runs or pass --feasibility median")


def scored_with(request: SearchRequest, supernet: SupernetDetector, val: Any, bn: Any, timing: Timing,
                metric: str) -> SearchSettings:
    """The settings every candidate is scored with, resolved (absolute paths, the detector's own sizes and
    proposals), for the journal header and `best_arch.json`: what the export needs to rebuild a scored path."""
    from detnas.detection.kinds import kind_of

    # an elastic space's paths take their proposals from their own gene (the arch records it): no run-wide setting
    proposals = None if supernet.space.elastic else kind_of(supernet.detector).limits(supernet.detector).get("rpn_proposals")
    assert timing.size is not None  # measured_latency filled it in
    return SearchSettings(
        supernet=str(request.supernet.resolve()), supernet_digest=supernet.digest,
        val_ann=str(request.data.resolve()), val_images=str(request.images.resolve()),
        val_count=len(val) if request.val_images is None else min(request.val_images, len(val)),
        bn_ann=str(request.bn_data.resolve()), bn_images=str((request.bn_images_dir or request.images).resolve()),
        bn_count=min(request.bn_images, len(bn)), bn_batch=request.bn_batch,
        min_size=supernet.min_size, max_size=supernet.max_size,
        proposals=None if proposals is None else int(proposals), detector=supernet.detector_kind,
        style=supernet.style, precision=timing.precision, latency_scope=timing.scope,
        latency_size=(int(timing.size[0]), int(timing.size[1])), latency_backend=timing.backend, metric=metric,
        journal=str((request.out / JOURNAL_NAME).resolve()))


@dataclass
class _Latencies:
    """Where the search's latencies come from: the measuring oracle and its filled-in timing, the one-target
    search's source (the first named target's with several) and each named target's."""

    timing: Timing
    measured: OracleLatency
    latency: LatencyEstimator
    sources: dict[str, LatencyEstimator]


def _checked_supernet(request: SearchRequest, supernet: SupernetDetector) -> None:
    """--space (a registered name or a .json/.yaml space file, parsed here so a malformed file gets its own error)
    must be the space the checkpoint was trained on, compared by the parsed space's name, never by the path string
    (a file of that name with other widths is refused as it registers)."""
    if not request.space:
        return
    wanted = get_space(request.space)
    if wanted.name != supernet.space.name:
        named = f"'{wanted.name}'" + (f" of {request.space}" if wanted.name != request.space else "")
        raise DetnasError(f"{request.supernet}: checkpoint is a supernet of space '{supernet.space.name}', "
                          f"not {named}; pass the detection supernet of that space")


def _latencies(request: SearchRequest, supernet: SupernetDetector, val: Any, bn: Any,
               confidence: float) -> _Latencies:
    timing, measured = measured_latency(supernet, val, request.timing, request.latency_cache,
                                        request.onnx_converters, bn, confidence)

    def source(profile: Path | None) -> LatencyEstimator:
        return (ProfileLatency(profile, supernet.space, timing, request.force_profile, confidence) if profile
                else measured)

    sources = {t.name: source(t.profile) for t in request.targets}
    latency = sources[request.targets[0].name] if request.targets else source(request.latency_profile)
    return _Latencies(timing, measured, latency, sources)


def probe_search(request: SearchRequest) -> dict[str, ProbeResult]:
    """Time the fastest and slowest probe architectures as the search would time its candidates (same scope, size,
    backend, cache or profile), before any journal or output folder exists: the range a latency target can be
    picked from. Keyed by named target (each with its own latency source; one probe per distinct source), or ''
    for a one-target search. Progress goes to the `detnas.search.probe` logger."""
    supernet = SupernetDetector.load(request.supernet, request.min_size, request.max_size, request.proposals)
    _checked_supernet(request, supernet)
    val, bn = _datasets(request, supernet)
    confidence = bound_confidence(request.settings.budget)
    latencies = _latencies(request, supernet, val, bn, confidence)
    timing = latencies.timing
    assert timing.size is not None  # measured_latency filled it in
    what = (f"{timing.scope} at {'x'.join(map(str, timing.size))}, batch {timing.batch}, {timing.backend} on "
            f"{timing.device}, {timing.precision}, ")
    estimators = {t.name: (latencies.sources[t.name], t.profile) for t in request.targets} or {
        "": (latencies.latency, request.latency_profile)}
    probed: dict[int, ProbeResult] = {}
    results = {}
    for name, (estimator, profile) in estimators.items():
        if id(estimator) not in probed:  # targets measured here share one probe
            for caveat in estimator.caveats if isinstance(estimator, ProfileLatency) else ():
                logger.warning(caveat)
            how = f"predicted by the profile {profile}" if profile else f"{timing.runs} timed runs each"
            probed[id(estimator)] = probe_range(supernet.space, estimator, (request.flops_size, request.flops_size),
                                                what + how + (f" (target {name})" if name else ""))
        results[name] = probed[id(estimator)]
    return results


@dataclass
class SearchOutcome:
    """The report (None on ranks > 0) and where this session's time went, for `bench/suite/search_cost.py`."""

    run: SearchRun | None
    search_s: float  # Search.run: planning (incl. latency) and evaluation of every candidate
    latency_s: float  # of which spent in the latency estimator
    evaluated: int  # candidates evaluated in this session
    cache_hits: int
    cache_lookups: int


def run_search(request: SearchRequest) -> SearchOutcome:
    """Run or resume a search to the end, time the winner and the runner-up afresh and write the report; progress
    goes to the `detnas.search.runner` and `detnas.search.evolution` loggers (the CLI prints them)."""
    dist_context = init_distributed(request.timing.device)
    device = str(dist_context.device)  # this rank's device under torchrun
    held = ExitStack()
    try:
        # the checkpoint is read first: a bad one is refused before the output folder (and its lock) exists
        supernet = SupernetDetector.load(request.supernet, request.min_size, request.max_size, request.proposals)
        if dist_context.rank == 0:  # one run per output folder, before any work that writes
            held.enter_context(output_lock(request.out, kind="search", log=logger.info))
        _checked_supernet(request, supernet)
        val, bn = _datasets(request, supernet)
        constraints, note = request.constraints.resolve(supernet.space.name, request.flops_size, fitness_metric(val))
        logger.info(note)
        confidence = bound_confidence(request.settings.budget)
        latencies = _latencies(request, supernet, val, bn, confidence)
        timing, measured, latency, sources = (latencies.timing, latencies.measured, latencies.latency,
                                              latencies.sources)
        budgets = [(t.name, t.latency_ms, sources[t.name]) for t in request.targets] or (
            [("", constraints.latency_ms, latency)] if constraints.latency_ms is not None else [])
        for name, target_ms, estimator in budgets or [("", None, latency)]:
            for caveat in estimator.caveats if isinstance(estimator, ProfileLatency) else ():
                logger.warning(caveat)
            check_feasibility_rule(constraints, estimator, timing, confidence)
            if target_ms is not None:
                _, fastest_ms = check_target_reachable(supernet.space, target_ms, estimator,
                                                       (request.flops_size, request.flops_size))
                logger.info(f"fastest probe of the space: {fastest_ms:.3f}ms ({estimator.source}), "
                            f"target {name + ' ' if name else ''}{target_ms:g}ms")
        accuracy = DetectionAP(supernet, bn, val, request.bn_images, request.bn_batch, request.val_images, device)
        context = _context(request, supernet.digest, val, bn, latency, timing,
                           (supernet.min_size, supernet.max_size), sources)
        remove_stale_temps(request.out)  # report files a kill -9 left half-written
        settings = scored_with(request, supernet, val, bn, timing, constraints.metric)
        search = Search(supernet.space, request.settings, constraints, accuracy, latency,
                        BackboneCost(request.flops_size), request.out / JOURNAL_NAME, context, sources,
                        settings.to_dict())
        start = time.perf_counter()
        candidates = search.run(resume=request.resume)
        search_s = time.perf_counter() - start
        elsewhere = [name for name, estimator in sources.items() if estimator.fingerprint != measured.fingerprint]
        search.finalize(candidates, measured, request.fresh_rounds, elsewhere)
        if measured.cache.lookups:
            logger.info(f"latency cache: {measured.cache.hits}/{measured.cache.lookups} hits")
        run = write_report(request.out / JOURNAL_NAME, request.out, request.top_k) if search.team.is_leader else None
        return SearchOutcome(run, search_s, search.latency_seconds, accuracy.calls, measured.cache.hits,
                             measured.cache.lookups)
    finally:
        held.close()
        shutdown_distributed()

