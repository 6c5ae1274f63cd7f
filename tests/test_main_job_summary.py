"""The main job's summary record: a summary.json the main job wrote before the record existed (tests/data/main_job:
the full plan's run from a fresh clone, with its report.md) reads into typed fields, is written back unchanged, and
draws the same report.md; the records of a run without a released arch, parity or front still round-trip."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from detnas.arch import Arch
from detnas.detection.cost import path_size
from detnas.io import atomic_write_json
from detnas.search.records import Candidate
from detnas.workflows.main_job import MainJobPlan
from detnas.workflows.main_job_summary import FrontSpan, MainJobSummary, ReleasedRow, TargetRow

RUN = Path(__file__).parent / "data" / "main_job"


def read(data: dict) -> MainJobSummary:
    return MainJobSummary.from_dict(data, MainJobPlan.from_dict(data["plan"]))


@pytest.fixture
def written() -> dict:
    return json.loads((RUN / "summary.json").read_text())


def test_a_written_summary_reads_into_records_and_back_byte_for_byte(written, tmp_path) -> None:
    summary = read(written)
    assert isinstance(summary.arch, Arch) and summary.arch.hash == written["arch"]["hash"]
    assert isinstance(summary.search_best, Candidate) and summary.search_best.arch.hash == summary.arch.hash
    assert isinstance(summary.plan, MainJobPlan) and summary.plan.det_size == 128 and summary.plan.layout.sizes == (128, 128)
    assert set(summary.targets) == {"tight", "loose"} and all(isinstance(r, TargetRow) for r in summary.targets.values())
    assert summary.targets["tight"].arch.hash == summary.arch.hash and summary.targets["tight"].meets_target
    assert summary.front_span.members == len(summary.front_span.ap) == summary.targets["tight"].front
    assert summary.onnx_val.ap50 == written["onnx_val"]["AP50"] and summary.onnx_val.images == 16
    assert summary.shipped.within_tolerance and summary.benchmark.size == path_size(summary.arch, (128, 128)) == (96, 96)
    assert isinstance(summary.versus.released, ReleasedRow) and summary.latency_spread.beyond_noise
    atomic_write_json(tmp_path / "summary.json", summary.to_dict())
    assert (tmp_path / "summary.json").read_bytes() == (RUN / "summary.json").read_bytes()


def test_the_record_draws_the_report_the_run_wrote(written) -> None:
    """report.md of the same run, drawn by the main job before the record: identical, line for line (62 lines).
    The JSON's keys are sorted, so the targets and the steps are put back in the order the run made them."""
    report = (RUN / "report.md").read_text()
    out = Path("/results/demo")
    files = {m[1]: out / m[2] for m in re.finditer(r"^- (\w+): `(.+)`$", report.split("Files:")[1], re.M)}
    steps = re.findall(r"^\| (.+) \| [\d.]+ \|$", report, re.M)
    summary = read(written)
    summary = replace(summary, targets={n: summary.targets[n] for n in ("tight", "loose")},
                      seconds={name: summary.seconds[name] for name in steps})
    assert len(files) == 12 and len(steps) == 8 and len(report.splitlines()) == 62
    assert summary.report(files, out) == report


def test_the_demo_ends_with_the_shipped_files_accuracy_parity_and_each_target(written) -> None:
    lines = read(written).highlights()
    assert len(lines) == 4, lines
    assert f"AP50 {written['onnx_val']['AP50']:.3f}" in lines[0] and f"journal {written['shipped']['journal_AP']:.4f}" in lines[0]
    assert lines[1] == f"parity: {written['export']['parity']['summary']}"
    for line, (name, row) in zip(lines[2:], written["targets"].items()):
        assert line.startswith(f"target {name}: {row['verdict']}; front of {row['front']} candidates spanning "
                               f"{row['front_ratio']:.2f}x network+nms latency"), line


def test_a_run_without_released_arch_parity_or_front_round_trips(written) -> None:
    """The optional parts as the main job writes them when absent: null, or an empty front without its AP list."""
    full = read(written)
    bare = replace(full, versus=replace(full.versus, released=None), export=replace(full.export, parity=None),
                   front_span=FrontSpan(0, None, None, None, (), None, None),
                   targets={"tight": replace(full.targets["tight"], arch=None, ap=None, front=0, front_ratio=None)})
    data = json.loads(json.dumps(bare.to_dict()))
    assert data["versus"]["released"] is None and data["export"]["parity"] is None and "AP" not in data["front_span"]
    assert read(data) == bare
    report = bare.report({}, Path("."))
    assert "ONNX parity: not checked" in report and "Released DetNAS" not in report and "span of **n/a**" in report
    assert "winner `-`, AP n/a" in report
