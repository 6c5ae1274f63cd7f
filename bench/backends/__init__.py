"""Measurement backends. Each prepares a model for repeated runs and hands back a `Prepared`; `time_prepared`
does the warm-up and timed runs the same way for all of them, so backends differ only in what they execute.

A backend is a `LatencyBackend` subclass registered by name (`@LATENCY_BACKENDS.register("openvino")`); torch,
ort and trt register themselves below, and `--backend NAME` (or `backend=` of the oracle) picks any of them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detnas.bench.precision import OnnxConverters
from detnas.errors import DetnasError
from detnas.progress import task
from detnas.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Prepared:
    """A ready-to-run model: `call(i)` runs it once on the i-th prepared input batch.

    `cuda_stream` set means the work is asynchronous on that torch CUDA stream and is timed with CUDA events;
    otherwise `call` returns when the outputs are on the host and is timed with the host clock.
    """

    call: Callable[[int], Any]
    n_inputs: int
    details: dict[str, Any] = field(default_factory=dict)
    cuda_stream: Any = None
    keepalive: Any = None  # objects (engine, device buffers) that must outlive asynchronous runs
    transfers: str = "none"  # one of TRANSFERS: whether each timed run includes host<->device copies


#: whether a timed run includes host<->device copies: "none" (the model runs on the host, nothing to copy),
#: "timed" (each run copies its inputs to the GPU and its outputs back, inside the timing), "untimed" (inputs
#: already on the GPU, outputs left there, as TensorRT and torch on a GPU time). Latencies of different kinds are
#: not like for like: at 800x1344 the FP32 input alone is 12.9 MB, 1-2 ms of copy against a few-ms engine.
TRANSFERS: tuple[str, ...] = ("none", "timed", "untimed")


def time_prepared(prepared: Prepared, warmup: int, runs: int, clock: str = "wall") -> list[float]:
    """Latency in ms of `runs` calls after `warmup` untimed ones, cycling through the prepared inputs.

    clock='wall' is the latency. clock='thread-cpu' is the CPU time of the calling thread, which equals the
    latency of a single-threaded CPU runtime on an idle machine but ignores the time the thread waits while
    other processes hold the cores: the stable choice on a shared, oversubscribed machine.
    """
    for i in range(warmup):
        prepared.call(i % prepared.n_inputs)
    if prepared.cuda_stream is not None:
        return _time_cuda(prepared, runs)
    now = time.thread_time_ns if clock == "thread-cpu" else time.perf_counter_ns
    samples = []
    with task(f"timing {runs} runs", runs) as step:
        for i in range(runs):
            start = now()
            prepared.call(i % prepared.n_inputs)
            samples.append((now() - start) / 1e6)
            step.advance()  # between two timed windows, never inside one
    return samples


def _time_cuda(prepared: Prepared, runs: int) -> list[float]:
    """CUDA events around each call on its stream: device time, free of host-side launch jitter at the end."""
    import torch

    stream = prepared.cuda_stream
    torch.cuda.synchronize()
    pairs = []
    for i in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        prepared.call(i % prepared.n_inputs)
        end.record(stream)
        end.synchronize()  # one run at a time: back-to-back queued runs would overlap host and device work
        pairs.append((start, end))
    return [s.elapsed_time(e) for s, e in pairs]


@dataclass(frozen=True)
class BackendOptions:
    """Backend-specific knobs; `variant()` names the ones that change latency and is part of the cache key."""

    ort_provider: str | None = None  # default: cpu on the CPU, cuda on a GPU
    compile: bool = False
    cuda_graphs: bool = False
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    tf32: bool | None = False  # trt: FP32 layers may run in TF32 (off so FP32 means FP32; None: an engine's, unknown)
    io_binding: bool | None = None  # ort on a GPU provider: inputs bound on the device, copies untimed (None: on for GPUs)
    converters: OnnxConverters | None = field(default=None, compare=False)  # FP16 / INT8 files for ONNX Runtime

    def provider(self, device: str) -> str:
        return self.ort_provider or ("cuda" if device.startswith("cuda") else "cpu")

    def binds_io(self, device: str) -> bool:
        """Whether ONNX Runtime times with its inputs already on the GPU (I/O binding): the default on a GPU
        provider, like TensorRT and torch; never on the CPU provider, where there is nothing to copy."""
        return self.provider(device) != "cpu" and self.io_binding is not False

    def variant(self, backend: str, device: str) -> str:
        return latency_backend(backend).variant(self, device)


class LatencyBackend:
    """How the oracle runs a model on one runtime. A backend that runs ONNX files implements `prepare_onnx` (torch
    modules then reach it through an ONNX export); one that runs torch modules overrides `prepare_module`."""

    title = "a runtime"  # how reports name it, e.g. 'ONNX Runtime'
    gpu_only = False

    def __init__(self, name: str) -> None:
        self.name = name

    def variant(self, options: BackendOptions, device: str) -> str:
        """The backend's settings that change the number (part of the latency cache key)."""
        return self.name

    def prepare_module(self, module: nn.Module, inputs: Sequence[torch.Tensor], *, precision: str, device: str,
                       threads: int, options: BackendOptions,
                       calibration: Sequence[torch.Tensor] | None = None) -> Prepared:
        """The module exported to an FP32 ONNX file, which `prepare_onnx` converts to `precision` as `detnas export`
        does (`bench.precision.precision_file`): the FP16 / INT8 file that would ship, not `module.half()`."""
        from detnas.bench.models import module_to_onnx

        with tempfile.TemporaryDirectory(prefix="detnas-bench-") as tmp:
            onnx_path = module_to_onnx(module.eval(), inputs[0], Path(tmp) / "model.onnx")
            return self.prepare_onnx(onnx_path, inputs, precision=precision, device=device, threads=threads, options=options,
                                     calibration=calibration)

    def prepare_onnx(self, path: Path, inputs: Sequence[torch.Tensor], *, precision: str, device: str, threads: int,
                     options: BackendOptions, calibration: Sequence[torch.Tensor] | None = None) -> Prepared:
        self.check_runs_files(path)
        raise NotImplementedError  # check_runs_files refuses every backend that does not override prepare_onnx

    def check_runs_files(self, path: Path) -> None:
        """A backend that times torch modules only refuses an ONNX file, naming those that run files."""
        if type(self).prepare_onnx is LatencyBackend.prepare_onnx:
            runs_files = [n for n in LATENCY_BACKENDS
                          if type(latency_backend(n)).prepare_onnx is not LatencyBackend.prepare_onnx]
            raise DetnasError(f"{path}: the {self.name} backend times torch modules; use --backend "
                              f"{' or '.join(runs_files)} for ONNX files")


LATENCY_BACKENDS: Registry[type[LatencyBackend]] = Registry("backend", "--backend")


def latency_backend(name: str) -> LatencyBackend:
    """The registered backend `name`; an unknown name is refused with the registered ones."""
    return LATENCY_BACKENDS.get(name)(name)


# the built-in backends register themselves, in the order the CLI lists them
from detnas.bench.backends import torch_backend  # noqa: E402, I001, F401
from detnas.bench.backends import ort_backend  # noqa: E402, F401
from detnas.bench.backends import trt_backend  # noqa: E402, F401
