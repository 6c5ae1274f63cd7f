"""Backends: the ORT provider check, the TensorRT detection messages, real CPU timing paths, GPU/TRT paths."""

from __future__ import annotations

import importlib.abc
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from detnas.bench.backends.ort_backend import check_providers, open_session
from detnas.bench.backends.trt_backend import make_builder, require_tensorrt
from detnas.bench.inputs import image_batches, random_batches
from detnas.bench.models import module_to_onnx
from detnas.bench.oracle import BackendOptions, TimingProtocol, measure_module, measure_onnx
from detnas.bench.precision import PrecisionWarning, capability_has_fast_fp16
from detnas.bench.result import Scope
from detnas.errors import DetnasError
from detnas.export.converters import onnx_converters

QUICK = TimingProtocol(warmup=1, runs=3)
CONVERTING = BackendOptions(converters=onnx_converters())  # the oracle converts with export's code, handed in


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return module_to_onnx(_tiny(), torch.rand(1, 3, 32, 32), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_check_providers() -> None:
    check_providers("CPUExecutionProvider", ["CPUExecutionProvider"])
    check_providers("CUDAExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(DetnasError, match="silently fell back"):
        check_providers("CUDAExecutionProvider", ["CPUExecutionProvider"])


def test_requesting_cuda_provider_without_a_gpu_fails_loudly(tiny_onnx: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the fallback this test provokes cannot happen here")
    with pytest.raises(DetnasError, match="requested CUDAExecutionProvider but the session runs on"):
        open_session(tiny_onnx, "cuda", 1)


def test_onnx_file_that_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(DetnasError, match="bad.onnx: not a readable ONNX file"):  # read for its precision first
        measure_onnx(bad, random_batches(1, (32, 32)), protocol=QUICK)
    with pytest.raises(DetnasError, match="does not load in ONNX Runtime"):
        open_session(bad, "cpu", 1)


def test_ort_cpu_timing_records_protocol(tiny_onnx: Path) -> None:
    result = measure_onnx(tiny_onnx, random_batches(1, (32, 32), count=2), scope=Scope.BACKBONE,
                          protocol=TimingProtocol(warmup=2, runs=5, threads=1))
    assert result.stats.n == 5 and result.stats.min_ms > 0
    assert result.details["providers"] == ["CPUExecutionProvider"]
    assert result.details["intra_op_threads"] == 1 and result.threads == 1
    assert result.source.startswith("onnx:") and result.input_shape == (1, 3, 32, 32)
    assert result.fingerprint.onnxruntime != "unavailable"


def test_ort_fp16_on_cpu_times_the_fp16_file_with_a_warning(tiny_onnx: Path) -> None:
    with pytest.warns(PrecisionWarning, match="no fast FP16"):
        result = measure_onnx(tiny_onnx, random_batches(1, (32, 32)), precision="fp16", protocol=QUICK,
                              options=CONVERTING)
    assert result.precision == "fp16" and result.details["convert_seconds"] > 0


def test_ort_conversion_without_converters_is_refused(tiny_onnx: Path) -> None:
    """bench does not import export: a caller that wants a converted file timed hands the converters in."""
    with pytest.raises(DetnasError, match="pass BackendOptions\\(converters="):
        measure_onnx(tiny_onnx, random_batches(1, (32, 32)), precision="fp16", protocol=QUICK)


def test_int8_needs_calibration(tiny_onnx: Path) -> None:
    with pytest.raises(DetnasError, match="INT8 needs calibration data"):
        measure_onnx(tiny_onnx, random_batches(1, (32, 32)), precision="int8", protocol=QUICK)


def test_ort_int8_quantises_with_real_images(tiny_onnx: Path, coco128: Path) -> None:
    calibration = image_batches(coco128, 1, (32, 32), limit=4)
    assert len(calibration) == 4 and 0 <= float(calibration[0].min()) and float(calibration[0].max()) <= 1
    result = measure_onnx(tiny_onnx, calibration[:1], precision="int8", calibration=calibration, protocol=QUICK,
                          options=CONVERTING)
    assert result.precision == "int8" and result.stats.n == 3 and result.details["convert_seconds"] > 0


def test_ort_times_an_exported_int8_file_as_it_is(tiny_onnx: Path, tmp_path: Path) -> None:
    from detnas.export.precision import quantize_int8

    batches = random_batches(1, (32, 32))
    int8 = quantize_int8(tiny_onnx, tmp_path / "tiny.int8.onnx", [b.numpy() for b in batches])
    result = measure_onnx(int8, batches, precision="int8", calibration=batches, protocol=QUICK)
    assert "convert_seconds" not in result.details, "a QDQ file is not quantized twice"
    with pytest.raises(DetnasError, match="already an int8 file"):
        measure_onnx(int8, batches, precision="fp16", protocol=QUICK)


def test_torch_cpu_eager_and_fp16_warning() -> None:
    result = measure_module(_tiny(), random_batches(2, (32, 32)), protocol=QUICK)
    assert result.batch == 2 and result.details["mode"] == "eager" and result.details["timer"] == "host wall clock"
    with pytest.warns(PrecisionWarning, match="no fast FP16"):
        measure_module(_tiny(), random_batches(1, (32, 32)), precision="fp16", protocol=QUICK)


def test_thread_cpu_clock_only_for_one_thread() -> None:
    with pytest.raises(DetnasError, match="thread-cpu"):
        TimingProtocol(threads=2, clock="thread-cpu")
    result = measure_module(_tiny(), random_batches(1, (32, 32)), protocol=TimingProtocol(warmup=1, runs=3,
                                                                                    clock="thread-cpu"))
    assert result.details["timer"] == "host thread-cpu clock"


def test_fast_fp16_table() -> None:
    assert not capability_has_fast_fp16((6, 1))  # GTX 1080 Ti: FP16 at 1/64 rate
    assert capability_has_fast_fp16((6, 0)) and capability_has_fast_fp16((7, 0)) and capability_has_fast_fp16((9, 0))
    assert not capability_has_fast_fp16((5, 2))


# --- TensorRT detection: every missing piece gets its own message --------------------------------------------


def test_tensorrt_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(DetnasError, match="'tensorrt' is not installed"):
        require_tensorrt()


def test_tensorrt_broken_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenLibs(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib protocol
            if name == "tensorrt":
                raise OSError("libnvinfer.so.10: cannot open shared object file")
            return None

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenLibs(), *sys.meta_path])
    with pytest.raises(DetnasError, match="shared libraries do not load.*libnvinfer"):
        require_tensorrt()


def test_tensorrt_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DetnasError, match="TensorRT 10.3.0 is installed but no CUDA GPU is visible"):
        require_tensorrt()


def test_tensorrt_builder_failure() -> None:
    def failing(logger: object) -> None:
        raise TypeError("pybind11::init(): factory function returned nullptr")

    for builder in (lambda logger: None, failing):
        fake = types.SimpleNamespace(__version__="8.6.1", Builder=builder)
        with pytest.raises(DetnasError, match="trt.Builder could not be created"):
            make_builder(fake, object())


def test_tensorrt_message_on_this_machine() -> None:
    """Here (no TensorRT / no GPU) the real check must name what is missing; where both exist it passes."""
    try:
        trt = require_tensorrt()
    except DetnasError as exc:
        assert "TensorRT backend unavailable" in str(exc)
        assert "not installed" in str(exc) or "no CUDA GPU" in str(exc) or "shared libraries" in str(exc)
    else:
        assert trt.__version__


@pytest.mark.tensorrt
def test_tensorrt_engine_fp32_fp16(tiny_onnx: Path, tmp_path: Path) -> None:
    from detnas.bench.oracle import BackendOptions, measure_engine

    gpu = TimingProtocol(warmup=2, runs=5, device="cuda")
    options = BackendOptions(timing_cache=tmp_path / "timing.cache")
    fp32 = measure_onnx(tiny_onnx, random_batches(1, (32, 32)), backend="trt", protocol=gpu, options=options)
    fp16 = measure_module(_tiny(), random_batches(1, (32, 32)), backend="trt", precision="fp16", protocol=gpu,
                          options=options)  # the module is exported in half precision: the file carries FP16
    for result in (fp32, fp16):
        assert result.details["timer"] == "cuda events" and result.stats.median_ms > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0
    with pytest.raises(DetnasError, match="the file is fp32 but fp16 was asked for"):
        measure_onnx(tiny_onnx, random_batches(1, (32, 32)), backend="trt", precision="fp16", protocol=gpu)
    from detnas.bench.backends.trt_backend import build_engine

    engine = build_engine(tiny_onnx, tmp_path / "tiny.engine", input_shape=(1, 3, 32, 32))
    timed = measure_engine(engine, random_batches(1, (32, 32)), precision="fp32", protocol=gpu)  # no sidecar: given
    assert timed.stats.n == 5 and timed.precision == "fp32"


@pytest.mark.gpu
def test_torch_cuda_eager_and_graphs() -> None:
    from detnas.bench.oracle import BackendOptions

    gpu = TimingProtocol(warmup=2, runs=5, device="cuda")
    eager = measure_module(_tiny(), random_batches(1, (32, 32)), protocol=gpu)
    graphs = measure_module(_tiny(), random_batches(1, (32, 32)), protocol=gpu,
                            options=BackendOptions(cuda_graphs=True))
    assert eager.details["timer"] == "cuda events" and graphs.details["cuda_graphs"] is True
    assert eager.fingerprint.cuda != "none"


@pytest.mark.gpu
def test_torch_cuda_times_whole_detectors() -> None:
    """A detector's dense network replays as a CUDA graph (no host copy inside the capture), and network+nms runs
    on the GPU with every index on the device: both failed on an H100 before they were fixed."""
    from detnas.arch import resolve_arch
    from detnas.bench.models import timed_module
    from detnas.bench.oracle import BackendOptions

    arch, gpu, batches = resolve_arch("COCO-FPN-300M"), TimingProtocol(warmup=1, runs=3, device="cuda"), random_batches(1, (128, 128))
    network = measure_module(timed_module(arch, Scope.NETWORK), batches, scope=Scope.NETWORK, protocol=gpu,
                             options=BackendOptions(cuda_graphs=True))
    with_nms = measure_module(timed_module(arch, Scope.NETWORK_NMS), batches, scope=Scope.NETWORK_NMS, protocol=gpu)
    assert network.details["cuda_graphs"] is True and network.stats.n == with_nms.stats.n == 3


@pytest.mark.gpu
def test_ort_cuda_provider_really_used(tiny_onnx: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu)")
    session = open_session(tiny_onnx, "cuda", 1)
    assert session.get_providers()[0] == "CUDAExecutionProvider"


def test_gpu_state_without_nvml_is_recorded_as_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from detnas.bench.fingerprint import UNAVAILABLE, gpu_state, nvml_driver_version

    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert gpu_state()["nvml"] == UNAVAILABLE and "nvidia-ml-py" in gpu_state()["reason"]
    assert nvml_driver_version() == UNAVAILABLE


def test_arch_beyond_backbone_is_timed_as_its_trained_detector(tmp_path: Path) -> None:
    """With a trained detector the oracle times exactly that network (built once, cached by its weights' id) on the
    given real-image batches; other weights are another measurement."""
    from detnas.arch import sample_arch
    from detnas.bench.cache import LatencyCache
    from detnas.bench.oracle import TrainedDetector, measure_arch
    from detnas.detection import build_detector
    from detnas.supernet import ChildNet

    from helpers.search import TINY

    built: list[str] = []

    def build(arch):  # noqa: ANN001, ANN202 - the TrainedDetector callback
        built.append(arch.hash)
        return build_detector("fpn", ChildNet(arch), 3, 64, 64, rpn_post_nms_top_n_test=8)

    arch, cache = sample_arch(TINY, 0), LatencyCache(tmp_path / "latency.sqlite")
    images = [torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)]
    common = dict(size=(64, 64), backend="torch", scope=Scope.NETWORK_NMS, protocol=QUICK, images=images, cache=cache)
    first = measure_arch(arch, trained=TrainedDetector(build, "weights-a"), **common)
    again = measure_arch(arch, trained=TrainedDetector(build, "weights-a"), **common)
    other = measure_arch(arch, trained=TrainedDetector(build, "weights-b"), **common)
    assert built == [arch.hash, arch.hash], "a cached measurement rebuilt the detector, or new weights did not"
    assert first.source == f"arch:{arch.hash}:fpn:weights-a" and other.source.endswith(":weights-b")
    assert again.stats == first.stats and "fpn detector weights-a" in first.details["inputs"]
    assert first.details["inputs"].startswith("images") and first.scope == "network+nms"
    with pytest.raises(DetnasError, match="backbone alone"):
        from detnas.bench.models import scoped_detector

        scoped_detector(build(arch), Scope.BACKBONE)


def test_timings_record_whether_host_device_copies_are_inside() -> None:
    """ORT on a GPU provider binds its inputs on the device by default (copies untimed, as TensorRT and torch time);
    --no-io-binding times the copies; the CPU has none; the cache key tells them apart."""
    from detnas.bench.backends import latency_backend

    ort = latency_backend("ort")
    assert BackendOptions().binds_io("cuda:1") and not BackendOptions(io_binding=False).binds_io("cuda")
    assert not BackendOptions(io_binding=True).binds_io("cpu")
    assert [ort.variant(BackendOptions(io_binding=b), "cuda") for b in (None, True, False)] == \
        ["ort:cuda:iobinding", "ort:cuda:iobinding", "ort:cuda"]
    assert ort.variant(BackendOptions(), "cpu") == "ort:cpu"


def test_ort_io_binding_runs_and_is_recorded(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound runner (here on the CPU device, the same ORT calls as on CUDA) yields the plain run's outputs; the
    transfers field follows provider and binding and travels into the result JSON and CSV row."""
    import numpy as np

    from detnas.bench.backends.ort_backend import _bound_runner, prepare_ort
    from detnas.bench.result import LatencyResult

    batches = [np.random.rand(1, 3, 32, 32).astype(np.float32) for _ in range(2)]
    session = open_session(tiny_onnx, "cpu", 1)
    name = session.get_inputs()[0].name
    call, binding = _bound_runner(session, batches, name, "cpu", 0)
    for i in (1, 0):
        call(i)
        np.testing.assert_allclose(binding.copy_outputs_to_cpu()[0], session.run(None, {name: batches[i]})[0], rtol=1e-6)
    prepared = prepare_ort(tiny_onnx, batches, provider="cpu", threads=1, precision="fp32", io_binding=True)
    prepared.call(0)
    assert prepared.transfers == "none" and prepared.details["io_binding"] is True
    result = measure_onnx(tiny_onnx, [torch.rand(1, 3, 32, 32)], protocol=QUICK)
    assert result.transfers == "none" and result.to_dict()["transfers"] == "none" and result.csv_row()["transfers"] == "none"
    old = {k: v for k, v in result.to_dict().items() if k != "transfers"}
    assert LatencyResult.from_dict(old).transfers == "unknown", "results written before the field are not guessed"
    monkeypatch.setattr("detnas.bench.backends.ort_backend.open_session", lambda *a, **k: session)
    assert prepare_ort(tiny_onnx, batches, provider="cuda", threads=1, precision="fp32").transfers == "timed"


def test_bench_compare_flags_mixed_copy_protocols(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    from dataclasses import replace

    from detnas.cli.main import main

    result = measure_onnx(tiny_onnx, [torch.rand(1, 3, 32, 32)], protocol=QUICK)
    replace(result, transfers="timed").save_json(tmp_path / "a.json")
    replace(result, transfers="untimed").save_json(tmp_path / "b.json")
    assert main(["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json",
                 str(tmp_path / "c.json")]) == 0
    assert "host<->device copies differ: timed vs untimed" in capsys.readouterr().err
    import json

    assert json.loads((tmp_path / "c.json").read_text())["differences"][0].startswith("host<->device copies differ")
    from detnas.workflows.artifact_table import ArtifactRow, ArtifactTable

    rows = [ArtifactRow(name, "p", runtime, "fp32", 1.0, 0.3, 0.5, 2.0, 2.2, 0.01, 500.0, False, copies)
            for name, runtime, copies in (("a", "ort", "timed"), ("b", "trt", "untimed"))]
    table = ArtifactTable("fpn", "h", "d", 4, (1, 3, 32, 32), "network+nms", {"runs": 3, "warmup": 1, "threads": 1,
                          "device": "cuda"}, result.fingerprint, tuple(rows))
    assert "NOT LIKE FOR LIKE: host<->device copies are timed / untimed" in table.caption()
    assert [cells[-1] for cells in table.cells()] == ["timed", "untimed"]
    assert "NOT LIKE FOR LIKE" not in ArtifactTable(*[getattr(table, f) for f in (
        "detector", "arch_hash", "data", "images", "input_shape", "scope", "protocol", "fingerprint")], rows=tuple(rows[:1])).caption()


def test_torch_fp16_with_post_processing_is_refused_with_the_reason() -> None:
    """module.half() would run NMS and RoiAlign in FP16, which the shipped FP16 file never does."""
    from detnas.arch import sample_arch
    from detnas.space import get_space

    arch = sample_arch(get_space("detnas-300m"), 0)
    with pytest.raises(DetnasError, match="would time module.half\\(\\), with box decoding, NMS and RoiAlign in FP16"):
        measure_module(_tiny(), random_batches(1, (32, 32)), backend="torch", precision="fp16", scope=Scope.NETWORK_NMS,
                       protocol=QUICK)
    from detnas.bench.oracle import measure_arch

    with pytest.raises(DetnasError, match="time --backend ort or trt, or --scope network"):
        measure_arch(arch, size=(64, 64), backend="torch", precision="fp16", scope=Scope.END_TO_END, protocol=QUICK)
