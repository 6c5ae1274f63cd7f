"""TensorRT backend: ONNX -> engine (FP32 / FP16 / INT8) and CUDA-event timing of the engine's execution.

The only module that imports `tensorrt`, and only inside functions: TensorRT is absent on most machines, so
`require_tensorrt` says exactly which piece is missing. Both API generations are supported: TensorRT 8.6
(bindings, `execute_async_v2`; the last line for sm_61 such as the GTX 1080 Ti) and TensorRT 10 (named
tensors, `execute_async_v3`). Device memory is held in torch tensors, so pycuda is not needed.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from detnas.bench.backends import Prepared
from detnas.bench.precision import PrecisionWarning
from detnas.errors import DetnasError
from detnas.io import atomic_path

_UNAVAILABLE = "TensorRT backend unavailable: "


def require_tensorrt() -> ModuleType:
    """Import tensorrt and check for a CUDA GPU, or raise a DetnasError naming what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise DetnasError(
            _UNAVAILABLE + "the Python package 'tensorrt' is not installed "
            "(pip install 'detnas[tensorrt]' on a machine with an NVIDIA GPU and driver)"
        ) from None
    except OSError as exc:
        raise DetnasError(
            _UNAVAILABLE + f"the 'tensorrt' package is installed but its shared libraries do not load ({exc}); "
            "install the TensorRT libraries for your CUDA version and put them on LD_LIBRARY_PATH"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise DetnasError(
            _UNAVAILABLE + f"TensorRT {getattr(trt, '__version__', '?')} is installed but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); check the driver with nvidia-smi"
        )
    _register_plugins(trt)
    return trt


@functools.cache
def _register_plugins(trt: ModuleType) -> None:
    """Load TensorRT's plugin library into its registry once per process: the ONNX parser imports RoiAlign as the
    ROIAlign_TRT plugin, and an engine that holds it deserializes only where the plugin is registered."""
    trt.init_libnvinfer_plugins(_logger(trt), "")


def api_major(trt: ModuleType) -> int:
    """Major version: 10+ uses named tensors and execute_async_v3, 8.x bindings and execute_async_v2."""
    return int(str(trt.__version__).split(".")[0])


def _logger(trt: ModuleType) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def make_builder(trt: ModuleType, logger: Any) -> Any:
    """trt.Builder, or a DetnasError: it fails when the CUDA driver is too old or the GPU is not supported."""
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # TensorRT raises TypeError / RuntimeError depending on version
        raise DetnasError(_UNAVAILABLE + f"trt.Builder could not be created ({exc}); the CUDA driver may be too old "
                          f"for TensorRT {trt.__version__} or the GPU is not supported by it") from None
    if builder is None:
        raise DetnasError(_UNAVAILABLE + f"trt.Builder could not be created; the CUDA driver may be too old for "
                          f"TensorRT {trt.__version__} or the GPU is not supported by it (see the TensorRT log)")
    return builder


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str,
    input_shape: tuple[int, ...],
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    calibration: Sequence[Any] | None = None,
) -> Path:
    """Parse the ONNX file, build a serialized engine at `precision` for `input_shape` and write it atomically.

    The timing cache file (kernel timings) is read when present and updated after the build, which makes
    rebuilding similar networks much faster; INT8 uses an entropy calibrator over the real `calibration` batches.
    """
    trt = require_tensorrt()
    logger = _logger(trt)
    builder = make_builder(trt, logger)
    explicit_batch = 0 if api_major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        first = str(parser.get_error(0)) if parser.num_errors else "no error reported"
        raise DetnasError(f"{onnx_path}: TensorRT cannot parse the ONNX file ({first.splitlines()[0]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    image = network.get_input(0)
    if any(d < 0 for d in image.shape):  # dynamic axes: pin them to the size being timed
        profile = builder.create_optimization_profile()
        profile.set_shape(image.name, input_shape, input_shape, input_shape)
        config.add_optimization_profile(profile)
        if precision == "int8":
            config.set_calibration_profile(profile)
    if precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in 10.x
            warnings.warn("this GPU has no fast FP16; the FP16 engine will not be faster than FP32",
                          PrecisionWarning, stacklevel=2)
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            warnings.warn("this GPU has no fast INT8; the INT8 engine will not be faster", PrecisionWarning,
                          stacklevel=2)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(trt, calibration or [])
    cache = None
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise DetnasError(f"{timing_cache}: timing cache from another GPU or TensorRT version; delete it or pass "
                              "another --timing-cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DetnasError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see the TensorRT log above)")
    if cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return Path(engine_path)


def _entropy_calibrator(trt: ModuleType, batches: Sequence[Any]) -> Any:
    """IInt8EntropyCalibrator2 feeding real image batches from GPU memory held by torch tensors. Its scale cache
    is not written anywhere: it is never read back, and a file of it would be left next to the engine."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = [torch.as_tensor(b, dtype=torch.float32) for b in batches]
            self.index = 0
            self.current: torch.Tensor | None = None  # keeps the device buffer alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return int(self.batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(self.batches):
                return None
            self.current = self.batches[self.index].to("cuda").contiguous()
            self.index += 1
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return None  # always calibrate on the given images; a stale cache would silently change the scales

        def write_calibration_cache(self, cache: Any) -> None:
            pass  # the scales are not reused across builds (see read_calibration_cache)

    return EntropyCalibrator()


def _torch_dtype(trt: ModuleType, trt_dtype: Any) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.empty(0, dtype=trt.nptype(trt_dtype))).dtype


@dataclass
class EngineIO:
    """A loaded engine bound to device buffers: `prepared.call(i)` runs it on `inputs[i]` into `outputs`."""

    prepared: Prepared
    inputs: list[Any]  # the batches on the GPU, in the engine's input dtype
    outputs: dict[str, Any]  # output name -> its bound GPU tensor


def prepare_engine(engine_path: str | Path, inputs: Sequence[Any]) -> Prepared:
    """Deserialize an engine and return a runner timed with CUDA events on a dedicated stream."""
    return open_engine(engine_path, inputs).prepared


def open_engine(engine_path: str | Path, inputs: Sequence[Any]) -> EngineIO:
    """Deserialize an engine, bind its input to each of `inputs` in turn and its outputs to GPU tensors."""
    import torch

    trt = require_tensorrt()
    path = Path(engine_path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DetnasError(f"{path}: cannot read engine file ({exc.strerror})") from None
    runtime = trt.Runtime(_logger(trt))
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise DetnasError(f"{path}: TensorRT {trt.__version__} cannot load this engine; engines only run on the "
                          "TensorRT version and GPU model that built them, rebuild it from the ONNX file")
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    batches = [torch.as_tensor(x).cuda().contiguous() for x in inputs]
    api = _NamedTensors(trt, engine, context) if api_major(trt) >= 10 else _Bindings(engine, context)
    call, io, outputs = bind_io(trt, api, batches, stream)
    details = {"tensorrt": trt.__version__, "api": "execute_async_v3" if api_major(trt) >= 10 else "execute_async_v2",
               "io": io, "engine": str(path),
               "transfers": "inputs already on the GPU, outputs left there (not timed)"}
    prepared = Prepared(call=call, n_inputs=len(batches), details=details, cuda_stream=stream,
                        keepalive=(engine, context, batches, outputs))
    return EngineIO(prepared, batches, outputs)


class _NamedTensors:
    """TensorRT 10: tensors addressed by name, executed with execute_async_v3."""

    def __init__(self, trt: ModuleType, engine: Any, context: Any) -> None:
        self.trt, self.engine, self.context = trt, engine, context
        self.slots = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def is_input(self, slot: str) -> bool:
        return self.engine.get_tensor_mode(slot) == self.trt.TensorIOMode.INPUT

    def dtype(self, slot: str) -> Any:
        return self.engine.get_tensor_dtype(slot)

    def name(self, slot: str) -> str:
        return slot

    def set_input_shape(self, slot: str, shape: tuple[int, ...]) -> bool:
        return bool(self.context.set_input_shape(slot, shape))

    def shape(self, slot: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(slot))

    def bind(self, slot: str, pointer: int) -> None:
        self.context.set_tensor_address(slot, pointer)

    def execute(self, stream: Any) -> None:
        self.context.execute_async_v3(stream.cuda_stream)


class _Bindings:
    """TensorRT 8.6: bindings addressed by index, a pointer list executed with execute_async_v2."""

    def __init__(self, engine: Any, context: Any) -> None:
        self.engine, self.context = engine, context
        self.slots = list(range(engine.num_bindings))
        self.pointers = [0] * engine.num_bindings

    def is_input(self, slot: int) -> bool:
        return bool(self.engine.binding_is_input(slot))

    def dtype(self, slot: int) -> Any:
        return self.engine.get_binding_dtype(slot)

    def name(self, slot: int) -> str:
        return self.engine.get_binding_name(slot)

    def set_input_shape(self, slot: int, shape: tuple[int, ...]) -> bool:
        return bool(self.context.set_binding_shape(slot, shape))

    def shape(self, slot: int) -> tuple[int, ...]:
        return tuple(self.context.get_binding_shape(slot))

    def bind(self, slot: int, pointer: int) -> None:
        self.pointers[slot] = pointer

    def execute(self, stream: Any) -> None:
        self.context.execute_async_v2(self.pointers, stream.cuda_stream)


def bind_io(trt: ModuleType, api: _NamedTensors | _Bindings, batches: list[Any], stream: Any,
            device: str = "cuda") -> tuple[Any, dict, dict]:
    """Allocate every output, cast the batches to the input's dtype and return (call(i), io shapes, outputs by
    name): `call(i)` points the single input at batch i and enqueues one execution on `stream`."""
    import torch

    inputs = [slot for slot in api.slots if api.is_input(slot)]
    if len(inputs) != 1:
        raise DetnasError(f"engine has {len(inputs)} inputs; the oracle feeds one image batch")
    image = inputs[0]
    batches[:] = [b.to(_torch_dtype(trt, api.dtype(image))) for b in batches]
    if not api.set_input_shape(image, tuple(batches[0].shape)):
        raise DetnasError(f"engine input '{api.name(image)}' does not accept shape {list(batches[0].shape)}; an engine "
                          "runs the batch and size it was built for, rebuild it for this shape")
    outputs: dict[str, torch.Tensor] = {}
    io = {}
    for slot in api.slots:
        if slot == image:
            continue
        shape = api.shape(slot)
        if any(d < 0 for d in shape):
            raise DetnasError(f"engine output '{api.name(slot)}' has a data-dependent shape {shape}; export NMS with "
                              "fixed-size outputs (padded detections, as `detnas export` does) so it can be timed")
        out = torch.empty(shape, dtype=_torch_dtype(trt, api.dtype(slot)), device=device)
        outputs[api.name(slot)] = out
        api.bind(slot, out.data_ptr())
        io[api.name(slot)] = list(shape)
    io[api.name(image)] = list(batches[0].shape)

    def call(i: int) -> None:
        api.bind(image, batches[i].data_ptr())
        api.execute(stream)

    return call, io, outputs
