"""The TensorRT backend's control flow on a strict fake of the `tensorrt` module, without TensorRT or a GPU.

Every fake object refuses any public attribute that `trt_backend.API` does not list for its TensorRT version, so
a call the table (checked against the real bindings by tests/test_trt_api.py) does not cover fails here: e.g.
`config.set_flag` on TensorRT 11. Each TensorRT result detnas must check gets a test that makes it fail.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from detnas.bench.backends import trt_backend
from detnas.bench.backends.trt_backend import (
    NamedTensors,
    api_for,
    bind_io,
    build_engine,
    load_engine,
    onnx_precision,
    process_logger,
    require_tensorrt,
)
from detnas.errors import DetnasError

V86, V10, V11 = "8.6.1", "10.3.0", "11.4.0.106"


class Strict:
    """A fake TensorRT object named `_name`: public attributes outside trt_backend.API for `_version` do not exist."""

    _name = ""

    def __init__(self, version: str, name: str | None = None) -> None:
        self._version = version
        if name is not None:
            self._name = name

    def __getattribute__(self, attr: str):  # noqa: ANN204 - any attribute
        if not attr.startswith("_"):
            name, version = object.__getattribute__(self, "_name"), object.__getattribute__(self, "_version")
            path = f"{name}.{attr}" if name else attr
            paths = {use.path for use in api_for(version)}
            if path not in paths and not any(p.startswith(path + ".") for p in paths):
                raise AttributeError(f"{path} is not in trt_backend.API for TensorRT {version}")
        return object.__getattribute__(self, attr)


class FakeTrt(Strict):
    """The module: records what was called with which logger; `_fail` names the one result that should fail."""

    def __init__(self, version: str, fail: str = "", parse_errors: list[tuple] = (),
                 input_shape: tuple = (1, 3, 8, 8), layers: dict[str, tuple[str, ...]] | None = None) -> None:
        super().__init__(version)
        self.__version__ = version
        self._input_shape = input_shape
        self._layers = {"conv": ("HALF",), "decode": ("FLOAT",), "shape": ("INT32",), "cast": ("FLOAT", "INT32")} \
            if layers is None else layers  # the parsed network: layer name -> output dtypes
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # for importlib.util.find_spec("tensorrt")
        self._fail, self._parse_errors, self._log = fail, list(parse_errors), []
        trt = self

        class LoggerClass(Strict):
            _name = "Logger"
            WARNING = "warning"

            def __call__(self, severity: str) -> object:
                logger = types.SimpleNamespace(severity=severity)
                trt._log.append(("Logger", logger))
                return logger

        self.Logger = LoggerClass(version)
        self.NetworkDefinitionCreationFlag = _enum(version, "NetworkDefinitionCreationFlag",
                                                   EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        self.BuilderFlag = _enum(version, "BuilderFlag", FP16="FP16", INT8="INT8", TF32="TF32",
                                 OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS")
        self.DataType = _enum(version, "DataType", FLOAT="FLOAT")
        self.MemoryPoolType = _enum(version, "MemoryPoolType", WORKSPACE="workspace")
        self.TensorIOMode = _enum(version, "TensorIOMode", INPUT="input")

    def init_libnvinfer_plugins(self, logger: object, namespace: str) -> bool:
        self._log.append(("plugins", logger))
        return self._fail != "plugins"

    def Builder(self, logger: object) -> FakeBuilder:  # noqa: N802 - mirrors tensorrt.Builder
        self._log.append(("Builder", logger))
        return FakeBuilder(self)

    def OnnxParser(self, network: object, logger: object) -> FakeParser:  # noqa: N802
        self._log.append(("OnnxParser", logger))
        return FakeParser(self)

    def Runtime(self, logger: object) -> FakeRuntime:  # noqa: N802
        self._log.append(("Runtime", logger))
        return FakeRuntime(self)

    @staticmethod
    def nptype(dtype: str) -> np.dtype:
        return np.dtype(dtype)


def _enum(version: str, trt_name: str, **members: object) -> Strict:
    fake = Strict(version, trt_name)
    for key, value in members.items():
        object.__setattr__(fake, key, value)
    return fake


class FakeBuilder(Strict):
    _name = "Builder"

    def __init__(self, trt: FakeTrt) -> None:
        super().__init__(trt._version)
        self._trt = trt

    def create_network(self, flags: int) -> Strict:
        self._trt._log.append(("create_network", flags))
        network = Strict(self._trt._version, "INetworkDefinition")
        tensor = _enum(self._trt._version, "ITensor", shape=self._trt._input_shape, name="images")
        object.__setattr__(network, "get_input", lambda index: tensor)
        layers = [FakeLayer(self._trt, name, dtypes) for name, dtypes in self._trt._layers.items()]
        object.__setattr__(network, "num_layers", len(layers))
        object.__setattr__(network, "get_layer", lambda index: layers[index])
        return network

    def create_builder_config(self) -> FakeConfig:
        return FakeConfig(self._trt)

    def create_optimization_profile(self) -> Strict:
        profile = Strict(self._trt._version, "IOptimizationProfile")
        object.__setattr__(profile, "set_shape", lambda *shapes: self._trt._log.append(("set_shape", shapes)))
        return profile

    def build_serialized_network(self, network: object, config: object) -> bytes | None:
        return None if self._trt._fail == "build" else b"engine"


class FakeLayer(Strict):
    """A parsed layer whose outputs have the given dtypes; what detnas constrains it to is logged."""

    _name = "ILayer"

    def __init__(self, trt: FakeTrt, name: str, dtypes: tuple[str, ...]) -> None:
        super().__init__(trt._version)
        self._trt, self._layer = trt, name
        self.num_outputs = len(dtypes)
        self._outputs = [_enum(trt._version, "ITensor", dtype=d) for d in dtypes]

    def get_output(self, index: int) -> Strict:
        return self._outputs[index]

    def __setattr__(self, attr: str, value: object) -> None:
        if attr == "precision":
            self._trt._log.append(("precision", self._layer, value))
        object.__setattr__(self, attr, value)

    def set_output_type(self, index: int, dtype: str) -> None:
        self._trt._log.append(("set_output_type", self._layer, index, dtype))


class FakeConfig(Strict):
    _name = "IBuilderConfig"

    def __init__(self, trt: FakeTrt) -> None:
        super().__init__(trt._version)
        self._trt = trt

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        pass

    def set_flag(self, flag: str) -> None:
        self._trt._log.append(("set_flag", flag))

    def clear_flag(self, flag: str) -> None:
        self._trt._log.append(("clear_flag", flag))

    def add_optimization_profile(self, profile: object) -> int:
        self._trt._log.append(("add_optimization_profile", profile))
        return -1 if self._trt._fail == "profile" else 0

    def create_timing_cache(self, blob: bytes) -> bytes:
        return bytes(blob)

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        self._cache = cache + b"+timings"
        return self._trt._fail != "timing cache"

    def get_timing_cache(self) -> Strict:
        cache = Strict(self._trt._version, "ITimingCache")
        object.__setattr__(cache, "serialize", lambda: self._cache)
        return cache


class FakeParser(Strict):
    _name = "OnnxParser"

    def __init__(self, trt: FakeTrt) -> None:
        super().__init__(trt._version)
        self._trt = trt
        self.num_errors = len(trt._parse_errors)

    def parse(self, model: bytes, path: str) -> bool:
        return not self._trt._parse_errors

    def get_error(self, index: int) -> Strict:
        node, name, op, desc = self._trt._parse_errors[index]
        error = Strict(self._trt._version, "ParserError")
        for key, value in dict(node=node, node_name=name, node_operator=op, desc=desc).items():
            object.__setattr__(error, key, lambda value=value: value)
        return error


class FakeRuntime(Strict):
    _name = "Runtime"

    def __init__(self, trt: FakeTrt) -> None:
        super().__init__(trt._version)
        self._trt = trt

    def deserialize_cuda_engine(self, blob: bytes) -> FakeEngine | None:
        return None if self._trt._fail == "deserialize" else FakeEngine(self._trt)


_IO = {"images": ("input", (1, 3, 8, 8), "float16"), "num_dets": ("output", (1,), "int64"),
       "boxes": ("output", (1, 5, 4), "float32")}


class FakeEngine(Strict):
    _name = "ICudaEngine"

    def __init__(self, trt: FakeTrt, io: dict = _IO) -> None:
        super().__init__(trt._version)
        self._trt, self._io = trt, io
        self.num_io_tensors = len(io)

    def create_execution_context(self) -> FakeContext | None:
        return None if self._trt._fail == "context" else FakeContext(self._trt, self._io)

    def get_tensor_name(self, index: int) -> str:
        return list(self._io)[index]

    def get_tensor_mode(self, name: str) -> str:
        return self._io[name][0]

    def get_tensor_dtype(self, name: str) -> str:
        return self._io[name][2]


class FakeContext(Strict):
    _name = "IExecutionContext"

    def __init__(self, trt: FakeTrt, io: dict) -> None:
        super().__init__(trt._version)
        self._trt, self._io, self._addresses, self._runs = trt, io, {}, []

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        return self._trt._fail != "shape" and shape == self._io[name][1]

    def get_tensor_shape(self, name: str) -> tuple:
        return self._io[name][1]

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self._addresses[name] = pointer
        return self._trt._fail != "address"

    def execute_async_v3(self, stream_handle: int) -> bool:
        self._runs.append((stream_handle, dict(self._addresses)))
        return self._trt._fail != "execute"


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Install a FakeTrt as `tensorrt` with a visible (fake) CUDA GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))

    def install(version: str, **kw) -> FakeTrt:
        fake = FakeTrt(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        return fake

    return install


def _onnx_file(path: Path, precision: str, stated: str | None = None) -> Path:
    """A one-Conv graph in fp32, fp16 (half input and weights) or int8 (QuantizeLinear / DequantizeLinear)."""
    dtype = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    weight = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float16 if precision == "fp16" else np.float32), "w")
    nodes, inits, conv_in = [], [weight], "images"
    if precision == "int8":
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        conv_in = "dq"
    nodes.append(helper.make_node("Conv", [conv_in, "w"], ["out"], name="conv0"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", dtype, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", dtype, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if stated is not None:
        helper.set_model_props(model, {"detnas.precision": f'"{stated}"'})
    onnx.save(model, path)
    return path


# --- precision comes from the file ------------------------------------------------------------------------------


def test_precision_is_read_from_the_file(tmp_path: Path) -> None:
    for precision in ("fp32", "fp16", "int8"):
        assert onnx_precision(_onnx_file(tmp_path / f"{precision}.onnx", precision)) == precision
        assert onnx_precision(_onnx_file(tmp_path / f"s{precision}.onnx", precision, stated=precision)) == precision
    with pytest.raises(DetnasError, match="metadata detnas.precision says int8 but the graph is fp32"):
        onnx_precision(_onnx_file(tmp_path / "lie.onnx", "fp32", stated="int8"))
    with pytest.raises(DetnasError, match="not one of fp32, fp16, int8"):
        onnx_precision(_onnx_file(tmp_path / "odd.onnx", "fp32", stated="bf16"))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(DetnasError, match="junk.onnx: not a readable ONNX file"):
        onnx_precision(tmp_path / "junk.onnx")


def test_precision_of_the_files_the_bench_writes(tmp_path: Path) -> None:
    """The files the bench hands TensorRT: a torch export, the same in half precision, and ORT's QDQ quantization."""
    from detnas.bench.models import module_to_onnx
    from detnas.export.precision import quantize_int8

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    fp32 = module_to_onnx(module, torch.rand(1, 3, 16, 16), tmp_path / "fp32.onnx")
    fp16 = module_to_onnx(module.half(), torch.rand(1, 3, 16, 16).half(), tmp_path / "fp16.onnx")
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", [np.random.rand(1, 3, 16, 16).astype(np.float32)])
    assert [onnx_precision(p) for p in (fp32, fp16, int8)] == ["fp32", "fp16", "int8"]


def _flags(trt: FakeTrt) -> list[tuple]:
    return [c for c in trt._log if c[0] in ("set_flag", "clear_flag")]


@pytest.mark.parametrize("version", [V10, V11])
def test_strongly_typed_builds_touch_no_precision_flag(version: str, use_fake, tmp_path: Path) -> None:
    """10.3+ / 11: STRONGLY_TYPED network, and no precision flag (11 has none: the strict fake would raise) but
    TF32, cleared so FP32 layers compute in FP32; no layer constraint either (the file's types rule)."""
    for precision in ("fp32", "fp16", "int8"):
        trt = use_fake(version)
        engine = build_engine(_onnx_file(tmp_path / f"{precision}.onnx", precision), tmp_path / f"{precision}.engine",
                              input_shape=(1, 3, 8, 8), precision=precision)
        assert engine.read_bytes() == b"engine"
        assert ("create_network", 1 << 1) in trt._log and _flags(trt) == [("clear_flag", "TF32")]
        assert not [c for c in trt._log if c[0] in ("precision", "set_output_type")]


def test_tensorrt_8_6_sets_only_the_flag_the_file_needs(use_fake, tmp_path: Path) -> None:
    expected = {"fp32": [], "fp16": [("set_flag", "FP16"), ("set_flag", "OBEY_PRECISION_CONSTRAINTS")],
                "int8": [("set_flag", "INT8")]}
    for precision, flags in expected.items():
        trt = use_fake(V86)
        build_engine(_onnx_file(tmp_path / f"{precision}.onnx", precision), tmp_path / "m.engine", input_shape=(1, 3, 8, 8))
        assert ("create_network", 1 << 0) in trt._log  # EXPLICIT_BATCH
        assert _flags(trt) == [("clear_flag", "TF32"), *flags], precision


def test_tensorrt_8_6_fp16_keeps_the_files_fp32_layers_fp32(use_fake, tmp_path: Path) -> None:
    """8.6 is weakly typed: under the FP16 flag any layer may run in FP16. The layers the parser typed FP32 (the
    file's FP32 islands: decoding, NMS, RoI coordinates) are pinned to FP32, computing and writing; the FP16
    network and integer (shape) layers are left alone, and the INT8 and FP32 builds pin nothing."""
    trt = use_fake(V86)
    build_engine(_onnx_file(tmp_path / "fp16.onnx", "fp16"), tmp_path / "m.engine", input_shape=(1, 3, 8, 8))
    pinned = [c for c in trt._log if c[0] in ("precision", "set_output_type")]
    assert pinned == [("precision", "decode", "FLOAT"), ("set_output_type", "decode", 0, "FLOAT"),
                      ("precision", "cast", "FLOAT"), ("set_output_type", "cast", 0, "FLOAT")]
    for precision in ("fp32", "int8"):
        trt = use_fake(V86)
        build_engine(_onnx_file(tmp_path / f"{precision}.onnx", precision), tmp_path / "m.engine", input_shape=(1, 3, 8, 8))
        assert not [c for c in trt._log if c[0] in ("precision", "set_output_type")], precision


@pytest.mark.parametrize("version", [V86, V10, V11])
def test_tf32_only_when_asked(version: str, use_fake, tmp_path: Path) -> None:
    trt = use_fake(version)
    build_engine(_onnx_file(tmp_path / "m.onnx", "fp32"), tmp_path / "m.engine", input_shape=(1, 3, 8, 8), tf32=True)
    assert _flags(trt) == [("set_flag", "TF32")]


def test_a_precision_the_file_does_not_carry_is_refused_before_tensorrt(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT is not even asked
    with pytest.raises(DetnasError, match="the file is fp32 but int8 was asked for.*--precision int8"):
        build_engine(_onnx_file(tmp_path / "m.onnx", "fp32"), tmp_path / "m.engine", input_shape=(1, 3, 8, 8),
                     precision="int8")


def test_dynamic_input_is_pinned_and_the_timing_cache_kept(use_fake, tmp_path: Path) -> None:
    trt = use_fake(V11, input_shape=(-1, 3, 8, 8))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    build_engine(_onnx_file(tmp_path / "m.onnx", "fp32"), tmp_path / "m.engine", input_shape=(2, 3, 8, 8),
                 timing_cache=cache)
    assert ("set_shape", ("images", (2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8))) in trt._log
    assert [c[0] for c in trt._log].count("add_optimization_profile") == 1
    assert cache.read_bytes() == b"old+timings"
    use_fake(V10, fail="timing cache")
    with pytest.raises(DetnasError, match="timing cache from another GPU or TensorRT version"):
        build_engine(_onnx_file(tmp_path / "m.onnx", "fp32"), tmp_path / "n.engine", input_shape=(1, 3, 8, 8),
                     timing_cache=cache)
    assert not (tmp_path / "n.engine").exists() and cache.read_bytes() == b"old+timings"
    use_fake(V10, fail="profile", input_shape=(-1, 3, 8, 8))
    with pytest.raises(DetnasError, match=r"TensorRT rejected input shape \[2, 3, 8, 8\] for 'images'"):
        build_engine(_onnx_file(tmp_path / "m.onnx", "fp32"), tmp_path / "n.engine", input_shape=(2, 3, 8, 8))


# --- one logger for the process ---------------------------------------------------------------------------------


def test_one_logger_for_plugins_builder_parser_and_runtime(use_fake, tmp_path: Path) -> None:
    trt = use_fake(V11)
    onnx_path = _onnx_file(tmp_path / "m.onnx", "fp32")
    for _ in range(2):
        build_engine(onnx_path, tmp_path / "m.engine", input_shape=(1, 3, 8, 8))
        load_engine(trt, tmp_path / "m.engine")
    created = [obj for what, obj in trt._log if what == "Logger"]
    users = [(what, obj) for what, obj in trt._log if what in ("plugins", "Builder", "OnnxParser", "Runtime")]
    assert len(created) == 1 and {what for what, _ in users} == {"plugins", "Builder", "OnnxParser", "Runtime"}
    assert all(obj is created[0] for _, obj in users) and process_logger(trt) is created[0]
    assert [what for what, _ in trt._log].count("plugins") == 1  # registered once per process


# --- every TensorRT result is checked ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fail", "message"), [
    ("plugins", "could not register its plugin library"),
    ("build", "failed to build a fp32 engine"),
])
def test_failed_build_steps_are_one_line_errors(fail: str, message: str, use_fake, tmp_path: Path) -> None:
    use_fake(V10, fail=fail)
    with pytest.raises(DetnasError, match=message) as caught:
        build_engine(_onnx_file(tmp_path / "m.onnx", "fp32"), tmp_path / "m.engine", input_shape=(1, 3, 8, 8))
    assert "\n" not in str(caught.value) and not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("version", [V86, V11])
def test_parser_errors_are_listed_by_node(version: str, use_fake, tmp_path: Path) -> None:
    """10+ names the node; 8.6 gives its index only, looked up in the file."""
    errors = [(0, "conv0", "Conv", "Assertion failed: weights must be constant\nmore detail"), (-1, "", "", "bad model")]
    use_fake(version, parse_errors=errors)
    with pytest.raises(DetnasError) as caught:
        build_engine(_onnx_file(tmp_path / "m.onnx", "fp32"), tmp_path / "m.engine", input_shape=(1, 3, 8, 8))
    assert str(caught.value).endswith(f"TensorRT {version} cannot parse the ONNX file: node 0 'conv0' (Conv): "
                                      "Assertion failed: weights must be constant; graph: bad model")


@pytest.mark.parametrize(("fail", "message"), [
    ("deserialize", "cannot load this engine"),
    ("context", "could not create an execution context"),
])
def test_failed_engine_loads_are_one_line_errors(fail: str, message: str, use_fake, tmp_path: Path) -> None:
    trt = use_fake(V10, fail=fail)
    (tmp_path / "m.engine").write_bytes(b"engine")
    with pytest.raises(DetnasError, match=message):
        load_engine(trt, tmp_path / "m.engine")


def _bound(trt: FakeTrt) -> tuple:
    engine, context = load_engine(trt, _engine_file(trt))
    stream = types.SimpleNamespace(cuda_stream=1234)
    batches = [torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)]
    return bind_io(trt, NamedTensors(trt, engine, context), batches, stream, device="cpu"), context, batches


def _engine_file(trt: FakeTrt) -> Path:
    path = Path(trt._tmp) / "m.engine"
    path.write_bytes(b"engine")
    return path


@pytest.mark.parametrize("version", [V86, V10, V11])
def test_io_binding_on_every_version(version: str, use_fake, tmp_path: Path) -> None:
    """Outputs allocated with the engine's shapes and dtypes, batches cast to the input dtype, each call pointing the
    input at its batch (the named-tensor API exists on 8.6 as on 10 and 11)."""
    trt = use_fake(version)
    trt._tmp = tmp_path
    (call, io, outputs), context, batches = _bound(trt)
    assert io == {"num_dets": [1], "boxes": [1, 5, 4], "images": [1, 3, 8, 8]}
    assert [(n, o.shape, o.dtype) for n, o in outputs.items()] == [("num_dets", (1,), torch.int64),
                                                                   ("boxes", (1, 5, 4), torch.float32)]
    assert all(b.dtype == torch.float16 for b in batches)
    call(1)
    call(0)
    assert [run[1]["images"] for run in context._runs] == [batches[1].data_ptr(), batches[0].data_ptr()]
    assert context._runs[0][0] == 1234 and context._runs[0][1]["boxes"] == outputs["boxes"].data_ptr()


@pytest.mark.parametrize(("fail", "message"), [
    ("shape", "does not accept shape"),
    ("address", "refused its device address"),
])
def test_failed_binding_is_a_one_line_error(fail: str, message: str, use_fake, tmp_path: Path) -> None:
    trt = use_fake(V10, fail=fail)
    trt._tmp = tmp_path
    with pytest.raises(DetnasError, match=message):
        _bound(trt)


def test_failed_enqueue_is_an_error_not_a_fast_run(use_fake, tmp_path: Path) -> None:
    trt = use_fake(V11, fail="execute")
    trt._tmp = tmp_path
    (call, _, _), context, _ = _bound(trt)
    with pytest.raises(DetnasError, match="could not enqueue the engine"):
        call(0)
    assert len(context._runs) == 1


def test_unusable_engine_io_is_refused(use_fake, tmp_path: Path) -> None:
    trt = use_fake(V10)
    stream = types.SimpleNamespace(cuda_stream=1)
    cases = {"data-dependent shape": {**_IO, "boxes": ("output", (1, -1, 4), "float32")},
             "engine has 2 inputs": {**_IO, "scale": ("input", (1,), "float32")}}
    for message, io in cases.items():
        engine = FakeEngine(trt, io)
        with pytest.raises(DetnasError, match=message):
            bind_io(trt, NamedTensors(trt, engine, FakeContext(trt, io)), [torch.rand(1, 3, 8, 8)], stream, device="cpu")


# --- the supported range ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.0.1", "10.2.0.post1", "12.0.0", "8.5.3"])
def test_unsupported_tensorrt_is_one_line_naming_it_and_the_range(version: str, use_fake, capsys, tmp_path) -> None:
    use_fake(version)
    with pytest.raises(DetnasError, match=rf"TensorRT {version} is installed but detnas supports TensorRT "
                                          rf"{trt_backend.SUPPORTED_TEXT}"):
        require_tensorrt()
    from detnas.cli import main

    argv = ["export", "--weights", str(tmp_path / "none"), "--out", str(tmp_path / "m.onnx"), "--format", "trt",
            "--no-parity"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"TensorRT {version} is installed" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_bench_rows_record_tf32_and_key_it(monkeypatch, tmp_path: Path) -> None:
    """The bench builds with the asked TF32 setting, records it in the row's details and keys the cache by it; an
    engine file's setting comes from its sidecar, unknown (None) without one."""
    from detnas.bench.backends import BackendOptions, Prepared, latency_backend
    from detnas.bench.oracle import _engine_tf32

    built = []
    monkeypatch.setattr(trt_backend, "build_engine", lambda path, engine, **kw: built.append(kw["tf32"]) or engine)
    monkeypatch.setattr(trt_backend, "prepare_engine", lambda engine, inputs: Prepared(call=lambda i: None, n_inputs=1))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    backend = latency_backend("trt")
    for tf32 in (False, True):
        prepared = backend.prepare_onnx(_onnx_file(tmp_path / "m.onnx", "fp32"), [torch.rand(1, 3, 8, 8)],
                                        precision="fp32", device="cuda", threads=1, options=BackendOptions(tf32=tf32))
        assert prepared.details["tf32"] is tf32
    assert built == [False, True]
    assert [backend.variant(BackendOptions(tf32=v), "cuda") for v in (True, False, None)] == \
        ["trt:tf32", "trt:no-tf32", "trt:tf32-unknown"]
    engine = tmp_path / "m.engine"
    assert _engine_tf32(engine) is None
    engine.with_suffix(".json").write_text('{"tf32": true}')
    assert _engine_tf32(engine) is True


def test_trt_bench_builds_times_and_fingerprints_the_asked_gpu(monkeypatch, tmp_path: Path) -> None:
    """--device cuda:1: the engine is built, bound and timed while GPU 1 is the current device, and the fingerprint
    (the cache key's) is GPU 1's; before, TensorRT built and ran on GPU 0 under GPU 1's fingerprint."""
    from detnas.bench import oracle
    from detnas.bench.backends import Prepared
    from detnas.bench.fingerprint import Fingerprint

    log: list = []
    current = [0]

    class Device:
        def __init__(self, device) -> None:  # noqa: ANN001 - an index or a torch.device, as torch.cuda.device takes
            self.index = device if isinstance(device, int) else torch.device(device).index

        def __enter__(self) -> None:
            self.before, current[0] = current[0], self.index

        def __exit__(self, *exc: object) -> None:
            current[0] = self.before

    def fingerprint(device: str, threads: int) -> Fingerprint:
        log.append(("fingerprint", device))
        return Fingerprint(f"GPU {torch.device(device).index}", "d", "c", "t", "o", "torch", "cpu", threads)

    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(oracle, "collect_fingerprint", fingerprint)
    monkeypatch.setattr(oracle, "gpu_state", lambda index=0: {"index": index})
    monkeypatch.setattr(trt_backend, "build_engine", lambda path, engine, **kw: log.append(("build", current[0])) or engine)
    monkeypatch.setattr(trt_backend, "prepare_engine", lambda engine, inputs: log.append(("bind", current[0])) or Prepared(
        call=lambda i: log.append(("run", current[0])), n_inputs=1))
    protocol = oracle.TimingProtocol(warmup=1, runs=2, device="cuda:1")
    result = oracle.measure_onnx(_onnx_file(tmp_path / "m.onnx", "fp32"), [torch.rand(1, 3, 8, 8)], backend="trt",
                                 protocol=protocol)
    assert [entry for entry in log if entry[0] != "fingerprint"] == [("build", 1), ("bind", 1)] + [("run", 1)] * 3
    assert {entry for entry in log if entry[0] == "fingerprint"} == {("fingerprint", "cuda:1")}
    assert result.fingerprint.device == "GPU 1" and result.details["gpu_before"] == {"index": 1}
    assert current[0] == 0, "the current device is restored"


def test_trt_bench_times_the_file_that_ships_at_reduced_precision(monkeypatch, tmp_path: Path) -> None:
    """An arch (a module) timed at FP16 / INT8 on TensorRT: the engine is built from its FP32 export converted as
    `detnas export --precision` converts it (FP16 network with FP32 inputs and post-processing; INT8 QDQ from the
    calibration batches), never from `module.half()`; without the converters it is refused with the reason."""
    from detnas.bench.backends import BackendOptions, Prepared, latency_backend
    from detnas.export.converters import onnx_converters

    built = []

    def build(path, engine, **kw):  # noqa: ANN001, ANN202
        model = onnx.load(str(path))
        built.append((kw["precision"], onnx_precision(path), model.graph.input[0].type.tensor_type.elem_type))
        return engine

    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(trt_backend, "build_engine", build)
    monkeypatch.setattr(trt_backend, "prepare_engine", lambda engine, inputs: Prepared(call=lambda i: None, n_inputs=1))
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    inputs = [torch.rand(1, 3, 16, 16)]
    backend, options = latency_backend("trt"), BackendOptions(converters=onnx_converters())
    for precision in ("fp16", "int8"):
        prepared = backend.prepare_module(module, inputs, precision=precision, device="cuda:0", threads=1,
                                          options=options, calibration=inputs)
        assert prepared.details["convert_seconds"] >= 0
    assert built == [("fp16", "fp16", TensorProto.FLOAT), ("int8", "int8", TensorProto.FLOAT)]
    with pytest.raises(DetnasError, match="--precision int8 on TensorRT times model.onnx converted as detnas export"):
        backend.prepare_module(module, inputs, precision="int8", device="cuda:0", threads=1, options=BackendOptions(),
                               calibration=inputs)
    with pytest.raises(DetnasError, match="INT8 needs calibration data"):
        backend.prepare_module(module, inputs, precision="int8", device="cuda:0", threads=1, options=options)
