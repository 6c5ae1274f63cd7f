"""A journal written by the previous detnas (the version-1 JSON lines of `main` before typed records, copied here
literally) reads back into typed records and resumes; the winner's line carries the oracle's full statistics."""

from __future__ import annotations

import pytest

from detnas.bench.stats import TimingStats
from detnas.errors import DetnasError
from detnas.search.evolution import EvolutionSettings, Search
from detnas.search.interfaces import BackboneCost
from detnas.search.journal import read_journal
from detnas.search.objectives import Constraints
from detnas.search.records import Candidate, Latency, Plan
from detnas.search.report import SearchRun
from detnas.space import get_space

from helpers.search import FakeAccuracy, FakeLatency

OLD_JOURNAL = [
    '{"config": {"algorithm": "evolution", "constraint_flops_max": null, "constraint_latency_ms": 20.0, "constraint_metric": "AP", "constraint_objective": "hard", "constraint_paper_limit": true, "constraint_params_max": null, "constraint_soft_weight": -0.07, "crossovers": 1, "generations": 1, "max_tries": 50, "mutation_prob": 0.1, "mutations": 1, "parents": 2, "population": 2, "randoms": 0, "seed": 4, "space": "detnas-300m", "space_digest": "c80f4986654c"}, "config_hash": "ac4d42e6b43559c0", "type": "header", "version": 1}',  # noqa: E501 - verbatim journal lines
    '{"duplicates": 0, "generation": 0, "parents": [], "planned": [{"arch": {"choices": "0,3,0,1|1,3,1,0|0,1,0,1,2,2,3,1|1,1,1,1", "hash": "22447ff950be", "space": "detnas-300m"}, "flops": 23602944, "hash": "22447ff950be", "latency": {"median_ms": 11.771643093600868, "min_ms": 11.536210231728852, "p90_ms": 12.360225248280912}, "origin": "random", "params": 1563216}, {"arch": {"choices": "2,1,0,0|3,2,2,2|1,1,3,0,0,3,1,1|0,2,0,2", "hash": "cf3613c5aee5", "space": "detnas-300m"}, "flops": 23410432, "hash": "cf3613c5aee5", "latency": {"median_ms": 12.519307052297517, "min_ms": 12.268920911251566, "p90_ms": 13.145272404912394}, "origin": "random", "params": 1590944}], "rejected": [], "type": "generation", "wall_s": 0.3775794200009841}',  # noqa: E501 - verbatim journal lines
    '{"arch": {"choices": "0,3,0,1|1,3,1,0|0,1,0,1,2,2,3,1|1,1,1,1", "hash": "22447ff950be", "space": "detnas-300m"}, "fingerprint": "fake-device", "fitness": 0.5643286187201739, "flops": 23602944, "generation": 0, "hash": "22447ff950be", "index": 0, "latency": {"median_ms": 11.771643093600868, "min_ms": 11.536210231728852, "p90_ms": 12.360225248280912}, "metrics": {"AP": 0.5643286187201739, "AP50": 0.9029257899522783, "AP75": 0.5078957568481566}, "origin": "random", "params": 1563216, "seed": 4, "timing": {"accuracy_s": 7.783600085531361e-05}, "type": "candidate", "wall_s": 7.783600085531361e-05}',  # noqa: E501 - verbatim journal lines
    '{"arch": {"choices": "2,1,0,0|3,2,2,2|1,1,3,0,0,3,1,1|0,2,0,2", "hash": "cf3613c5aee5", "space": "detnas-300m"}, "fingerprint": "fake-device", "fitness": 0.6238614104595035, "flops": 23410432, "generation": 0, "hash": "cf3613c5aee5", "index": 1, "latency": {"median_ms": 12.519307052297517, "min_ms": 12.268920911251566, "p90_ms": 13.145272404912394}, "metrics": {"AP": 0.6238614104595035, "AP50": 0.9981782567352057, "AP75": 0.5614752694135532}, "origin": "random", "params": 1590944, "seed": 4, "timing": {"accuracy_s": 7.236700002977159e-05}, "type": "candidate", "wall_s": 7.236700002977159e-05}',  # noqa: E501 - verbatim journal lines
    '{"arch": {"choices": "2,1,0,0|3,2,2,2|1,1,3,0,0,3,1,1|0,2,0,2", "hash": "cf3613c5aee5", "space": "detnas-300m"}, "fingerprint": "fake-device", "hash": "cf3613c5aee5", "latency": {"convert_seconds": 1.25, "cv": 0.015267175572519083, "mean_ms": 13.1, "median_ms": 13.019307052297517, "min_ms": 12.758920911251566, "n": 30, "p90_ms": 13.670272404912394, "p99_ms": 13.9, "std_ms": 0.2}, "latency_target_ms": 20.0, "meets_target": true, "source": "measured", "type": "final"}',  # noqa: E501 - verbatim journal lines
]
SETTINGS = dict(population=2, parents=2, mutations=1, crossovers=1, randoms=0, seed=4)


@pytest.fixture
def old_journal(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text("\n".join(OLD_JOURNAL) + "\n")
    return path


def test_an_old_journal_reads_into_typed_records(old_journal) -> None:
    run = SearchRun.load(old_journal)
    assert [c.hash for c in run.candidates] == ["22447ff950be", "cf3613c5aee5"]
    assert all(isinstance(c, Candidate) and c.arch.hash == c.hash for c in run.candidates)
    assert run.candidates[1].latency == Latency(median_ms=12.519307052297517)  # partial stats: the median is kept
    assert run.candidates[1].metrics["AP50"] == pytest.approx(0.9981782567352057)
    assert isinstance(run.plans[0], Plan) and [p.hash for p in run.plans[0].planned] == ["22447ff950be", "cf3613c5aee5"]
    assert run.best().hash == run.final.hash == "cf3613c5aee5"
    assert isinstance(run.final.latency.stats, TimingStats) and run.final.latency.stats.n == 30
    assert run.final.latency.convert_seconds == 1.25 and run.final.meets_target is True
    assert run.verdict() == ("winner meets the 20ms target: 13.019ms re-measured (measured) through the search's cache "
                             "by an older detnas, not a fresh timing")
    assert not run.final.fresh and run.final.runner_up is None
    assert run.constraints.feasibility == "median" and run.constraints.targets == ()  # what it was searched under
    assert run.final.to_json() == read_journal(old_journal)[-1], "the JSON round trip changed the final line"


def test_an_old_journal_resumes_without_rewriting_its_past(old_journal) -> None:
    """It was searched under the median rule (older detnas had no other), so it resumes under that rule; asking
    for the 95 % bound instead is another configuration and is refused naming the field, the journal untouched."""
    before = old_journal.read_text()
    accuracy = FakeAccuracy()
    space, settings = get_space("detnas-300m"), EvolutionSettings(generations=2, **SETTINGS)
    with pytest.raises(DetnasError, match="differs in constraint_feasibility"):
        Search(space, settings, Constraints(latency_ms=20.0), accuracy, FakeLatency(), BackboneCost(64),
               old_journal).run(resume=True)
    assert old_journal.read_text() == before
    search = Search(space, settings, Constraints(latency_ms=20.0, feasibility="median"),
                    accuracy, FakeLatency(), BackboneCost(64), old_journal)
    candidates = search.run(resume=True)
    assert old_journal.read_text().startswith(before) and len(accuracy.calls) == 2
    assert [c.generation for c in candidates] == [0, 0, 1, 1] and candidates[0].latency.median_ms == 11.771643093600868


def test_a_garbled_record_is_one_line(old_journal) -> None:
    lines = old_journal.read_text().splitlines()
    old_journal.write_text("\n".join([*lines[:2], lines[2].replace('"fitness"', '"fitnes"'), *lines[3:]]) + "\n")
    with pytest.raises(DetnasError, match=r"line 3: candidate record lacks or garbles field 'fitness'") as err:
        SearchRun.load(old_journal)
    assert "\n" not in str(err.value)
