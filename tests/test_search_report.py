"""Report files and the `detnas search report` command, drawn from a journal of a search on fake evaluators."""

from __future__ import annotations

import json

import pytest

from detnas.arch import Arch
from detnas.cli.main import main
from detnas.search.evolution import EvolutionSettings, Search
from detnas.search.interfaces import BackboneCost
from detnas.search.objectives import Constraints
from detnas.search.report import SearchRun, latency_axis_label, write_report

from helpers.search import TINY, FakeAccuracy, FakeLatency

SMALL = EvolutionSettings(population=8, generations=3, parents=3, mutations=3, crossovers=3, randoms=2, seed=1)


@pytest.fixture
def journal(tmp_path):
    search = Search(TINY, SMALL, Constraints(latency_ms=6.0), FakeAccuracy(), FakeLatency(source="predicted"),
                    BackboneCost(64), tmp_path / "run" / "journal.jsonl")
    search.finalize(search.run(), FakeLatency(offset_ms=5.0))  # slower on the device than predicted
    return tmp_path / "run" / "journal.jsonl"


def test_report_files_and_verdict(journal, tmp_path) -> None:
    run = write_report(journal, tmp_path / "report", top_k=5)
    out = tmp_path / "report"
    best = Arch.from_json((out / "best_arch.json").read_text())
    assert best.hash == run.best().hash and run.best().latency.median_ms <= 6.0
    top = json.loads((out / "topk.json").read_text())
    assert len(top) == 5 and [r["fitness"] for r in top] == sorted((r["fitness"] for r in top), reverse=True)
    for png in ("pareto.png", "convergence.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["candidates"] == 24 and summary["final"]["meets_target"] is False
    assert "does NOT meet the 6ms target" in run.verdict()
    best_so_far = [row["best_so_far"] for row in summary["convergence"]]
    assert best_so_far == sorted(best_so_far) and len(best_so_far) == 3


def test_report_command(journal, tmp_path, capsys) -> None:
    doc = tmp_path / "report.json"
    assert main(["search", "report", str(journal), "--out", str(tmp_path / "r"), "--top-k", "3", "--json", str(doc)]) == 0
    printed = capsys.readouterr().out
    assert "does NOT meet" in printed and SearchRun.load(journal).best().hash in printed
    report = json.loads(doc.read_text())
    assert report["schema"] == "detnas.search.report/1" and "does NOT meet" in report["verdict"]
    assert Arch.from_dict(report["top_k"][0]["arch"]).hash == SearchRun.load(journal).best().hash
    assert len(report["top_k"]) == 3
    assert (tmp_path / "r" / "pareto.png").exists()


def test_report_of_a_non_journal_is_one_line(tmp_path, capsys) -> None:
    bogus = tmp_path / "x.jsonl"
    bogus.write_text('{"type": "candidate"}\n')
    assert main(["search", "report", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert "not a detnas search journal" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_plot_axes_are_words_not_hashes(journal) -> None:
    run = SearchRun.load(journal)
    run.config["timing"] = {"size": [128, 128], "backend": "ort", "device": "cpu", "scope": "backbone", "batch": 1}
    label = latency_axis_label(run)
    assert label == "backbone median latency (ms; ONNX Runtime, CPU, 128x128, batch 1)"
    assert not any(r.fingerprint in label for r in run.candidates)
    # an elastic space's paths run at their own input sizes: the axis says so rather than naming one size
    from dataclasses import replace

    from detnas.arch import Arch
    from detnas.space import get_space

    demo = get_space("detnas-300m-demo")
    elastic = replace(run, candidates=[replace(run.candidates[0], arch=Arch(demo, (0,) * demo.num_blocks))])
    assert latency_axis_label(elastic) == ("backbone median latency (ms; ONNX Runtime, CPU, each path at its input-size "
                                           "gene's share of 128x128, batch 1)")
