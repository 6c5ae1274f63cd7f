"""Inputs refused when parsed, before any work: sizes past the documented maximum, a GPU that is not there."""

from __future__ import annotations

import pytest
import torch

from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.sizes import MAX_SIDE, parse_hw


def _one_line(capsys, args: list[str]) -> str:
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_sizes_above_the_maximum_are_refused_when_parsed(tmp_path, capsys):
    assert parse_hw(str(MAX_SIDE)) == (MAX_SIDE, MAX_SIDE)
    with pytest.raises(DetnasError, match=f"sides above {MAX_SIDE} px are refused"):
        parse_hw("99968x99968")
    err = _one_line(capsys, ["export", "--arch", "COCO-FPN-300M", "--random-init", "--size", "99968x99968",
                             "--out", str(tmp_path / "m.onnx")])
    assert f"above {MAX_SIDE} px" in err and not list(tmp_path.iterdir()), err
    assert f"above {MAX_SIDE} px" in _one_line(capsys, ["arch", "show", "COCO-FPN-300M", "--size", "99968"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_eval_on_a_gpu_that_is_not_there_is_one_line(tmp_path, capsys):
    err = _one_line(capsys, ["eval", "--ann", str(tmp_path / "a.json"), "--images", str(tmp_path), "--random-init",
                             "--arch", "COCO-FPN-300M", "--device", "cuda"])
    assert "no CUDA GPU is visible; use --device cpu" in err, err


def test_latency_targets_say_what_is_wrong():
    """'1e9ms' was refused as 'not positive'; a bare number is refused for its missing unit, not as 'not positive'."""
    from detnas.search.latency import parse_latency_ms

    assert parse_latency_ms("1e9ms") == 1e9 and parse_latency_ms("0.5s") == 500.0
    for text in ("fast", "12"):
        with pytest.raises(DetnasError, match="is not a duration with its unit"):
            parse_latency_ms(text)
    with pytest.raises(DetnasError, match="must be above 0"):
        parse_latency_ms("0ms")


def test_export_sizes_are_bounded_in_the_library_too():
    from detnas.export.onnx_export import check_size

    with pytest.raises(DetnasError, match=f"above {MAX_SIDE} px"):
        check_size((320, 99968))


def _tiny_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_export_check_refuses_a_file_with_no_graph(tmp_path, capsys):
    """A 0-byte file parses as an empty ONNX model: it 'passed' with 0 nodes checked."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "holds no ONNX graph (an empty file)" in _one_line(capsys, ["export", "check", str(empty)])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not protobuf")
    assert "garbage.onnx" in _one_line(capsys, ["export", "check", str(garbage)])


def test_export_check_says_which_rules_applied(tmp_path, capsys):
    """Decided: a version that is not one of the parsers the rules were written from is linted, and its result says
    what judged it (9.0: the rules by the versions they name; 99: the newest parser's rules)."""
    model = _tiny_onnx(tmp_path / "relu.onnx")
    capsys.readouterr()
    assert main(["export", "check", str(model), "--trt", "9.0", "--trt", "99", "--trt", "10.3"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps at the terminal's width
    assert "TensorRT 9.0: passed: 1 nodes checked (0 in subgraphs) (not one of the parsers studied" in out, out
    assert "TensorRT 99: passed: 1 nodes checked (0 in subgraphs) (newer than TensorRT 11" in out, out
    assert "TensorRT 10.3: passed: 1 nodes checked (0 in subgraphs)" in out and out.count("(not one") == 1, out


#: a number option of every command, set out of range; each must be refused when the options are read, in one line
#: naming it, before any input is opened (the paths here do not exist). Found by the bad-input harness
#: (bench/suite/bad_input.py): each was run silently (a check turned off, a result of nothing) or died with a traceback.
_EVAL = ["eval", "--ann", "a.json", "--images", "img", "--weights", "w"]
_EXPORT = ["export", "--weights", "w", "--out", "m.onnx", "--no-parity"]
_SEARCH = ["search", "run", "--supernet", "s", "--ann", "a.json", "--images", "img", "--bn-ann", "b.json", "--out", "o"]
_PROFILE = ["bench", "profile", "--out", "p.json"]


@pytest.mark.parametrize("argv, option", [
    ([*_EVAL, "--min-size", "0"], "--min-size"), ([*_EVAL, "--min-size", "99968"], "--min-size"),
    ([*_EVAL, "--batch-size", "0"], "--batch-size"), ([*_EVAL, "--proposals", "0"], "--proposals"),
    ([*_EXPORT, "--box-tol", "nan"], "--box-tol"), ([*_EXPORT, "--box-tol", "-1"], "--box-tol"),
    ([*_EXPORT, "--score-tol", "nan"], "--score-tol"), ([*_EXPORT, "--nms-thresh", "2"], "--nms-thresh"),
    ([*_EXPORT, "--proposals", "0"], "--proposals"), ([*_EXPORT, "--min-parity-detections", "-1"], "--min-parity-detections"),
    (["predict", "--model", "m.onnx", "a.png", "--out", "o", "--draw-thresh", "nan"], "--draw-thresh"),
    (["predict", "--model", "m.onnx", "a.png", "--out", "o", "--draw-thresh", "inf"], "--draw-thresh"),
    ([*_SEARCH, "--soft-weight", "nan"], "--soft-weight"), ([*_SEARCH, "--bn-count", "0"], "--bn-count"),
    ([*_SEARCH, "--top-k", "0"], "--top-k"), ([*_SEARCH, "--max-images", "0"], "--max-images"),
    ([*_SEARCH, "--latency-batch", "0"], "--latency-batch"), (["search", "report", "j.jsonl", "--top-k", "0"], "--top-k"),
    (["bench", "latency", "--arch", "COCO-FPN-300M", "--batch", "0"], "--batch"),
    (["bench", "latency", "--arch", "COCO-FPN-300M", "--workspace-mb", "-1"], "--workspace-mb"),
    (["bench", "compare", "a.json", "b.json", "--k", "nan"], "--k"),
    ([*_PROFILE, "--rounds", "0"], "--rounds"), ([*_PROFILE, "--n-train", "0"], "--n-train"),
    ([*_PROFILE, "--near-ms", "nan"], "--near-ms"),
    (["bench", "table", "--model", "m.onnx", "--ann", "a.json", "--images", "img", "--proposals", "0"], "--proposals"),
    (["arch", "show", "COCO-FPN-300M", "--num-classes", "0"], "--num-classes"),
    (["data", "demo", "--out", "o", "--train-count", "0"], "--train-count"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_numbers_out_of_range_are_refused_when_parsed(tmp_path, capsys, monkeypatch, argv, option):
    monkeypatch.chdir(tmp_path)
    err = _one_line(capsys, argv)
    assert f"'{option}'" in err, err
    assert not list(tmp_path.iterdir()), "refused before anything is written"


def test_train_config_refuses_nan_rates_and_sizes_no_machine_holds():
    """lr=nan passed `lr <= 0` (NaN compares false) and training stopped at iteration 1 on a NaN loss, after writing
    a checkpoint; image_size=99968 died allocating 30 GB after writing config.json."""
    from detnas.train import resolve_config

    with pytest.raises(DetnasError, match="need lr > 0"):
        resolve_config("cpu-cls", overrides={"lr": float("nan")})
    with pytest.raises(DetnasError, match=f"'image_size' 99968: sides above {MAX_SIDE} px are refused"):
        resolve_config("cpu-cls", overrides={"image_size": 99968})
    with pytest.raises(DetnasError, match="'max_size' 99968"):
        resolve_config("cpu-det", overrides={"max_size": 99968})
