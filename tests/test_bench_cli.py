"""`detnas bench` end to end on a tiny arch, and every bad input as one line with exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from detnas.bench.cache import LatencyCache
from detnas.bench.models import module_to_onnx
from detnas.cli.main import main

from helpers.spaces import tiny_arch_json

TINY_ARCH = tiny_arch_json()
QUICK = ["--size", "32", "--runs", "3", "--warmup", "1"]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["bench", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_latency_json_csv_cache_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = str(tmp_path / "cache.sqlite")
    a, csv_path = tmp_path / "a.json", tmp_path / "a.csv"
    code, out, _ = _run(capsys, "latency", "--arch", TINY_ARCH, *QUICK, "--cache-path", cache, "--json", str(a),
                        "--csv", str(csv_path))
    assert code == 0 and "median" in out and "backbone" in out
    result = json.loads(a.read_text())
    assert result["schema"] == "detnas.bench.latency/1"
    assert result["scope"] == "backbone" and result["backend"] == "ort" and result["stats"]["n"] == 3
    assert result["fingerprint"]["threads"] == 1 and result["input_shape"] == [1, 3, 32, 32]
    header, row = csv_path.read_text().splitlines()
    assert header.startswith("label,source,scope") and "backbone" in row
    # the second call is served from the cache: the same numbers, one cache entry
    b = tmp_path / "b.json"
    assert _run(capsys, "latency", "--arch", TINY_ARCH, *QUICK, "--cache-path", cache, "--json", str(b))[0] == 0
    assert json.loads(b.read_text())["stats"] == result["stats"]
    assert len(LatencyCache(cache).entries()) == 1
    code, out, _ = _run(capsys, "cache", "list", "--path", cache)
    assert code == 0 and "0|3" in out
    code, out, _ = _run(capsys, "compare", str(a), str(b), "--json", str(tmp_path / "compare.json"))
    assert code == 0 and "indistinguishable: median ratio 1.000" in out
    compared = json.loads((tmp_path / "compare.json").read_text())
    assert compared["schema"] == "detnas.bench.compare/1" and compared["comparison"]["verdict"] == "indistinguishable"
    assert compared["statistics"]["median_ms"]["ratio"] == 1.0 and compared["runs_kept"] == {"baseline": 3, "other": 3}
    # without raw samples (an older file) the fixed CVs decide: the verdict must not depend on load
    steady = dict({k: v for k, v in result.items() if k != "samples"}, stats={**result["stats"], "cv": 0.01})
    slower = dict(steady, stats={k: v * 1.5 if k.endswith("_ms") else v for k, v in steady["stats"].items()})
    (tmp_path / "steady.json").write_text(json.dumps(steady))
    (tmp_path / "slow.json").write_text(json.dumps(slower))
    code, out, err = _run(capsys, "compare", str(tmp_path / "steady.json"), str(tmp_path / "slow.json"))
    assert code == 0 and "slow.json is SLOWER" in out and "1.500" in out and "no raw samples" in err
    code, out, _ = _run(capsys, "cache", "clear", "--path", cache)
    assert code == 0 and "removed 1" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "onnx"], "unknown backend 'onnx'; choose one of torch, ort, trt"),
    (["--precision", "fp8"], "'fp8' is not one of 'fp32', 'fp16', 'int8'"),
    (["--precision", "int8"], "INT8 needs calibration data"),
    (["--scope", "head"], "Invalid value for '--scope'"),
    (["--backend", "trt"], "the trt backend runs on a GPU"),
    (["--size", "abc"], "Invalid value for '--size': 'abc' must be N or HxW"),
])
def test_latency_bad_input(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "latency", "--arch", TINY_ARCH, *QUICK, "--no-cache", *args)
    assert code == 2 and message in _error_line(err)


def test_fp16_on_cpu_is_warned_not_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "latency", "--arch", TINY_ARCH, *QUICK, "--no-cache", "--backend", "torch",
                        "--precision", "fp16")
    assert code == 0 and "warning:" in err and "no fast FP16" in err


def test_onnx_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00garbage")
    code, _, err = _run(capsys, "latency", "--model", str(bad), "--scope", "network", *QUICK, "--no-cache")
    assert code == 2 and "broken.onnx: not a readable ONNX file" in _error_line(err)
    code, _, err = _run(capsys, "latency", "--model", str(tmp_path / "missing.onnx"), "--scope", "network", "--no-cache")
    assert code == 2 and "not found" in _error_line(err)
    good = module_to_onnx(nn.Conv2d(3, 4, 3).eval(), torch.rand(1, 3, 32, 32), tmp_path / "conv.onnx")
    code, _, err = _run(capsys, "latency", "--model", str(good), *QUICK, "--no-cache")
    assert code == 2 and "--scope is required" in _error_line(err)
    assert _run(capsys, "latency", "--model", str(good), "--scope", "network", *QUICK, "--no-cache")[0] == 0


def test_one_source_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "latency", "--arch", "COCO-FPN-300M", "--model", "x.onnx")
    assert code == 2 and "exactly one of --arch or --model" in _error_line(err)


def test_engine_without_tensorrt_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    code, _, err = _run(capsys, "latency", "--model", str(engine), "--backend", "trt", "--device", "cuda",
                        "--scope", "network+nms", "--precision", "fp32", "--no-cache")
    assert code == 2 and "TensorRT backend unavailable: the Python package 'tensorrt' is not installed" in err


def test_compare_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.json").write_text('{"label": 1}')
    code, _, err = _run(capsys, "compare", str(tmp_path / "x.json"), str(tmp_path / "x.json"))
    assert code == 2 and "not a detnas latency result" in _error_line(err)


def test_detector_scopes_on_a_tiny_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """network (backbone + FPN + dense head) and network+nms (the export graph) time on the CPU backends."""
    a = tmp_path / "net.json"
    code, _, err = _run(capsys, "latency", "--arch", TINY_ARCH, "--size", "64", "--runs", "2", "--warmup", "0",
                        "--no-cache", "--backend", "torch", "--scope", "network", "--detector", "retinanet",
                        "--json", str(a))
    assert code == 0, err
    assert json.loads(a.read_text())["details"]["inputs"] == "random; random-init retinanet detector"
    code, _, err = _run(capsys, "latency", "--arch", TINY_ARCH, "--size", "64", "--runs", "2", "--warmup", "0",
                        "--no-cache", "--backend", "torch", "--scope", "network+nms", "--detector", "retinanet")
    assert code == 0, err
    code, _, err = _run(capsys, "latency", "--arch", TINY_ARCH, "--scope", "end-to-end", "--no-cache")
    assert code == 2 and "end-to-end" in _error_line(err)


def test_cuda_provider_fallback_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """capfd also sees ONNX Runtime's own C++ log lines, which the CLI must keep out of the way."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the CUDA provider does not fall back here")
    good = module_to_onnx(nn.Conv2d(3, 4, 3).eval(), torch.rand(1, 3, 32, 32), tmp_path / "conv.onnx")
    code = main(["bench", "latency", "--model", str(good), "--scope", "network", "--ort-provider", "cuda", *QUICK,
                 "--no-cache"])
    err = capfd.readouterr().err
    assert code == 2 and "silently fell back" in _error_line(err)


def test_an_int8_file_is_labelled_int8_and_never_relabelled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The row of a reduced-precision file carries the file's own precision (its metadata and graph), not the
    --precision default; a contradicting --precision is one line naming the option, the file and the fix."""
    from detnas.bench.inputs import random_batches
    from detnas.export.precision import quantize_int8

    fp32 = module_to_onnx(nn.Conv2d(3, 4, 3).eval(), torch.rand(1, 3, 32, 32), tmp_path / "conv.onnx")
    int8 = quantize_int8(fp32, tmp_path / "conv.int8.onnx", [b.numpy() for b in random_batches(1, (32, 32), count=2)])
    row = tmp_path / "int8.json"
    code, out, _ = _run(capsys, "latency", "--model", str(int8), "--scope", "network", *QUICK, "--no-cache",
                        "--json", str(row))
    assert code == 0 and json.loads(row.read_text())["precision"] == "int8"
    code, _, err = _run(capsys, "latency", "--model", str(int8), "--scope", "network", "--precision", "fp32", *QUICK,
                        "--no-cache")
    line = _error_line(err)
    assert code == 2 and "--precision fp32: conv.int8.onnx is already an int8 file" in line and \
        "leave --precision out" in line
    assert _run(capsys, "latency", "--model", str(int8), "--scope", "network", "--precision", "int8", *QUICK,
                "--no-cache")[0] == 0


def test_an_engine_is_labelled_by_its_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An engine's precision was fixed when it was built: the sidecar `detnas export --format trt` writes says which,
    and a contradicting --precision is refused before TensorRT is even asked for."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    engine.with_suffix(".json").write_text(json.dumps({"precision": "int8", "tf32": False}))
    code, _, err = _run(capsys, "latency", "--model", str(engine), "--backend", "trt", "--device", "cuda",
                        "--scope", "network+nms", "--precision", "fp32", "--no-cache")
    line = _error_line(err)
    assert code == 2 and "--precision fp32: m.engine is an int8 engine (its sidecar m.json records it)" in line


@pytest.mark.parametrize("sidecar, state", [(None, "is missing"), ({"tf32": False}, "records no precision")])
def test_an_engine_without_a_recorded_precision_is_not_labelled_fp32(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sidecar: dict[str, bool] | None, state: str) -> None:
    """Nothing in a serialized engine says its precision: without the sidecar's record and without --precision, a
    row labelled fp32 (the old default) could be an INT8 engine's. Refused before TensorRT is asked for."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    if sidecar is not None:
        engine.with_suffix(".json").write_text(json.dumps(sidecar))
    code, out, err = _run(capsys, "latency", "--model", str(engine), "--backend", "trt", "--device", "cuda",
                          "--scope", "network+nms", "--no-cache")
    line = _error_line(err)
    assert code == 2 and out == "" and f"m.engine: its sidecar m.json {state}, so nothing says which precision" in line
    assert "pass --precision fp32 / fp16 / int8 (the one it was built in)" in line


def test_compare_refuses_results_of_different_scope_or_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A backbone row against a whole-detector row, or 224 px against 320 px, times different work: no FASTER /
    SLOWER verdict is printed, one line names both files, what differs and the fix. Precision alone may differ."""
    a = tmp_path / "a.json"
    assert _run(capsys, "latency", "--arch", TINY_ARCH, *QUICK, "--no-cache", "--json", str(a))[0] == 0
    result = json.loads(a.read_text())
    cases = {"scope": (dict(result, scope="network+nms"), "scope backbone vs network+nms"),
             "size": (dict(result, input_shape=[1, 3, 64, 64]), "input 1x3x32x32 vs 1x3x64x64")}
    for name, (changed, expected) in cases.items():
        other = tmp_path / f"{name}.json"
        other.write_text(json.dumps(changed))
        code, out, err = _run(capsys, "compare", str(a), str(other))
        line = _error_line(err)
        assert code == 2 and expected in line and "--scope and --size" in line and str(other) in line, line
        assert "FASTER" not in out and "SLOWER" not in out and "indistinguishable" not in out
    int8 = tmp_path / "int8.json"
    int8.write_text(json.dumps(dict(result, precision="int8")))
    code, out, err = _run(capsys, "compare", str(a), str(int8))
    assert code == 0 and "precision differs: fp32 vs int8" in err


@pytest.mark.parametrize("name, content, said", [
    ("m.onnx", b"", "m.onnx: not an ONNX model (it holds no graph: 0 bytes)"),
    ("m.txt", b"x", "--model {path}: not an .onnx file, so a TensorRT engine, which times on --backend trt"),
])
def test_a_model_that_is_no_onnx_file_is_named_before_scope_is_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      name: str, content: bytes, said: str) -> None:
    """A 0-byte .onnx parsed as an empty model and a .txt was taken for an engine: both were answered with '--scope is
    required for this file', which says nothing of what is wrong with it (found by bench/suite/bad_input.py)."""
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = _run(capsys, "latency", "--model", str(path), "--no-cache")
    line = _error_line(err)
    assert code == 2 and said.format(path=path) in line and "--scope" not in line, line
