"""Latency results keep their raw samples (a list when few, compressed when many) and `bench compare` decides
from them with a bootstrap interval; files without samples still load and compare with a stated fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detnas.bench.fingerprint import collect_fingerprint
from detnas.bench.result import SAMPLES_INLINE_MAX, LatencyResult
from detnas.bench.stats import summarize
from detnas.cli.main import main
from detnas.errors import DetnasError


def _result(samples: np.ndarray, label: str = "synthetic") -> LatencyResult:
    values = tuple(float(v) for v in samples)
    return LatencyResult(stats=summarize(values), backend="ort", precision="fp32", batch=1, input_shape=(1, 3, 32, 32),
                         scope="backbone", warmup=1, threads=1, source="arch:synthetic", label=label,
                         fingerprint=collect_fingerprint("cpu", 1), samples_ms=values)


def test_few_samples_stay_a_readable_list(tmp_path: Path) -> None:
    result = _result(np.linspace(1.0, 2.0, SAMPLES_INLINE_MAX))
    result.save_json(tmp_path / "r.json")
    stored = json.loads((tmp_path / "r.json").read_text())["samples"]
    assert stored["ms"] == list(result.samples_ms) and stored["n"] == SAMPLES_INLINE_MAX
    assert LatencyResult.load_json(tmp_path / "r.json") == result


def test_many_samples_are_compressed_and_round_trip_as_float32(tmp_path: Path) -> None:
    samples = np.random.default_rng(0).lognormal(1.0, 0.05, 1000)
    result = _result(samples)
    result.save_json(tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    stored = json.loads(text)["samples"]
    assert stored["encoding"] == "zlib+base64:float32le" and stored["n"] == 1000
    assert len(text) < 8000  # 1000 runs in ~5.4 kB of base64, not ~20 kB of decimal floats
    loaded = LatencyResult.load_json(tmp_path / "r.json")
    assert loaded.samples_ms == pytest.approx(tuple(samples), rel=1e-6) and loaded.stats == result.stats


def test_bad_or_missing_samples(tmp_path: Path) -> None:
    data = _result(np.full(100, 2.0)).to_dict()
    bad = dict(data, samples={**data["samples"], "data": "not base64!"})
    with pytest.raises(DetnasError, match="not a detnas latency result.*does not decode"):
        LatencyResult.from_dict(bad)
    with pytest.raises(DetnasError, match="holds 100 values but says n=99"):
        LatencyResult.from_dict(dict(data, samples={**data["samples"], "n": 99}))
    old = {k: v for k, v in data.items() if k != "samples"}  # a file written before samples were kept
    assert LatencyResult.from_dict(old).samples_ms == ()


def test_cli_compare_decides_from_the_bootstrap_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    base, faster, same = rng.normal(10.0, 0.5, 300), rng.normal(9.0, 0.45, 300), rng.normal(10.0, 0.5, 300)
    for name, samples in (("base", base), ("faster", faster), ("same", same)):
        _result(samples, name).save_json(tmp_path / f"{name}.json")
    assert main(["bench", "compare", str(tmp_path / "base.json"), str(tmp_path / "faster.json")]) == 0
    out = capsys.readouterr().out
    assert "faster.json is FASTER" in out and "95 % CI [0.8" in out and "block bootstrap of 300 vs 300 runs" in out
    assert "CVs 5.1 % / 4.9 %" in out  # the two CVs of these draws
    assert main(["bench", "compare", str(tmp_path / "base.json"), str(tmp_path / "same.json")]) == 0
    assert "indistinguishable" in capsys.readouterr().out
    assert main(["bench", "compare", str(tmp_path / "base.json"), str(tmp_path / "same.json"),
                 "--confidence", "95"]) == 2
    assert "--confidence 95" in capsys.readouterr().err
