"""ONNX Runtime backend (CPU, CUDA or TensorRT execution provider) with a check against silent CPU fallback.

ONNX Runtime quietly runs on the CPU when a GPU provider cannot load (missing CUDA / cuDNN libraries, no
driver); a latency measured that way would be wrong by an order of magnitude, so it is an error here.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detnas.bench.backends import LATENCY_BACKENDS, BackendOptions, LatencyBackend, Prepared
from detnas.bench.precision import PrecisionWarning
from detnas.errors import DetnasError

if TYPE_CHECKING:
    import torch


PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def provider_for(name: str) -> str:
    if name not in PROVIDERS:
        raise DetnasError(f"unknown ONNX Runtime provider '{name}'; choose one of {', '.join(PROVIDERS)}")
    return PROVIDERS[name]


def check_providers(requested: str, in_use: Sequence[str]) -> None:
    """Fail when the session's first provider is not the one asked for (ORT fell back without raising)."""
    if not in_use or in_use[0] != requested:
        raise DetnasError(
            f"ONNX Runtime silently fell back: requested {requested} but the session runs on {list(in_use)}; "
            f"{requested} could not load (check the GPU driver, CUDA/cuDNN versions onnxruntime-gpu needs, "
            "and that a GPU is visible) or run on the CPU (--device cpu, or --ort-provider cpu in bench)"
        )


def open_session(model: str | Path, provider: str, threads: int, precision: str = "fp32", device_id: int = 0) -> Any:
    """An InferenceSession on exactly `provider` (a GPU one on GPU `device_id`) with fixed intra-op threads and
    sequential execution."""
    import onnxruntime as ort

    requested = provider_for(provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    provider_options: dict[str, Any] = {}
    if requested == "TensorrtExecutionProvider":
        provider_options = {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(Path(tempfile.gettempdir()) / "detnas-ort-trt-cache")}
    if requested != "CPUExecutionProvider":
        provider_options["device_id"] = device_id
    try:
        session = ort.InferenceSession(str(model), options, providers=[(requested, provider_options)])
    except Exception as exc:  # ORT raises several pybind types (InvalidProtobuf, Fail, NoSuchFile) for one cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DetnasError(f"{model}: ONNX file does not load in ONNX Runtime ({first})") from None
    check_providers(requested, session.get_providers())
    return session


def input_precision(session: Any) -> str:
    """'fp16' when the model's image input is float16, else 'fp32' (INT8 QDQ models keep float inputs)."""
    return "fp16" if session.get_inputs()[0].type == "tensor(float16)" else "fp32"


def prepare_ort(
    model: str | Path, inputs: Sequence[np.ndarray], *, provider: str, threads: int, precision: str,
    io_binding: bool = False, device_id: int = 0,
) -> Prepared:
    """Open a checked session and return a runner; FP16 must be baked into the ONNX file except on TensorRT EP.

    `io_binding`: the input batches are placed on the provider's device once, before timing, and the outputs are
    left there (ORT's I/O binding), so a run times what TensorRT's does; without it every run copies host numpy
    in and out, inside the timing."""
    session = open_session(model, provider, threads, precision, device_id)
    model_inputs = session.get_inputs()
    if len(model_inputs) != 1:
        raise DetnasError(f"{model}: the ONNX model has {len(model_inputs)} inputs; the oracle feeds one image batch")
    file_precision = input_precision(session)
    if precision == "fp16" and provider == "cpu":
        warnings.warn("ONNX Runtime's CPU provider has no fast FP16 kernels (it runs FP16 nodes through casts); the "
                      "latency will not reflect an FP16 deployment, which is for GPUs", PrecisionWarning, stacklevel=2)
    name = model_inputs[0].name
    dtype = np.float16 if file_precision == "fp16" else np.float32
    feeds = [{name: np.ascontiguousarray(x, dtype=dtype)} for x in inputs]
    details = {"providers": session.get_providers(), "intra_op_threads": threads, "inter_op_threads": 1,
               "graph_optimization": "ORT_ENABLE_ALL", "io_binding": io_binding}
    keep: Any = feeds
    if io_binding:
        call, binding = _bound_runner(session, [feed[name] for feed in feeds], name,
                                      "cpu" if provider == "cpu" else "cuda", device_id)
        keep = (feeds, binding)
    else:
        def call(i: int) -> None:
            session.run(None, feeds[i])

    transfers = "none" if provider == "cpu" else "untimed" if io_binding else "timed"
    return Prepared(call=call, n_inputs=len(feeds), details=details, keepalive=keep, transfers=transfers)


def _bound_runner(session: Any, batches: list[np.ndarray], name: str, device: str, device_id: int) -> tuple[Any, Any]:
    """(call(i), the I/O binding): call(i) runs on batch i, already on `device` (copied once here), with the
    outputs allocated there and left in the binding."""
    import onnxruntime as ort

    placed = [ort.OrtValue.ortvalue_from_numpy(batch, device, device_id) for batch in batches]
    binding = session.io_binding()
    for output in session.get_outputs():
        binding.bind_output(output.name, device, device_id)

    def call(i: int) -> None:
        binding.bind_ortvalue_input(name, placed[i])
        session.run_with_iobinding(binding)

    call.placed = placed  # type: ignore[attr-defined]  # the device copies live as long as the runner
    return call, binding


@LATENCY_BACKENDS.register("ort")
class OrtBackend(LatencyBackend):
    """ONNX Runtime on the provider the options name (INT8: static QDQ quantisation with the calibration batches
    first; FP16: converted here, as detnas export does, on every provider)."""

    title = "ONNX Runtime"

    def variant(self, options: BackendOptions, device: str) -> str:
        """I/O binding changes what a GPU run includes (the copies), so it is part of the key."""
        return f"ort:{options.provider(device)}" + (":iobinding" if options.binds_io(device) else "")

    def prepare_onnx(self, path: Path, inputs: Sequence[torch.Tensor], *, precision: str, device: str, threads: int,
                     options: BackendOptions, calibration: Sequence[torch.Tensor] | None = None) -> Prepared:
        import torch

        provider = options.provider(device)
        with tempfile.TemporaryDirectory(prefix="detnas-bench-") as tmp:
            if precision != "fp32":  # a file that does not load gets the clear message before converting it
                open_session(path, "cpu", 1)
            from detnas.bench.backends.trt_backend import precision_file

            model, seconds = precision_file(path, Path(tmp), precision, calibration, options.converters,
                                            f"ONNX Runtime ({provider})")
            prepared = prepare_ort(model, [x.numpy() for x in inputs], provider=provider, threads=threads,
                                   precision=precision, io_binding=options.binds_io(device),
                                   device_id=torch.device(device).index or 0 if provider != "cpu" else 0)
        if seconds is not None:
            prepared.details["convert_seconds"] = round(seconds, 3)
        return prepared
