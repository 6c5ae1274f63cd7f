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
