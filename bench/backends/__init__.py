"""Measurement backends. Each prepares a model for repeated runs and hands back a `Prepared`; `time_prepared`
does the warm-up and timed runs the same way for all of them, so backends differ only in what they execute."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


CLOCKS: tuple[str, ...] = ("wall", "thread-cpu")


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
    for i in range(runs):
        start = now()
        prepared.call(i % prepared.n_inputs)
        samples.append((now() - start) / 1e6)
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
