"""detnas/console.py's `command_logging`: the library logs and prints nothing; a command prints the `detnas` loggers'
lines; the root logger is never changed by library code (ONNX Runtime's quantizer hint included)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from detnas.console import command_logging
from detnas.search.evolution import EvolutionSettings, Search
from detnas.search.interfaces import BackboneCost
from detnas.search.objectives import Constraints

from helpers.search import TINY, FakeAccuracy, FakeLatency


def _search(path: Path) -> Search:
    settings = EvolutionSettings(population=2, generations=1, parents=2, mutations=1, crossovers=1, randoms=0)
    return Search(TINY, settings, Constraints(latency_ms=1e3), FakeAccuracy(), FakeLatency(), BackboneCost(64), path)


def test_the_library_logs_its_progress_and_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="detnas")
    _search(tmp_path / "journal.jsonl").run()
    lines = [r.getMessage() for r in caplog.records if r.name == "detnas.search.evolution"]
    assert lines and lines[0].startswith("generation 0: 2 planned"), lines
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_command_prints_the_library_lines_and_restores_every_logger(capsys: pytest.CaptureFixture[str]) -> None:
    library, root = logging.getLogger("detnas"), logging.getLogger()
    before = (library.level, library.propagate, list(library.handlers), root.level, list(root.handlers),
              list(root.filters))
    with command_logging():
        logging.getLogger("detnas.search.runner").info("fastest probe [1/2]: 3.0ms")
        logging.getLogger("detnas.search.runner").warning("the profile was measured on another device")
        logging.getLogger("detnas.search.runner").debug("not shown")
    out = capsys.readouterr().out.splitlines()
    assert out == ["fastest probe [1/2]: 3.0ms", "warning: the profile was measured on another device"]
    assert before == (library.level, library.propagate, list(library.handlers), root.level, list(root.handlers),
                      list(root.filters))


def test_int8_quantization_leaves_the_root_logger_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's quantizer logs a hint on the root logger; the library used to silence it by changing the
    root logger's level, which is the application's to set."""
    from detnas.bench.models import module_to_onnx
    from detnas.export.precision import quantize_int8

    model = module_to_onnx(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval(), torch.rand(1, 3, 16, 16),
                           tmp_path / "tiny.onnx")
    levels: list[int] = []
    real = logging.Logger.setLevel
    monkeypatch.setattr(logging.Logger, "setLevel",
                        lambda self, level: (levels.append(level) if self is logging.getLogger() else None)
                        or real(self, level))
    quantize_int8(model, tmp_path / "tiny.int8.onnx", [torch.rand(1, 3, 16, 16).numpy() for _ in range(2)])
    assert (tmp_path / "tiny.int8.onnx").is_file() and levels == []
