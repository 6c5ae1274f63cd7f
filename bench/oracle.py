"""The latency oracle: one entry point per kind of model (torch module, arch, ONNX file, TensorRT engine).

Every path goes through the same protocol (warm-up, N timed runs, statistics, fingerprint) and returns a
`LatencyResult` that says what was timed. Results with a stable identity (arch hash, file sha256) are served
from the latency cache when one is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detnas.arch import Arch
from detnas.bench.backends import BackendOptions, Prepared, latency_backend, time_prepared
from detnas.bench.cache import CacheKey, LatencyCache
from detnas.bench.fingerprint import collect_fingerprint, gpu_state
from detnas.bench.inputs import random_batches
from detnas.bench.models import scoped_detector, timed_module
from detnas.bench.precision import require_calibration
from detnas.bench.result import CLOCKS, PRECISIONS, LatencyResult, Scope, check_choice
from detnas.bench.stats import summarize
from detnas.errors import DetnasError
from detnas.io import file_sha256
from detnas.progress import track


@dataclass(frozen=True)
class TimingProtocol:
    """How to time: untimed warm-up runs, timed runs, CPU threads, and the device ('cpu', 'cuda', 'cuda:1')."""

    warmup: int = 10
    runs: int = 50
    threads: int = 1
    device: str = "cpu"
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.runs < 2 or self.threads < 1:
            raise DetnasError(f"protocol warmup={self.warmup} runs={self.runs} threads={self.threads}: "
                              "need warmup >= 0, runs >= 2, threads >= 1")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise DetnasError(f"unknown device '{self.device}'; use cpu, cuda or cuda:N")
        check_choice("clock", self.clock, CLOCKS)
        if self.clock == "thread-cpu" and (self.threads != 1 or self.on_gpu):
            raise DetnasError("--clock thread-cpu measures one CPU thread; use it only with --threads 1 on the CPU")

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def describe(self) -> str:
        """How many runs after how much warm-up on which clock: a median of 3 runs is not one of 30."""
        return f"warmup={self.warmup},runs={self.runs},clock={self.clock}"

    def variant(self, options: BackendOptions, backend: str) -> str:
        """The backend variant plus the clock: what, besides model and fingerprint, changes the number."""
        return options.variant(backend, self.device) + ("" if self.clock == "wall" else f"@{self.clock}")


@dataclass(frozen=True)
class TrainedDetector:
    """The detector of any arch with trained weights (e.g. materialised from a detection supernet); `weights`
    names those weights in the latency cache key."""

    build: Callable[[Arch], nn.Module]
    weights: str


DEFAULT_PROTOCOL = TimingProtocol()
DEFAULT_OPTIONS = BackendOptions()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Fix torch's intra-op thread count while timing and restore it afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class _Job:
    """One timing request after validation: what to time and how to label and cache it."""

    backend: str
    precision: str
    scope: Scope
    protocol: TimingProtocol
    options: BackendOptions
    source: str
    label: str
    inputs: Sequence[torch.Tensor]
    input_kind: str

    @cached_property
    def inputs_digest(self) -> str:
        """Which pixels were timed: network+nms time depends on how many boxes reach NMS, so on the images."""
        digest = hashlib.sha256()
        for batch in self.inputs:
            digest.update(batch.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def key(self) -> CacheKey:
        fingerprint = collect_fingerprint(self.protocol.device, self.protocol.threads)
        return CacheKey(self.source, tuple(self.inputs[0].shape), int(self.inputs[0].shape[0]), self.precision,
                        self.protocol.variant(self.options, self.backend), self.scope.value, fingerprint.hash,
                        protocol=self.protocol.describe(), inputs=self.inputs_digest)


def _validate(backend: str, precision: str, protocol: TimingProtocol, calibration: Sequence[Any] | None,
              inputs: Sequence[torch.Tensor], *, converts: bool = True) -> None:
    """`converts`: the model is quantised here (a module or arch), so INT8 needs calibration batches; an ONNX file
    is checked where the backend finds it must convert it (a file already INT8 is timed as it is)."""
    runtime = latency_backend(backend)
    check_choice("precision", precision, PRECISIONS)
    if converts:
        require_calibration(precision, calibration)
    if runtime.gpu_only and not protocol.on_gpu:
        raise DetnasError(f"the {backend} backend runs on a GPU; pass --device cuda")
    if not inputs or any(x.dim() != 4 or x.shape != inputs[0].shape for x in inputs):
        raise DetnasError("inputs must be one or more [B, 3, H, W] batches of the same shape")


def _check_module_fp16(backend: str, precision: str, scope: Scope) -> None:
    """A backend that runs the torch module itself times FP16 as `module.half()`: box decoding, NMS and RoiAlign in
    FP16, which no shipped FP16 file does (it keeps post-processing in FP32). Refused where the scope holds them."""
    from detnas.bench.backends import LatencyBackend

    runs_module = type(latency_backend(backend)).prepare_module is not LatencyBackend.prepare_module
    if precision == "fp16" and runs_module and scope in (Scope.NETWORK_NMS, Scope.END_TO_END):
        raise DetnasError(f"--backend {backend} --precision fp16 at scope {scope.value}: the {backend} backend would "
                          "time module.half(), with box decoding, NMS and RoiAlign in FP16, not the FP16 file detnas "
                          "export ships (post-processing in FP32); time --backend ort or trt, or --scope network")


def _run(job: _Job, prepare: Callable[[], Prepared], cache: LatencyCache | None) -> LatencyResult:
    """Serve from the cache or prepare, time and summarise; GPU clocks / throttling are read around the runs."""
    key = job.key()
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    protocol = job.protocol
    gpu_index = torch.device(protocol.device).index or 0
    # the asked GPU is the current one while the model is built, its buffers allocated and its runs timed (TensorRT
    # builds, allocates and enqueues on the current device); the fingerprint below names the same GPU
    on_device = torch.cuda.device(gpu_index) if protocol.on_gpu else contextlib.nullcontext()
    with torch_threads(protocol.threads), on_device:
        prepared = prepare()
        before = gpu_state(gpu_index) if protocol.on_gpu else None
        samples = time_prepared(prepared, protocol.warmup, protocol.runs, protocol.clock)
        after = gpu_state(gpu_index) if protocol.on_gpu else None
    result = _result(job, samples, prepared, (before, after))
    if cache is not None:
        cache.put(key, result)
    return result


def _result(job: _Job, samples: Sequence[float], prepared: Prepared, gpu: tuple[Any, Any] = (None, None),
            **extra: Any) -> LatencyResult:
    """The result of `samples` timed for `job`; `details.measured` names how (runs, warm-up, clock, inputs), so a
    figure read back from the cache still says how it was measured."""
    protocol, key = job.protocol, job.key()
    details: dict[str, Any] = dict(prepared.details)
    details.update(variant=key.backend, inputs=job.input_kind,
                   timer="cuda events" if prepared.cuda_stream is not None else f"host {protocol.clock} clock",
                   measured={"warmup": protocol.warmup, "runs": len(samples), "clock": protocol.clock,
                             "inputs_digest": key.inputs, **extra})
    if protocol.on_gpu:
        details.update(gpu_before=gpu[0], gpu_after=gpu[1])
    return LatencyResult(
        stats=summarize(samples), backend=job.backend, precision=job.precision, batch=key.batch,
        input_shape=key.input_shape, scope=job.scope.value, warmup=protocol.warmup, threads=protocol.threads,
        source=job.source, label=job.label,
        fingerprint=collect_fingerprint(protocol.device, protocol.threads), details=details,
        samples_ms=tuple(samples), transfers=prepared.transfers,
    )


def time_interleaved(runners: Sequence[Prepared], protocol: TimingProtocol, rounds: int,
                     progress: Callable[[str], None] = lambda message: None, phase: str = "runners",
                     seed: int = 0) -> list[list[float]]:
    """Samples per runner: warm-up once, then `rounds` passes of runs // rounds timed calls each (one untimed call
    first, to reload its weights). Each round runs the runners in a new order: in a fixed order every runner would
    follow the same neighbour, whose cache footprint it would pay in every round alike, a bias that neither more
    rounds nor the split-half noise estimate could see. Slow phases of other processes spread over all runners
    instead of biasing a few."""
    per_round = max(2, protocol.runs // rounds)
    samples: list[list[float]] = [[] for _ in runners]
    order, rng = list(range(len(runners))), random.Random(seed)
    for r in track(range(rounds), f"timing {len(runners)} {phase}, {rounds} rounds"):
        for i in order:
            samples[i] += time_prepared(runners[i], protocol.warmup if r == 0 else 1, per_round, protocol.clock)
        rng.shuffle(order)
        progress(f"{phase}: round {r + 1}/{rounds} timed")
    return samples


def prepare_module(
    module: nn.Module, inputs: Sequence[torch.Tensor], *, backend: str, precision: str, protocol: TimingProtocol,
    options: BackendOptions, calibration: Sequence[torch.Tensor] | None = None,
) -> Prepared:
    """A ready runner for a torch module on any registered backend (ONNX-file backends through an export)."""
    return latency_backend(backend).prepare_module(module, inputs, precision=precision, device=protocol.device,
                                                   threads=protocol.threads, options=options, calibration=calibration)


def prepare_onnx(
    path: Path, inputs: Sequence[torch.Tensor], *, backend: str, precision: str, protocol: TimingProtocol,
    options: BackendOptions, calibration: Sequence[torch.Tensor] | None = None,
) -> Prepared:
    """A ready runner for an ONNX file on a registered backend that runs files (ort, trt)."""
    return latency_backend(backend).prepare_onnx(path, inputs, precision=precision, device=protocol.device,
                                                 threads=protocol.threads, options=options, calibration=calibration)


def measure_module(
    module: nn.Module, inputs: Sequence[torch.Tensor], *, backend: str = "torch", precision: str = "fp32",
    scope: Scope = Scope.BACKBONE, protocol: TimingProtocol = DEFAULT_PROTOCOL, options: BackendOptions = DEFAULT_OPTIONS,
    calibration: Sequence[torch.Tensor] | None = None, label: str = "module", source: str | None = None,
    input_kind: str = "random", cache: LatencyCache | None = None,
) -> LatencyResult:
    """Time a torch module on input batches ([B, 3, H, W] each) on any backend.

    Caching needs a stable `source` id (e.g. 'arch:<hash>'); without one the module is always timed.
    """
    _validate(backend, precision, protocol, calibration, inputs)
    _check_module_fp16(backend, precision, scope)
    job = _Job(backend, precision, scope, protocol, options, source or f"module:{type(module).__name__}", label,
               inputs, input_kind)
    return _run(job, lambda: prepare_module(module, inputs, backend=backend, precision=precision, protocol=protocol,
                                            options=options, calibration=calibration),
                cache if source else None)


def _arch_job(arch: Arch, inputs: Sequence[torch.Tensor], images: bool, *, backend: str, precision: str, scope: Scope,
              protocol: TimingProtocol, options: BackendOptions, label: str | None, detector: str,
              trained: TrainedDetector | None) -> _Job:
    """What timing `arch` at `scope` is, as a cacheable job: beyond the backbone its detector (and weights) too."""
    if scope is Scope.BACKBONE:
        source, network = f"arch:{arch.hash}", ""
    elif trained is None:
        source, network = f"arch:{arch.hash}:{detector}", f"; random-init {detector} detector"
    else:
        source, network = f"arch:{arch.hash}:{detector}:{trained.weights}", f"; {detector} detector {trained.weights}"
    return _Job(backend, precision, scope, protocol, options, source, label or arch.compact(), inputs,
                ("images" if images else "random") + network)


def _arch_module(arch: Arch, scope: Scope, detector: str, trained: TrainedDetector | None) -> nn.Module:
    if trained is not None and scope is not Scope.BACKBONE:
        return scoped_detector(trained.build(arch), scope)
    return timed_module(arch, scope, detector)


def measure_arch(
    arch: Arch, *, size: tuple[int, int], batch: int = 1, backend: str = "ort", precision: str = "fp32",
    scope: Scope = Scope.BACKBONE, protocol: TimingProtocol = DEFAULT_PROTOCOL, options: BackendOptions = DEFAULT_OPTIONS,
    images: Sequence[torch.Tensor] | None = None, calibration: Sequence[torch.Tensor] | None = None,
    label: str | None = None, cache: LatencyCache | None = None, detector: str = "fpn",
    trained: TrainedDetector | None = None,
) -> LatencyResult:
    """Time an arch at `scope` on real image batches when given (else seeded random pixels), cache first.

    Scopes beyond the backbone wrap it in a `detector` ('fpn' or 'retinanet'): random-init, or the arch's
    `trained` detector (weights decide how many boxes reach NMS, so they are part of the cache key).
    """
    inputs = list(images) if images else random_batches(batch, size)
    _validate(backend, precision, protocol, calibration, inputs)
    _check_module_fp16(backend, precision, scope)
    job = _arch_job(arch, inputs, bool(images), backend=backend, precision=precision, scope=scope, protocol=protocol,
                    options=options, label=label, detector=detector, trained=trained)
    if cache is not None and (hit := cache.get(job.key())) is not None:
        return hit
    result = measure_module(_arch_module(arch, scope, detector, trained), inputs, backend=backend,
                            precision=precision, scope=scope, protocol=protocol, options=options,
                            calibration=calibration, label=job.label, source=job.source, input_kind=job.input_kind)
    if cache is not None:
        cache.put(job.key(), result)
    return result


def measure_archs_fresh(
    archs: Sequence[Arch], *, size: tuple[int, int], rounds: int, batch: int = 1, backend: str = "ort",
    precision: str = "fp32", scope: Scope = Scope.BACKBONE, protocol: TimingProtocol = DEFAULT_PROTOCOL,
    options: BackendOptions = DEFAULT_OPTIONS, images: Sequence[torch.Tensor] | None = None,
    calibration: Sequence[torch.Tensor] | None = None, detector: str = "fpn", trained: TrainedDetector | None = None,
) -> list[LatencyResult]:
    """Time archs again from scratch, never from or into the cache: each is prepared anew, then all are timed in
    `rounds` interleaved rounds of `protocol.runs` runs each, so a slow phase of the machine falls on all of them
    alike. This is the check of a search's winner: its search-time median was the lowest of noisy draws under the
    target (the winner's curse), and a cached figure would only repeat it."""
    if rounds < 2:
        raise DetnasError(f"fresh timing needs at least 2 rounds, got {rounds}")
    inputs = list(images) if images else random_batches(batch, size)
    _validate(backend, precision, protocol, calibration, inputs)
    _check_module_fp16(backend, precision, scope)
    jobs = [_arch_job(a, inputs, bool(images), backend=backend, precision=precision, scope=scope, protocol=protocol,
                      options=options, label=None, detector=detector, trained=trained) for a in archs]
    total = replace(protocol, runs=protocol.runs * rounds)
    with torch_threads(protocol.threads):
        runners = [prepare_module(_arch_module(a, scope, detector, trained).eval(), inputs, backend=backend,
                                  precision=precision, protocol=protocol, options=options, calibration=calibration)
                   for a in archs]
        samples = time_interleaved(runners, total, rounds, phase="archs afresh")
    return [_result(job, s, runner, fresh_rounds=rounds) for job, s, runner in zip(jobs, samples, runners)]


def measure_onnx(
    path: str | Path, inputs: Sequence[torch.Tensor], *, backend: str = "ort", precision: str | None = None,
    scope: Scope = Scope.NETWORK, protocol: TimingProtocol = DEFAULT_PROTOCOL, options: BackendOptions = DEFAULT_OPTIONS,
    calibration: Sequence[torch.Tensor] | None = None, label: str | None = None, input_kind: str = "random",
    cache: LatencyCache | None = None,
) -> LatencyResult:
    """Time an ONNX file with ONNX Runtime or TensorRT (engine built here for the inputs' shape). `precision`
    None times and labels the file at the precision it carries; an FP32 file asked for fp16 / int8 is converted
    first, and any other precision than a reduced file's own is refused (`timed_precision`)."""
    from detnas.bench.backends.trt_backend import timed_precision

    _validate(backend, precision or "fp32", protocol, calibration, inputs, converts=False)
    path = Path(path)
    latency_backend(backend).check_runs_files(path)  # before the file is read: the backend's refusal comes first
    precision = timed_precision(path, precision)
    job = _Job(backend, precision, scope, protocol, options, f"onnx:{file_sha256(path)}", label or path.name,
               inputs, input_kind)
    return _run(job, lambda: prepare_onnx(path, inputs, backend=backend, precision=precision, protocol=protocol,
                                          options=options, calibration=calibration), cache)


def measure_engine(
    path: str | Path, inputs: Sequence[torch.Tensor], *, precision: str | None = None, scope: Scope = Scope.NETWORK,
    protocol: TimingProtocol = TimingProtocol(device="cuda"), label: str | None = None, input_kind: str = "random",
    cache: LatencyCache | None = None,
) -> LatencyResult:
    """Time a serialized TensorRT engine. Its precision was fixed at build time: the one its sidecar (`detnas export
    --format trt`) records labels it and another `precision` is refused; without a sidecar that records it, the
    `precision` given labels it, and none given is refused: the engine cannot say, and a guessed label (FP32 for an
    INT8 engine) would make every comparison against its row wrong."""
    if precision is not None:
        check_choice("precision", precision, PRECISIONS)
    _validate("trt", "fp32", protocol, None, inputs)
    path = Path(path)
    recorded, sidecar = _engine_recorded(path, "precision"), path.with_suffix(".json")
    if recorded in PRECISIONS:
        if precision not in (None, recorded):
            raise DetnasError(f"--precision {precision}: {path.name} is an {recorded} engine (its sidecar "
                              f"{sidecar.name} records it); leave --precision out to time it as {recorded}")
        precision = recorded
    elif precision is None:
        state = "records no precision" if sidecar.is_file() else "is missing"
        raise DetnasError(f"{path.name}: its sidecar {sidecar.name} {state}, so nothing says which precision the engine "
                          f"was built in; pass --precision {' / '.join(PRECISIONS)} (the one it was built in), or rebuild "
                          "it with `detnas export --format trt`, which writes the sidecar")
    from detnas.bench.backends.trt_backend import prepare_engine, require_tensorrt

    require_tensorrt()
    tf32 = _engine_tf32(path)
    job = _Job("trt", precision, scope, protocol, BackendOptions(tf32=tf32), f"engine:{file_sha256(path)}",
               label or path.name, inputs, input_kind)

    def prepare() -> Prepared:
        prepared = prepare_engine(path, inputs)
        prepared.details["tf32"] = tf32
        return prepared

    return _run(job, prepare, cache)


def _engine_tf32(path: Path) -> bool | None:
    """Whether the engine's FP32 layers may run in TF32, as its sidecar (`detnas export --format trt`) records it;
    None when no sidecar says (an engine built elsewhere: unknown, not assumed)."""
    value = _engine_recorded(path, "tf32")
    return value if isinstance(value, bool) else None


def _engine_recorded(path: Path, field: str) -> Any:
    """One field of the engine's sidecar (`detnas export --format trt`); None without a readable sidecar."""
    import json

    try:
        return json.loads(path.with_suffix(".json").read_text()).get(field)
    except (OSError, ValueError, AttributeError):
        return None
