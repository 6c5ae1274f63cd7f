"""Latency for the search: the bench oracle (measured, through its cache) or a device profile (predicted).

Both implement `LatencyEstimator`; the search never knows which one it talks to. detnas.bench is imported
inside the constructors so `detnas search --help` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from detnas.arch import Arch
from detnas.errors import DetnasError
from detnas.search.interfaces import LatencyEstimator
from detnas.search.records import Latency
from detnas.space import SearchSpace

if TYPE_CHECKING:
    from detnas.bench.oracle import TrainedDetector
    from detnas.bench.precision import OnnxConverters
    from detnas.bench.profile_record import DeviceProfile

_DURATION = re.compile(r"^\s*(?P<value>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>ms|s|us|µs)\s*$")
_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}


def parse_latency_ms(text: str) -> float:
    """'12ms', '0.012s', '800us', '1e3ms' -> milliseconds; a bare number is refused (12 of what?)."""
    match = _DURATION.match(text)
    if match is None:
        raise DetnasError(f"--latency-target '{text}' is not a duration with its unit; write e.g. 12ms, 0.5s or 800us")
    value = float(match["value"]) * _TO_MS[match["unit"]]
    if not 0 < value < float("inf"):
        raise DetnasError(f"--latency-target '{text}' must be above 0 (and finite), e.g. 12ms")
    return value


def parse_count(text: str, flag: str) -> float:
    """'300M', '3.5m', '1.2G', '4e6' -> a number (FLOPs or params)."""
    match = re.fullmatch(r"\s*([\d.eE+-]+)\s*([kKmMgG]?)\s*", text)
    try:
        value = float(match[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match[2].lower()]  # type: ignore[index]
    except (TypeError, ValueError):
        value = -1.0
    if value <= 0:
        raise DetnasError(f"{flag} '{text}' must be a positive number such as 300M, 3.5M or 1.2G")
    return value


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How the oracle times a candidate: deployment size and batch, backend, precision, scope, protocol."""

    size: tuple[int, int] | None = None  # None: the detector's min_size x max_size, filled in once the checkpoint is read
    backend: str = "ort"
    precision: str = "fp32"
    device: str = "cpu"
    scope: str = "network+nms"  # the deployed graph, NMS included, fed real images (the fitness default)
    batch: int = 1
    runs: int = 30
    warmup: int = 5
    threads: int = 1
    detector: str = "fpn"  # the detector kind wrapped around the backbone for scopes beyond 'backbone'
    # wall, or thread-cpu: the one timing thread's CPU time, which a busy machine barely moves (a target measured
    # at one load and candidates timed at another would otherwise be compared; see bench/suite/latency_profile.py)
    clock: str = "wall"

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size else None, "backend": self.backend, "precision": self.precision, "device": self.device,
                "scope": self.scope, "batch": self.batch, "runs": self.runs, "warmup": self.warmup,
                "threads": self.threads, "detector": self.detector, "clock": self.clock}


class _CountingCache:
    """The bench latency cache, counting lookups and hits so the search can report its hit rate."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.lookups = self.hits = 0

    def get(self, key: Any) -> Any:
        hit = self.cache.get(key)
        self.lookups += 1
        self.hits += hit is not None
        return hit

    def put(self, key: Any, result: Any) -> None:
        self.cache.put(key, result)


class OracleLatency:
    """Measured latency from detnas.bench's oracle; repeated archs are served by its SQLite cache.

    Beyond the backbone scope each arch is timed as its `trained` detector (the path materialised from the
    supernet with its FPN and heads) on real `images`, since trained scores decide how many boxes NMS sees;
    without one, a random-init detector of `timing.detector` kind on seeded random pixels.
    """

    source = "measured"

    def __init__(self, timing: Timing, cache_path: str | Path | None = None,
                 images: Sequence[torch.Tensor] | None = None, trained: TrainedDetector | None = None,
                 converters: OnnxConverters | None = None,
                 calibration: Sequence[torch.Tensor] | None = None, confidence: float = 0.95) -> None:
        from detnas.bench.cache import LatencyCache
        from detnas.bench.fingerprint import collect_fingerprint
        from detnas.bench.oracle import BackendOptions, TimingProtocol
        from detnas.bench.result import Scope

        self.timing = timing
        self.confidence = confidence  # of each latency's upper bound (`upper_ms`)
        self.cache = _CountingCache(LatencyCache(cache_path))
        self._protocol = TimingProtocol(warmup=timing.warmup, runs=timing.runs, threads=timing.threads,
                                        device=timing.device, clock=timing.clock)
        self._options = BackendOptions(converters=converters)
        self._scope = Scope.parse(timing.scope)
        self._images = list(images) if images else None
        self._trained = trained
        self._calibration_batches = list(calibration) if calibration else None
        self.fingerprint = collect_fingerprint(timing.device, timing.threads).hash

    def latency(self, arch: Arch) -> Latency:
        """The candidate's latency statistics; at a reduced precision also `convert_seconds`, what quantizing (or
        converting) its exported detector cost when it was timed (a cache hit repeats the stored figure)."""
        from detnas.bench.oracle import measure_arch

        size, images = self._sized(arch)
        result = measure_arch(arch, size=size, batch=self.timing.batch, backend=self.timing.backend,
                              precision=self.timing.precision, scope=self._scope, protocol=self._protocol,
                              options=self._options, images=images, cache=self.cache,
                              detector=self.timing.detector, trained=self._trained, calibration=self._calibration(size))
        convert = result.details.get("convert_seconds")
        return Latency.measured(result.stats, None if convert is None else float(convert),
                                _upper(result, self.confidence))

    def fresh(self, archs: Sequence[Arch], rounds: int) -> list[Latency]:
        """The archs timed again from scratch, uncached, in `rounds` interleaved rounds of `timing.runs` runs."""
        from detnas.bench.oracle import measure_archs_fresh

        # archs that run at one input size are timed in the same interleaved rounds; an elastic path at another
        # size (its input-size gene) in rounds of its own
        groups: dict[tuple, list[int]] = {}
        for i, arch in enumerate(archs):
            groups.setdefault(self._sized(arch)[0], []).append(i)
        latencies: dict[int, Latency] = {}
        for size, members in groups.items():
            _, images = self._sized(archs[members[0]])
            results = measure_archs_fresh([archs[i] for i in members], size=size, rounds=rounds,
                                          batch=self.timing.batch, backend=self.timing.backend,
                                          precision=self.timing.precision, scope=self._scope, protocol=self._protocol,
                                          options=self._options, images=images, calibration=self._calibration(size),
                                          detector=self.timing.detector, trained=self._trained)
            latencies.update((i, Latency.measured(r.stats, upper_ms=_upper(r, self.confidence)))
                             for i, r in zip(members, results))
        return [latencies[i] for i in range(len(archs))]

    def _sized(self, arch: Arch) -> tuple[Any, Any]:
        """(input size, timed image batches) of `arch`: an elastic path runs at its input-size gene's share of the
        search's size, its images resized to it."""
        size, images = self.timing.size, self._images
        if arch.detector is not None and size is not None:
            from detnas.detection.cost import path_size

            size = path_size(arch, size)
            if images and size != self.timing.size:
                images = [torch.nn.functional.interpolate(batch, size=size, mode="bilinear", align_corners=False)
                          for batch in images]
        return size, images

    def _calibration(self, size: tuple[int, int] | None) -> list[torch.Tensor] | None:
        """INT8 ranges for timing: one fixed batch (the search passes an image of the supernet-training split; else
        seeded random pixels). Ranges change which values round where, not how much work a kernel does, so one
        batch times INT8 faithfully and keeps the quantization per candidate cheap (`convert_seconds`)."""
        if self.timing.precision != "int8":
            return None
        from detnas.bench.inputs import random_batches

        if self._calibration_batches and size == self.timing.size:
            return self._calibration_batches
        return random_batches(self.timing.batch, size)


def _upper(result: Any, confidence: float) -> float | None:
    """The upper bound of a result's median from its runs at `confidence`; None for cached results of an older
    detnas that kept no runs, or too few runs (the search refuses those under --feasibility ucb95 before it starts)."""
    from detnas.bench.stats import median_bound_rank, median_upper_bound

    samples = result.samples_ms
    return median_upper_bound(samples, confidence) if median_bound_rank(len(samples), confidence) is not None else None


def fastest_probe(space: SearchSpace, cost_size: tuple[int, int]) -> list[Arch]:
    """Archs that bound the space's fastest latency from below in practice: one per uniform choice, and the
    arch with the fewest FLOPs per block (an exhaustive minimum would need every arch measured). In an elastic
    space each is the narrowest path on those ops (smallest widths, depths and detector genes): a path at the
    default (widest) detector genes bounds nothing and, timed as a whole detector, costs an export for nothing."""
    from detnas.flops import flops_table

    _, per_block, _ = flops_table(space, cost_size, 0)
    cheapest = tuple(min(table, key=lambda c: (table[c], c)) for table in per_block)
    ops = [(c,) * space.num_blocks for c in space.choices] + [cheapest]
    if space.elastic:
        from detnas.arch import extreme_arch

        probes = [extreme_arch(space, choices, widest=False) for choices in ops]
    else:
        probes = [Arch(space, choices) for choices in ops]
    return list({a.hash: a for a in probes}.values())


def check_target_reachable(space: SearchSpace, target_ms: float, estimator: LatencyEstimator,
                           cost_size: tuple[int, int]) -> tuple[Arch, float]:
    """Refuse a latency target below the fastest probe of the space, saying what that probe measures; returns the
    fastest probe and its median latency."""
    timed = [(estimator.latency(a).median_ms, a) for a in fastest_probe(space, cost_size)]
    fastest_ms, fastest = min(timed, key=lambda t: (t[0], t[1].hash))
    if target_ms < fastest_ms:
        raise DetnasError(
            f"--latency-target {target_ms:g}ms is below the fastest architecture of space '{space.name}': "
            f"{fastest.compact()} is {estimator.source} at {fastest_ms:.3f}ms ({estimator.fingerprint}); "
            "raise the target or search a smaller space"
        )
    return fastest, fastest_ms


class ProfileLatency:
    """Predicted latency from a device profile (`detnas bench profile`), refused unless it was measured for this
    space and backend in this environment (the local fingerprint), or `force` is given."""

    source = "predicted"

    def __init__(self, path: str | Path, space: SearchSpace, timing: Timing, force: bool = False,
                 confidence: float = 0.95) -> None:
        from detnas.bench.fingerprint import collect_fingerprint
        from detnas.bench.profile import load_profile

        local = collect_fingerprint(timing.device, timing.threads)
        self.profile = load_profile(path, space, timing.backend, force, fingerprint=local)
        differences = profile_differences(self.profile, timing)
        if differences and not force:
            raise DetnasError(f"{path}: the profile was timed otherwise than the search times: {'; '.join(differences)}; "
                              "build one with `detnas bench profile` and the search's --precision, --detector, --scope, "
                              "--size HxW and --batch, give the search the profile's, or pass --force-profile")
        from detnas.bench.profile import load_predictor

        if self.profile.predictor is not None:  # an op-choice profile of an elastic space is refused here, in one line
            load_predictor(self.profile)
        self.fingerprint = self.profile.fingerprint_hash
        self.caveats = self._caveats(path)
        self.error_quantile = prediction_error_quantile(self.profile, 100 * confidence)

    def _caveats(self, path: str | Path) -> list[str]:
        """What the search log must say about this profile: a noise-limited scope or a predictor no better than a
        constant ranks noise, not candidates."""
        report = self.profile.report
        if report is None:
            return [f"latency profile {path} has no held-out report (an older detnas built it); rebuild it with "
                    "`detnas bench profile` to learn whether its predictor beats a constant"]
        if report.noise_limited or not report.accurate:
            shared = [] if self.profile.shared_part is None else [self.profile.shared_part.line()]
            return [f"latency profile {path}: {line}" for line in [*report.verdict(), *shared]]
        return []

    def latency(self, arch: Arch) -> Latency:
        """The predicted median and, as its upper bound, the prediction scaled by the profile's held-out error
        quantile at the bound's confidence (what a measurement may exceed the prediction by)."""
        from detnas.bench.profile import predict_latency

        median = predict_latency(self.profile, arch)
        return Latency.predicted(median, None if self.error_quantile is None else median * self.error_quantile)


def profile_differences(profile: DeviceProfile, timing: Timing) -> list[str]:
    """Each way a device profile was timed otherwise than the search times ('precision fp16 (search: fp32)'): its
    predictions are of another number. A field an older profile did not record counts as a difference."""
    shape = [timing.batch, 3, *timing.size] if timing.size else None
    wanted: list[tuple[str, Any, Any]] = [
        ("precision", profile.precision, timing.precision),
        ("scope", profile.scope, timing.scope),
        ("input", None if profile.input_shape is None else list(profile.input_shape), shape),
        ("clock", profile.clock, timing.clock),
    ]
    if timing.scope != "backbone":
        wanted.append(("detector", profile.detector, timing.detector))
    return [f"{name} {'unrecorded' if theirs is None else theirs} (search: {ours})"
            for name, theirs, ours in wanted if theirs != ours]


MIN_HELD_OUT = 10  # held-out archs below which a 95 % quantile of the prediction error is not estimated


def prediction_error_quantile(profile: DeviceProfile, q: float = 95.0) -> float | None:
    """The q-th percentile of measured / predicted over a profile's held-out archs, or None with fewer than
    `MIN_HELD_OUT` of them (a profile built before the held-out split was recorded)."""
    from detnas.bench.stats import percentile

    ratios = [a.measured_ms / a.predicted_ms for a in profile.archs or () if a.held_out and a.predicted_ms]
    return percentile(ratios, q) if len(ratios) >= MIN_HELD_OUT else None
