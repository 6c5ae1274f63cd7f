"""PyTorch backend: eager, optional `torch.compile`, and CUDA graphs on a GPU."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from detnas.bench.backends import LATENCY_BACKENDS, BackendOptions, LatencyBackend, Prepared
from detnas.bench.precision import PrecisionWarning, fast_fp16
from detnas.errors import DetnasError


def prepare_torch(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    precision: str,
    device: str,
    compile: bool = False,
    cuda_graphs: bool = False,
) -> Prepared:
    """Move the module to `device` in eval mode at `precision` and return a runner over the given input batches."""
    if precision == "int8":
        raise DetnasError("the torch backend has no INT8 path; use --backend trt (calibrated engine) or --backend ort")
    on_gpu = device.startswith("cuda")
    if cuda_graphs and not on_gpu:
        raise DetnasError("--cuda-graphs needs --device cuda; CUDA graphs do not exist on the CPU")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    if precision == "fp16" and not fast_fp16(device):
        warnings.warn(f"FP16 on {device} has no fast FP16 arithmetic; the latency will not reflect an FP16 deployment",
                      PrecisionWarning, stacklevel=2)
    if precision == "fp16" or on_gpu:  # converting in place would change the caller's module
        module = copy.deepcopy(module)
    model = module.to(device=device, dtype=dtype).eval()
    batches = [x.to(device=device, dtype=dtype) for x in inputs]
    details = {"mode": "eager", "cuda_graphs": cuda_graphs, "device": device,
               "transfers": "inputs already on the device, outputs left there (not timed)"}
    if compile:
        model = torch.compile(model)
        details["mode"] = "torch.compile"
    if cuda_graphs:
        return _with_cuda_graph(model, batches, details)

    def call(i: int) -> None:
        with torch.inference_mode():
            model(batches[i])

    stream = torch.cuda.current_stream(device) if on_gpu else None
    return Prepared(call=call, n_inputs=len(batches), details=details, cuda_stream=stream,
                    transfers="untimed" if on_gpu else "none")


def _with_cuda_graph(model: nn.Module, batches: list[torch.Tensor], details: dict) -> Prepared:
    """Capture one forward into a CUDA graph; each run copies its batch into the static input and replays."""
    static_input = batches[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):  # warm up kernels / allocator on a side stream before capture, as CUDA graphs require
            model(static_input)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        model(static_input)

    def call(i: int) -> None:
        static_input.copy_(batches[i], non_blocking=True)
        graph.replay()

    return Prepared(call=call, n_inputs=len(batches), details=details, cuda_stream=torch.cuda.current_stream(),
                    transfers="untimed")


@LATENCY_BACKENDS.register("torch")
class TorchBackend(LatencyBackend):
    """The torch module itself (eager or compiled), on the CPU or a GPU."""

    title = "PyTorch"

    def variant(self, options: BackendOptions, device: str) -> str:
        return f"torch:{device.split(':')[0]}:{'compile' if options.compile else 'eager'}" + (
            "+graphs" if options.cuda_graphs else "")

    def prepare_module(self, module: nn.Module, inputs: Sequence[torch.Tensor], *, precision: str, device: str,
                       threads: int, options: BackendOptions,
                       calibration: Sequence[torch.Tensor] | None = None) -> Prepared:
        return prepare_torch(module, inputs, precision=precision, device=device, compile=options.compile,
                             cuda_graphs=options.cuda_graphs)
