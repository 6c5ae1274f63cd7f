"""Several latency targets in one search: AP once per candidate, latency per target, parents for every target,
one winner, fresh timing, front and plot per target, a version-2 journal that resumes; bad --latency-target and
--latency-profile values are one line each."""

from __future__ import annotations

import json

import pytest

from detnas.arch import Arch
from detnas.errors import DetnasError
from detnas.search.evolution import EvolutionSettings, Search, best_record
from detnas.search.interfaces import BackboneCost
from detnas.search.journal import read_journal
from detnas.search.objectives import Constraints
from detnas.search.report import SearchRun, write_report
from detnas.search.targets import Target, parse_targets

from helpers.search import TINY, FakeAccuracy, FakeLatency

SMALL = dict(population=8, parents=3, mutations=3, crossovers=3, randoms=2, seed=2)
TARGETS = (("gpu", 7.0), ("cpu", 12.0))


def _search(path, generations: int, accuracy: FakeAccuracy, sources: dict) -> Search:
    return Search(TINY, EvolutionSettings(generations=generations, **SMALL), Constraints(targets=TARGETS), accuracy,
                  sources["gpu"], BackboneCost(64), path, target_latency=sources)


def test_one_search_serves_two_targets(tmp_path) -> None:
    path = tmp_path / "run" / "journal.jsonl"
    sources = {"gpu": FakeLatency(), "cpu": FakeLatency(offset_ms=2.5)}  # the CPU device is 2.5 ms slower
    accuracy = FakeAccuracy()
    search = _search(path, 3, accuracy, sources)
    records = search.run()
    constraints = search.constraints
    assert len(accuracy.calls) == len(set(accuracy.calls)) == len(records) == 24, "AP was evaluated twice"
    assert all(set(r.latencies) == {"gpu", "cpu"} for r in records)
    assert all(r.latencies["cpu"].median_ms == pytest.approx(r.latencies["gpu"].median_ms + 2.5) for r in records)
    assert all(constraints.meets(r, "gpu") or constraints.meets(r, "cpu") for r in records)
    winners = {name: best_record(records, constraints, name) for name, _ in TARGETS}
    assert winners["gpu"].hash != winners["cpu"].hash  # the looser budget buys a bigger network
    assert winners["cpu"].metrics["AP"] > winners["gpu"].metrics["AP"]
    assert not constraints.meets(winners["cpu"], "gpu") and constraints.meets(winners["gpu"], "gpu")
    parents = {a.hash for a in search._parents(records)}
    assert {winners["gpu"].hash, winners["cpu"].hash} <= parents, "a target's best candidates were not parents"
    measure = FakeLatency(fresh_offset_ms=0.0)
    search.finalize(records, measure)
    assert measure.fresh_calls[0][0] == winners["gpu"].hash and measure.fresh_calls[1][0] == winners["cpu"].hash
    lines = read_journal(path)
    assert lines[0]["version"] == 2
    finals = [r for r in lines if r["type"] == "final"]
    assert [f["target"] for f in finals] == ["gpu", "cpu"]
    assert finals[1]["search_latency"] == winners["cpu"].latencies["cpu"].to_json()

    out = tmp_path / "report"
    run = write_report(path, out)
    for name in ("gpu", "cpu"):
        assert Arch.from_json((out / f"best_arch.{name}.json").read_text()).hash == winners[name].hash
        assert (out / f"pareto.{name}.png").read_bytes()[:4] == b"\x89PNG"
        front = json.loads((out / f"pareto_front.{name}.json").read_text())
        assert [r["latencies"][name]["median_ms"] for r in front] == sorted(r["latencies"][name]["median_ms"]
                                                                             for r in front)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["targets"]) == {"gpu", "cpu"} and summary["targets"]["cpu"]["best"]["arch"]["choices"]
    verdict = run.verdict()
    assert verdict.startswith("target gpu (7ms): winner") and " | target cpu (12ms): winner" in verdict, verdict


def test_a_two_target_search_resumes_exactly(tmp_path) -> None:
    straight = tmp_path / "straight.jsonl"
    _search(straight, 3, FakeAccuracy(), {"gpu": FakeLatency(), "cpu": FakeLatency(offset_ms=2.5)}).run()
    resumed = tmp_path / "resumed.jsonl"
    _search(resumed, 2, FakeAccuracy(), {"gpu": FakeLatency(), "cpu": FakeLatency(offset_ms=2.5)}).run()
    accuracy = FakeAccuracy()
    _search(resumed, 3, accuracy, {"gpu": FakeLatency(), "cpu": FakeLatency(offset_ms=2.5)}).run(resume=True)
    assert len(accuracy.calls) == 8  # only the third generation
    strip = lambda lines: [{k: v for k, v in r.items() if k not in ("wall_s", "timing")} for r in lines]  # noqa: E731
    assert strip(read_journal(resumed))[1:] == strip(read_journal(straight))[1:]  # the header keeps generations 2
    assert SearchRun.load(resumed).targets == list(TARGETS)


def test_parse_targets() -> None:
    assert parse_targets(["12ms"]) == (12.0, None, [])
    assert parse_targets(["12ms"], ["dev.json"])[1].name == "dev.json"
    _, _, targets = parse_targets(["gpu=12ms", "cpu=0.04s"], ["gpu=gpu.json"])
    assert targets == [Target("gpu", 12.0, __import__("pathlib").Path("gpu.json")), Target("cpu", 40.0)]


@pytest.mark.parametrize("values, profiles, message", [
    (["12"], [], "--latency-target '12' is not a duration with its unit"),
    (["gpu=-3ms"], [], "--latency-target '-3ms' is not a duration with its unit"),
    (["gpu=0ms"], [], "--latency-target '0ms' must be above 0"),
    (["gpu=12ms", "gpu=20ms"], [], "NAME 'gpu' is given twice"),
    (["12ms", "20ms"], [], "given several times without names"),
    (["gpu=12ms", "20ms"], [], "name every target"),
    (["gpu=12ms"], ["tpu=t.json"], "'tpu' is not a --latency-target (they are gpu)"),
    (["gpu=12ms"], ["g.json"], "with named targets say whose profile it is"),
    (["gpu=12ms"], ["gpu=a.json", "gpu=b.json"], "target 'gpu' is given two profiles"),
    (["12ms"], ["gpu=a.json"], "--latency-profile NAME=FILE names a target"),
    (["g/pu=12ms"], [], "NAME 'g/pu' must be letters, digits"),
])
def test_bad_targets_are_one_line(values, profiles, message) -> None:
    with pytest.raises(DetnasError) as err:
        parse_targets(values, profiles)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_other_objectives_and_missing_sources_are_refused() -> None:
    with pytest.raises(DetnasError, match="with several named --latency-target use --objective hard"):
        Constraints(objective="pareto", targets=TARGETS)
    with pytest.raises(DetnasError, match="--latency-target cpu: no latency source"):
        Search(TINY, EvolutionSettings(generations=1, **SMALL), Constraints(targets=TARGETS), FakeAccuracy(),
               FakeLatency(), BackboneCost(64), "unused.jsonl", target_latency={"gpu": FakeLatency()})


@pytest.mark.parametrize("extra, message", [
    (["--latency-target", "gpu=12ms", "--latency-target", "gpu=20ms"], "--latency-target: NAME 'gpu' is given twice"),
    (["--latency-target", "gpu=12"], "--latency-target '12' is not a duration with its unit"),
    (["--latency-target", "gpu=12ms", "--latency-profile", "tpu=x.json"], "'tpu' is not a --latency-target"),
])
def test_the_cli_refuses_bad_targets_before_writing(tmp_path, capsys, extra, message) -> None:
    from detnas.cli.main import main

    args = ["search", "--supernet", str(tmp_path / "s"), "--ann", str(tmp_path / "a.json"), "--images", str(tmp_path),
            "--bn-ann", str(tmp_path / "b.json"), "--out", str(tmp_path / "out"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists(), err


def test_the_demo_reports_both_targets(tmp_path) -> None:
    """The main job's two targets (the run's and 1.5x it) and its rows of each winner: search-time and fresh
    latency, verdict, front size."""
    from detnas.workflows.main_job import demo_targets, target_rows

    assert [(t.name, t.latency_ms, t.profile) for t in demo_targets(10.0)] == [("tight", 10.0, None),
                                                                               ("loose", 15.0, None)]
    path = tmp_path / "journal.jsonl"
    device = FakeLatency()  # as in the demo, both targets are measured by the same backend, the fresh timing too
    search = _search(path, 2, FakeAccuracy(), {"gpu": device, "cpu": device})
    search.finalize(search.run(), FakeLatency(fresh_offset_ms=0.1))
    rows = target_rows(SearchRun.load(path))
    assert set(rows) == {"gpu", "cpu"}
    for name, row in rows.items():
        assert row.fresh_ms == pytest.approx(row.search_ms + 0.1) and row.front >= 1
        assert row.meets_target is (row.fresh_ms <= dict(TARGETS)[name]) and row.verdict.startswith("winner")
