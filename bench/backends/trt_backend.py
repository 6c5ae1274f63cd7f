"""TensorRT backend: an ONNX file -> a strongly typed engine, and CUDA-event timing of the engine's execution.

The only module that imports `tensorrt`, and only inside functions: TensorRT is absent on most machines, so
`require_tensorrt` says exactly which piece is missing. Precision lives in the ONNX file (FP32, FP16, or an
explicitly quantized INT8 QDQ graph): TensorRT 10.3+ and 11 build it as a strongly typed network and no builder
precision flag is touched (11 removed them, with implicit INT8 calibration); 8.6 has no strong typing, so there
the FP16 or INT8 flag is set only so that the file's own FP16 / Q/DQ layers may run in that precision, and an FP16
build obeys precision constraints that pin the file's FP32 layers (box decoding, NMS, RoI coordinates) to FP32
(`_pin_fp32_layers`). TF32 is off unless asked for (`tf32=True`): TensorRT enables it by default for FP32 layers on
Ampere and newer, which would make an "fp32" engine a TF32 one; the choice is recorded with the engine. All versions
use the named-tensor API (`set_tensor_address`, `execute_async_v3`, present since 8.5). Every TensorRT name used
here is listed once, with the versions that use it and its signature, in `API`; tests/test_trt_api.py checks that
table against the real binding modules of each supported version. Device memory is held in torch tensors.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from detnas.bench.backends import LATENCY_BACKENDS, BackendOptions, LatencyBackend, Prepared
from detnas.bench.onnx_metadata import PRECISION_KEY, OnnxMetadata, load_onnx_header
from detnas.bench.precision import OnnxConverters, PrecisionWarning, capability_has_fast_fp16, require_calibration
from detnas.bench.result import PRECISIONS
from detnas.errors import DetnasError
from detnas.io import atomic_path

if TYPE_CHECKING:
    import torch


_UNAVAILABLE = "TensorRT backend unavailable: "

#: [low, high) (major, minor) version ranges. Supported: 8.6 (the last for sm_61, e.g. the GTX 1080 Ti; no strong
#: typing) and 10.3 up to 11.x (strongly typed; 10.3 is the oldest 10.x checked by tests/test_trt_api.py, which also
#: checks that pyproject's `tensorrt` extra admits the same releases).
V86, V10_11 = ((8, 6), (8, 7)), ((10, 3), (12, 0))
SUPPORTED = (V86, V10_11)
SUPPORTED_TEXT = "8.6.x, or 10.3 up to 11.x"
ALL = ((8, 6), (12, 0))


@dataclass(frozen=True)
class ApiUse:
    """One TensorRT name detnas uses on the versions in [versions[0], versions[1]).

    `path` is `Class.member`, `Enum.MEMBER` or a module-level function. `params` (positional, after self) and
    `returns` (the last dotted part of the return type) describe a method or function call; `kind` is 'call',
    'property', 'member' (enum value / attribute) or 'class'."""

    path: str
    versions: tuple[tuple[int, int], tuple[int, int]] = ALL
    kind: str = "call"
    params: tuple[str, ...] = ()
    returns: str = ""


#: Everything detnas touches in the `tensorrt` module, in one place (see tests/test_trt_api.py).
API: tuple[ApiUse, ...] = (
    ApiUse("__version__", kind="member"),
    ApiUse("Logger", kind="class"),
    ApiUse("Logger.__init__", params=("min_severity",)),
    ApiUse("Logger.WARNING", kind="member"),
    ApiUse("init_libnvinfer_plugins", params=("logger", "namespace"), returns="bool"),
    ApiUse("Builder.__init__", params=("logger",)),
    ApiUse("Builder.create_network", params=("flags",), returns="INetworkDefinition"),
    ApiUse("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", V86, kind="member"),
    ApiUse("NetworkDefinitionCreationFlag.STRONGLY_TYPED", V10_11, kind="member"),
    ApiUse("OnnxParser.__init__", params=("network", "logger")),
    ApiUse("OnnxParser.parse", params=("model", "path"), returns="bool"),
    ApiUse("OnnxParser.num_errors", kind="property"),
    ApiUse("OnnxParser.get_error", params=("index",), returns="IParserError"),
    ApiUse("ParserError.desc", returns="str"),
    ApiUse("ParserError.node", returns="int"),
    ApiUse("ParserError.node_name", V10_11, returns="str"),
    ApiUse("ParserError.node_operator", V10_11, returns="str"),
    ApiUse("Builder.create_builder_config", returns="IBuilderConfig"),
    ApiUse("IBuilderConfig.set_memory_pool_limit", params=("pool", "pool_size")),
    ApiUse("MemoryPoolType.WORKSPACE", kind="member"),
    ApiUse("IBuilderConfig.set_flag", params=("flag",)),
    ApiUse("IBuilderConfig.clear_flag", params=("flag",)),
    ApiUse("BuilderFlag.TF32", kind="member"),
    ApiUse("BuilderFlag.FP16", V86, kind="member"),
    ApiUse("BuilderFlag.INT8", V86, kind="member"),
    ApiUse("BuilderFlag.OBEY_PRECISION_CONSTRAINTS", V86, kind="member"),
    ApiUse("INetworkDefinition.num_layers", V86, kind="property"),
    ApiUse("INetworkDefinition.get_layer", V86, params=("index",), returns="ILayer"),
    ApiUse("ILayer.num_outputs", V86, kind="property"),
    ApiUse("ILayer.get_output", V86, params=("index",), returns="ITensor"),
    ApiUse("ILayer.precision", V86, kind="property"),
    ApiUse("ILayer.set_output_type", V86, params=("index", "dtype")),
    ApiUse("ITensor.dtype", V86, kind="property"),
    ApiUse("DataType.FLOAT", V86, kind="member"),
    ApiUse("INetworkDefinition.get_input", params=("index",), returns="ITensor"),
    ApiUse("ITensor.shape", kind="property"),
    ApiUse("ITensor.name", kind="property"),
    ApiUse("Builder.create_optimization_profile", returns="IOptimizationProfile"),
    ApiUse("IOptimizationProfile.set_shape", params=("input", "min", "opt", "max")),
    ApiUse("IBuilderConfig.add_optimization_profile", params=("profile",), returns="int"),
    ApiUse("IBuilderConfig.create_timing_cache", params=("serialized_timing_cache",), returns="ITimingCache"),
    ApiUse("IBuilderConfig.set_timing_cache", params=("cache", "ignore_mismatch"), returns="bool"),
    ApiUse("IBuilderConfig.get_timing_cache", returns="ITimingCache"),
    ApiUse("ITimingCache.serialize", returns="IHostMemory"),
    ApiUse("Builder.build_serialized_network", params=("network", "config"), returns="IHostMemory"),
    ApiUse("Runtime.__init__", params=("logger",)),
    ApiUse("Runtime.deserialize_cuda_engine", params=("serialized_engine",), returns="ICudaEngine"),
    ApiUse("ICudaEngine.create_execution_context", returns="IExecutionContext"),
    ApiUse("ICudaEngine.num_io_tensors", kind="property"),
    ApiUse("ICudaEngine.get_tensor_name", params=("index",), returns="str"),
    ApiUse("ICudaEngine.get_tensor_mode", params=("name",), returns="TensorIOMode"),
    ApiUse("ICudaEngine.get_tensor_dtype", params=("name",), returns="DataType"),
    ApiUse("TensorIOMode.INPUT", kind="member"),
    ApiUse("IExecutionContext.set_input_shape", params=("name", "shape"), returns="bool"),
    ApiUse("IExecutionContext.get_tensor_shape", params=("name",), returns="Dims"),
    ApiUse("IExecutionContext.set_tensor_address", params=("name", "memory"), returns="bool"),
    ApiUse("IExecutionContext.execute_async_v3", params=("stream_handle",), returns="bool"),
    ApiUse("nptype", params=("trt_type",)),
)


def version_tuple(version: str) -> tuple[int, int]:
    """'10.13.3.9' -> (10, 13)."""
    parts = re.findall(r"\d+", str(version))[:2]
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) if parts else (0, 0)


def in_versions(version: tuple[int, int], versions: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    return versions[0] <= version < versions[1]


def is_supported(version: str) -> bool:
    return any(in_versions(version_tuple(version), span) for span in SUPPORTED)


def api_for(version: str) -> list[ApiUse]:
    """The table rows that apply to one TensorRT version."""
    v = version_tuple(version)
    return [use for use in API if in_versions(v, use.versions)]


def require_tensorrt() -> ModuleType:
    """Import tensorrt, check its version is supported and a CUDA GPU is visible, or raise a DetnasError naming
    what is missing."""
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
    check_version(trt)
    import torch

    if not torch.cuda.is_available():
        raise DetnasError(
            _UNAVAILABLE + f"TensorRT {getattr(trt, '__version__', '?')} is installed but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); check the driver with nvidia-smi"
        )
    _register_plugins(trt)
    return trt


def check_version(trt: ModuleType) -> None:
    version = str(getattr(trt, "__version__", "unknown"))
    if not is_supported(version):
        raise DetnasError(f"TensorRT {version} is installed but detnas supports TensorRT {SUPPORTED_TEXT}; "
                          "install one with pip install 'detnas[tensorrt]' (GTX 10xx: tensorrt==8.6.1)")


@functools.cache
def process_logger(trt: ModuleType) -> Any:
    """The one TensorRT logger of the process. The plugin library keeps the logger it was registered with and logs
    through it for as long as the process lives, so it must never be a temporary; Builder, OnnxParser and Runtime
    share it."""
    return trt.Logger(trt.Logger.WARNING)


@functools.cache
def _register_plugins(trt: ModuleType) -> None:
    """Load TensorRT's plugin library into its registry once per process: the ONNX parser imports RoiAlign as the
    ROIAlign_TRT plugin, and an engine that holds it deserializes only where the plugin is registered."""
    if not trt.init_libnvinfer_plugins(process_logger(trt), ""):
        raise DetnasError(_UNAVAILABLE + f"TensorRT {trt.__version__} could not register its plugin library "
                          "(libnvinfer_plugin); check that it is installed next to libnvinfer")


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


def onnx_precision(onnx_path: str | Path) -> str:
    """The precision an ONNX file carries: its `detnas.precision` metadata when present, else read from the graph
    (any QuantizeLinear / DequantizeLinear -> int8, float16 inputs, initializers or constants -> fp16, else fp32). A file whose metadata and
    graph disagree is refused: the engine would not be what its label says."""
    model = load_onnx_header(onnx_path)
    graph = _graph_precision(model)
    stated = OnnxMetadata.of_model(model, onnx_path).stated_precision(PRECISIONS)
    if stated is not None and stated != graph:
        raise DetnasError(f"{onnx_path}: metadata {PRECISION_KEY} says {stated} but the graph is {graph}; "
                          "re-export the file")
    return graph


def _graph_precision(model: Any) -> str:
    from onnx import TensorProto

    graphs = [model.graph]
    nodes = []
    while graphs:  # subgraphs too (If / Loop bodies)
        graph = graphs.pop()
        nodes.extend(graph.node)
        graphs.extend(a.g for n in graph.node for a in n.attribute if a.HasField("g"))
        graphs.extend(g for n in graph.node for a in n.attribute for g in a.graphs)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in nodes):
        return "int8"
    f16 = TensorProto.FLOAT16
    if (any(i.type.tensor_type.elem_type == f16 for i in model.graph.input)
            or any(t.data_type == f16 for t in model.graph.initializer)
            or any(a.t.data_type == f16 for n in nodes if n.op_type == "Constant" for a in n.attribute)):
        return "fp16"
    return "fp32"


def timed_precision(path: str | Path, asked: str | None) -> str:
    """The precision an ONNX file is timed at, and its result labelled with: the one the file carries (its
    `detnas.precision` metadata, checked against the graph) when `asked` is None, or `asked` when the file is FP32
    and is converted to it. A reduced-precision file asked for as another precision is refused: an INT8 file timed
    under an FP32 label makes every comparison against it wrong."""
    return _checked_precision(path, onnx_precision(path), asked)


def _checked_precision(path: str | Path, carried: str, asked: str | None) -> str:
    if asked is None or asked == carried:
        return carried
    if carried != "fp32":
        raise DetnasError(f"--precision {asked}: {Path(path).name} is already an {carried} file ({PRECISION_KEY} "
                          f"metadata and graph); leave --precision out (or pass --precision {carried}) to time it as "
                          f"it is, or time the FP32 export to have it converted to {asked}")
    return asked


def precision_file(path: Path, work: Path, precision: str, calibration: Sequence[Any] | None,
                   converters: OnnxConverters | None, runtime: str) -> tuple[Path, float | None]:
    """The file `runtime` times at `precision`: `path` itself when it carries that precision (e.g. the file
    `detnas export --precision` wrote), else `path` (FP32) converted as `detnas export --precision` converts it
    (FP16 network with FP32 post-processing; INT8 QDQ with ranges from the calibration batches) into `work`; and
    the seconds the conversion took (None: timed as it is). A module's half() is never what ships: NMS, RoiAlign
    and box decoding would run in FP16."""
    import time

    carried = onnx_precision(path)
    if _checked_precision(path, carried, precision) == carried:  # the file as it is
        return path, None
    require_calibration(precision, calibration)  # only a conversion needs ranges; a file already INT8 does not
    if converters is None:
        raise DetnasError(f"--precision {precision} on {runtime} times {path.name} converted as detnas export "
                          "--precision converts it; pass BackendOptions(converters=detnas.export.converters."
                          "onnx_converters()), or time a file exported with that precision")
    start = time.perf_counter()
    if precision == "int8":
        model = converters.int8(path, work / "model.int8.onnx", [x.numpy() for x in calibration or []])
    else:
        model = converters.fp16(path, work / "model.fp16.onnx")
    return model, time.perf_counter() - start


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    input_shape: tuple[int, ...],
    precision: str | None = None,
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    tf32: bool = False,
) -> Path:
    """Parse the ONNX file, build a serialized engine for `input_shape` in the precision the file carries and
    write it atomically. `precision`, when given, is what the caller expects the file to carry (checked first).
    `tf32` lets FP32 layers run in TF32 (TensorRT's default, cleared here unless asked for).

    The timing cache file (kernel timings) is read when present and updated after the build, which makes
    rebuilding similar networks much faster.
    """
    carried = onnx_precision(onnx_path)
    if precision is not None and precision != carried:
        raise DetnasError(f"{onnx_path}: the file is {carried} but {precision} was asked for; TensorRT builds the "
                          f"precision the ONNX file carries, so give it a file exported in {precision} "
                          f"(detnas export --precision {precision})")
    trt = require_tensorrt()
    logger = process_logger(trt)
    builder = make_builder(trt, logger)
    strongly_typed = not in_versions(version_tuple(trt.__version__), V86)
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED if strongly_typed else \
        trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    network = builder.create_network(1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes(), str(onnx_path)):
        raise DetnasError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse the ONNX file: "
                          + "; ".join(parser_errors(parser, onnx_path)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    image = network.get_input(0)
    if any(d < 0 for d in image.shape):  # dynamic axes: pin them to the size being timed
        profile = builder.create_optimization_profile()
        profile.set_shape(image.name, input_shape, input_shape, input_shape)
        if config.add_optimization_profile(profile) < 0:
            raise DetnasError(f"{onnx_path}: TensorRT rejected input shape {list(input_shape)} for '{image.name}' "
                              f"(the file's input is {list(image.shape)}); time the shape the file was exported for")
    _warn_slow_fp16(carried)
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if not strongly_typed and carried != "fp32":  # 8.6: FP16 / Q/DQ layers run in that precision only with the flag
        config.set_flag(trt.BuilderFlag.FP16 if carried == "fp16" else trt.BuilderFlag.INT8)
        if carried == "fp16":  # INT8 sets no FP16 flag: its unquantized layers have no FP16 kernel to take
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            _pin_fp32_layers(trt, network)
    cache = None
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        if not config.set_timing_cache(cache, False):
            raise DetnasError(f"{timing_cache}: timing cache from another GPU or TensorRT version; delete it or pass "
                              "another --timing-cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DetnasError(f"{onnx_path}: TensorRT {trt.__version__} failed to build a {carried} engine (see the "
                          "TensorRT log above)")
    if cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return Path(engine_path)


def _pin_fp32_layers(trt: ModuleType, network: Any) -> int:
    """TensorRT 8.6 (weakly typed): with the FP16 flag the builder may run any layer in FP16, including the FP32
    islands the FP16 file keeps for box decoding, NMS and RoI coordinates. Every layer whose float outputs the parser
    typed FP32 (the file's FP32 layers; its FP16 layers yield HALF) is constrained to FP32, computing and writing;
    the config obeys the constraints. Returns the number of layers pinned."""
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        fp32 = [i for i, tensor in enumerate(outputs) if tensor.dtype == trt.DataType.FLOAT]
        if not fp32:
            continue
        layer.precision = trt.DataType.FLOAT
        for i in fp32:
            layer.set_output_type(i, trt.DataType.FLOAT)
        pinned += 1
    return pinned


def _warn_slow_fp16(precision: str) -> None:
    import torch

    if precision == "fp16" and not capability_has_fast_fp16(torch.cuda.get_device_capability()):
        warnings.warn("this GPU has no fast FP16; the FP16 engine will not be faster than FP32", PrecisionWarning,
                      stacklevel=3)


def parser_errors(parser: Any, onnx_path: str | Path) -> list[str]:
    """One 'node N name (Op): what' per parser error. TensorRT 8.6 reports only the node's index, which is looked
    up in the file's top-level graph."""
    names: list[tuple[str, str]] | None = None
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        index = int(error.node())
        if hasattr(error, "node_name"):
            name, op = error.node_name(), error.node_operator()
        else:
            if names is None:
                names = _node_names(onnx_path)
            name, op = names[index] if 0 <= index < len(names) else ("?", "?")
        where = f"node {index} '{name}' ({op})" if index >= 0 else "graph"
        desc = str(error.desc()).strip() or "?"
        lines.append(f"{where}: {desc.splitlines()[0]}")
    return lines or ["no error reported (see the TensorRT log above)"]


def _node_names(onnx_path: str | Path) -> list[tuple[str, str]]:
    return [(n.name, n.op_type) for n in load_onnx_header(onnx_path).graph.node]


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


def load_engine(trt: ModuleType, path: Path) -> tuple[Any, Any]:
    """(engine, execution context) of a serialized engine file, or a one-line DetnasError."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DetnasError(f"{path}: cannot read engine file ({exc.strerror})") from None
    runtime = trt.Runtime(process_logger(trt))
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise DetnasError(f"{path}: TensorRT {trt.__version__} cannot load this engine; engines only run on the "
                          "TensorRT version and GPU model that built them, rebuild it from the ONNX file")
    context = engine.create_execution_context()
    if context is None:
        raise DetnasError(f"{path}: TensorRT {trt.__version__} could not create an execution context (out of GPU "
                          "memory?); free GPU memory or rebuild the engine with a smaller batch")
    return engine, context


def open_engine(engine_path: str | Path, inputs: Sequence[Any]) -> EngineIO:
    """Deserialize an engine, bind its input to each of `inputs` in turn and its outputs to GPU tensors."""
    import torch

    trt = require_tensorrt()
    path = Path(engine_path)
    engine, context = load_engine(trt, path)
    stream = torch.cuda.Stream()
    batches = [torch.as_tensor(x).cuda().contiguous() for x in inputs]
    call, io, outputs = bind_io(trt, NamedTensors(trt, engine, context), batches, stream)
    details = {"tensorrt": trt.__version__, "api": "execute_async_v3", "io": io, "engine": str(path),
               "transfers": "inputs already on the GPU, outputs left there (not timed)"}
    prepared = Prepared(call=call, n_inputs=len(batches), details=details, cuda_stream=stream,
                        keepalive=(engine, context, batches, outputs), transfers="untimed")
    return EngineIO(prepared, batches, outputs)


class NamedTensors:
    """An engine's I/O tensors addressed by name, executed with execute_async_v3; every result is checked."""

    def __init__(self, trt: ModuleType, engine: Any, context: Any) -> None:
        self.trt, self.engine, self.context = trt, engine, context
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def is_input(self, name: str) -> bool:
        return self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT

    def dtype(self, name: str) -> Any:
        return self.engine.get_tensor_dtype(name)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return bool(self.context.set_input_shape(name, shape))

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))

    def bind(self, name: str, pointer: int) -> None:
        if not self.context.set_tensor_address(name, pointer):
            raise DetnasError(f"engine tensor '{name}': TensorRT refused its device address (set_tensor_address "
                              "returned False; misaligned or not GPU memory)")

    def execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise DetnasError("TensorRT could not enqueue the engine (execute_async_v3 returned False; see the "
                              "TensorRT log); no time is reported for a run that did not happen")


def bind_io(trt: ModuleType, api: NamedTensors, batches: list[Any], stream: Any,
            device: str = "cuda") -> tuple[Any, dict, dict]:
    """Allocate every output, cast the batches to the input's dtype and return (call(i), io shapes, outputs by
    name): `call(i)` points the single input at batch i and enqueues one execution on `stream`."""
    import torch

    inputs = [name for name in api.names if api.is_input(name)]
    if len(inputs) != 1:
        raise DetnasError(f"engine has {len(inputs)} inputs; the oracle feeds one image batch")
    image = inputs[0]
    batches[:] = [b.to(_torch_dtype(trt, api.dtype(image))) for b in batches]
    if not api.set_input_shape(image, tuple(batches[0].shape)):
        raise DetnasError(f"engine input '{image}' does not accept shape {list(batches[0].shape)}; an engine runs the "
                          "batch and size it was built for, rebuild it for this shape")
    outputs: dict[str, torch.Tensor] = {}
    io = {}
    for name in api.names:
        if name == image:
            continue
        shape = api.shape(name)
        if any(d < 0 for d in shape):
            raise DetnasError(f"engine output '{name}' has a data-dependent shape {shape}; export NMS with "
                              "fixed-size outputs (padded detections, as `detnas export` does) so it can be timed")
        out = torch.empty(shape, dtype=_torch_dtype(trt, api.dtype(name)), device=device)
        outputs[name] = out
        api.bind(name, out.data_ptr())
        io[name] = list(shape)
    io[image] = list(batches[0].shape)

    def call(i: int) -> None:
        api.bind(image, batches[i].data_ptr())
        api.execute(stream)

    return call, io, outputs


@LATENCY_BACKENDS.register("trt")
class TrtBackend(LatencyBackend):
    """A TensorRT engine built here for the inputs' shape from the file at the asked precision: the file itself when
    it carries it, else the FP32 file converted as `detnas export --precision` converts it (INT8 with the
    calibration batches)."""

    title = "TensorRT"
    gpu_only = True

    def variant(self, options: BackendOptions, device: str) -> str:
        """TF32 changes the number: it is in the cache key (rows cached before the flag was cleared were TF32)."""
        return f"trt:{ {True: 'tf32', False: 'no-tf32', None: 'tf32-unknown'}[options.tf32]}"

    def prepare_onnx(self, path: Path, inputs: Sequence[torch.Tensor], *, precision: str, device: str, threads: int,
                     options: BackendOptions, calibration: Sequence[torch.Tensor] | None = None) -> Prepared:
        """Built and bound on `device` (cuda:N): the engine, its stream and buffers belong to that GPU."""
        import tempfile

        import torch

        with torch.cuda.device(torch.device(device)), tempfile.TemporaryDirectory(prefix="detnas-bench-") as tmp:
            model, seconds = precision_file(path, Path(tmp), precision, calibration, options.converters, "TensorRT")
            engine = build_engine(model, Path(tmp) / "model.engine", precision=precision,
                                  input_shape=tuple(inputs[0].shape), workspace_mb=options.workspace_mb,
                                  timing_cache=options.timing_cache, tf32=bool(options.tf32))
            prepared = prepare_engine(engine, inputs)
        prepared.details["tf32"] = options.tf32
        if seconds is not None:
            prepared.details["convert_seconds"] = round(seconds, 3)
        return prepared
