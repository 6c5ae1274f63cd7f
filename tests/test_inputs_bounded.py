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
    """'1e9ms' was refused as 'not positive'; a bare number is milliseconds (documented), not a silent guess."""
    from detnas.search.latency import parse_latency_ms

    assert parse_latency_ms("1e9ms") == 1e9 and parse_latency_ms("12") == 12.0 and parse_latency_ms("0.5s") == 500.0
    with pytest.raises(DetnasError, match="is not a duration; .*a bare number is milliseconds"):
        parse_latency_ms("fast")
    with pytest.raises(DetnasError, match="must be above 0"):
        parse_latency_ms("0ms")


def test_export_sizes_are_bounded_in_the_library_too():
    from detnas.export.onnx_export import check_size

    with pytest.raises(DetnasError, match=f"above {MAX_SIDE} px"):
        check_size((320, 99968))
