"""The evolution on cheap deterministic evaluators: constraints, duplicates, pareto front, exact resume."""

from __future__ import annotations

import json
import random

import pytest

from detnas.arch import Arch, sample_arch
from detnas.errors import DetnasError
from detnas.search.evolution import EvolutionSettings, Search, best_record, generation_rng
from detnas.search.interfaces import BackboneCost
from detnas.search.journal import read_journal, strip_volatile
from detnas.search.objectives import Constraints, non_dominated_fronts, pareto_front
from detnas.search.operators import crossover, mutate
from detnas.search.records import Candidate, Latency

from helpers.search import TINY, FakeAccuracy, FakeLatency

SMALL = dict(population=10, generations=4, parents=4, mutations=4, crossovers=4, randoms=2, seed=3)


def make_search(path, accuracy=None, latency=None, settings=None, **constraints) -> Search:
    return Search(TINY, EvolutionSettings(**(settings or SMALL)), Constraints(**constraints),
                  accuracy or FakeAccuracy(), latency or FakeLatency(), BackboneCost(64), path)


def test_mutation_rate_and_crossover_genes() -> None:
    rng = random.Random(0)
    parent = sample_arch(TINY, 1)
    changed = sum(a != b for _ in range(400) for a, b in zip(mutate(parent, rng, 0.1).choices, parent.choices))
    # a gene is redrawn with p=0.1 and lands on another value with p=3/4 -> expect 7.5% of 3600 genes
    assert 0.05 < changed / (400 * TINY.num_blocks) < 0.10
    a, b = Arch(TINY, (0,) * TINY.num_blocks), Arch(TINY, (3,) * TINY.num_blocks)
    child = crossover(a, b, rng)
    assert set(child.choices) <= {0, 3} and len(set(crossover(a, b, rng).choices)) == 2


def test_hard_constraint_respected_and_no_duplicates(tmp_path) -> None:
    accuracy, latency = FakeAccuracy(), FakeLatency()
    target = 6.0  # between the all-0 (3.25ms) and all-3 (10ms) archs of the tiny space; rejects about half
    records = make_search(tmp_path / "j.jsonl", accuracy, latency, latency_ms=target).run()
    assert len(records) == 40 and len(accuracy.calls) == 40
    assert len(set(accuracy.calls)) == 40, "an architecture was evaluated twice"
    assert len(set(latency.calls)) == len(latency.calls), "a latency was measured twice"
    journal = read_journal(tmp_path / "j.jsonl")
    cands = [r for r in journal if r["type"] == "candidate"]
    assert all(r["latency"]["median_ms"] <= target for r in cands)
    rejected = [e for r in journal if r["type"] == "generation" for e in r["rejected"]]
    assert rejected and all(e["latency"]["median_ms"] > target for e in rejected)
    assert [r["index"] for r in cands] == list(range(40))
    assert {r["origin"] for r in cands if r["generation"] > 0} >= {"mutation", "crossover"}
    # evolution improves on the random first generation
    best_gen0 = max(r["fitness"] for r in cands if r["generation"] == 0)
    assert best_record([Candidate.from_json(r) for r in cands], Constraints(latency_ms=target)).fitness >= best_gen0


def test_generation_zero_draws_are_known_in_advance(tmp_path) -> None:
    """The demo times its latency target on `generation_rng`'s first draws so the search finds them cached: that
    holds only while generation 0 proposes exactly these archs, in this order."""
    latency = FakeLatency()
    make_search(tmp_path / "j.jsonl", latency=latency).run()
    rng = generation_rng(SMALL["seed"], 0)
    expected = [sample_arch(TINY, rng).hash for _ in range(SMALL["population"])]
    assert latency.calls[:SMALL["population"]] == expected
    other = generation_rng(SMALL["seed"] + 1, 0)
    assert [sample_arch(TINY, other).hash for _ in range(SMALL["population"])] != expected


def test_flops_and_params_limits(tmp_path) -> None:
    cost = BackboneCost(64)
    limit = sorted(cost(sample_arch(TINY, s))[0] for s in range(50))[25]
    records = make_search(tmp_path / "j.jsonl", flops_max=limit).run()
    assert records and all(r.flops <= limit for r in records)


def test_soft_reward_and_pareto_front(tmp_path) -> None:
    soft = Constraints(objective="soft", latency_ms=5.0, soft_weight=-0.07)
    assert soft.fitness(0.3, 10.0) == pytest.approx(0.3 * 2 ** -0.07)
    assert soft.fitness(0.3, 2.5) > 0.3 and soft.violation(0, 0, Latency.predicted(50.0)) is None
    points = [(0.30, 5.0), (0.25, 4.0), (0.20, 6.0), (0.35, 9.0), (0.25, 5.0)]
    assert non_dominated_fronts(points) == [[0, 1, 3], [4], [2]]  # (0.25, 5) dominates (0.20, 6)
    records = make_search(tmp_path / "p.jsonl", objective="pareto").run()
    front = pareto_front(records)
    assert len(front) >= 2
    for r in records:  # nothing is strictly better in both AP and latency than a front member
        for f in front:
            assert not (r.metrics["AP"] > f.metrics["AP"] and r.latency.median_ms < f.latency.median_ms)
    off_front = [r for r in records if r not in front]
    assert all(any(f.metrics["AP"] >= r.metrics["AP"] and f.latency.median_ms <= r.latency.median_ms
                   for f in front) for r in off_front)


def test_random_search_same_budget(tmp_path) -> None:
    accuracy = FakeAccuracy()
    records = make_search(tmp_path / "r.jsonl", accuracy, settings={**SMALL, "algorithm": "random"}).run()
    assert len(records) == 40 and {r.origin for r in records} == {"random"}


def test_interrupted_resume_is_exact_and_never_reevaluates(tmp_path) -> None:
    straight = tmp_path / "straight.jsonl"
    make_search(straight, latency_ms=6.0).run()
    resumed = tmp_path / "resumed.jsonl"
    for k in (7, 13):  # interrupt twice, mid-generation
        with pytest.raises(KeyboardInterrupt):
            make_search(resumed, FakeAccuracy(interrupt_after=k), latency_ms=6.0).run(resume=resumed.exists())
    counting = FakeAccuracy()
    make_search(resumed, counting, latency_ms=6.0).run(resume=True)
    assert len(counting.calls) == 40 - 20
    assert strip_volatile(read_journal(resumed)) == strip_volatile(read_journal(straight))
    again = FakeAccuracy()
    make_search(resumed, again, latency_ms=6.0).run(resume=True)
    assert again.calls == []


def test_torn_last_line_is_dropped_on_resume(tmp_path) -> None:
    path = tmp_path / "j.jsonl"
    with pytest.raises(KeyboardInterrupt):
        make_search(path, FakeAccuracy(interrupt_after=5)).run()
    with open(path, "a") as handle:
        handle.write('{"type": "candidate", "hash": "tor')
    make_search(path).run(resume=True)
    straight = tmp_path / "s.jsonl"
    make_search(straight).run()
    assert strip_volatile(read_journal(path)) == strip_volatile(read_journal(straight))


def test_resume_with_other_configuration_is_refused_untouched(tmp_path) -> None:
    path = tmp_path / "j.jsonl"
    make_search(path, latency_ms=6.0).run()
    before = path.read_bytes()
    with pytest.raises(DetnasError, match="another search configuration.*constraint_latency_ms"):
        make_search(path, latency_ms=6.5).run(resume=True)
    with pytest.raises(DetnasError, match="already exists"):
        make_search(path, latency_ms=6.0).run()
    assert path.read_bytes() == before
    assert "\n" not in str(DetnasError)


def test_unsatisfiable_constraint_is_one_clear_error(tmp_path) -> None:
    path = tmp_path / "j.jsonl"
    with pytest.raises(DetnasError, match=r"no architecture .*\(fastest measured latency seen \d+\.\d+ms") as err:
        make_search(path, latency_ms=0.5, settings={**SMALL, "max_tries": 3}).run()
    assert "\n" not in str(err.value) and not path.exists()


def test_final_remeasure_reports_a_miss(tmp_path) -> None:
    search = make_search(tmp_path / "j.jsonl", latency=FakeLatency(source="predicted"), latency_ms=6.0)
    records = search.run()
    with pytest.raises(DetnasError, match="timed afresh"):
        search.finalize(records, FakeLatency(source="predicted"))
    final = search.finalize(records, FakeLatency(offset_ms=2.0))  # the device is slower than predicted
    assert final.meets_target is False and final.hash == best_record(records, search.constraints).hash
    assert json.loads((tmp_path / "j.jsonl").read_text().splitlines()[-1])["type"] == "final"


def test_the_winner_and_runner_up_are_timed_afresh_not_through_the_search_cache(tmp_path) -> None:
    """A measuring oracle that the search filled repeats its figures (the winner's curse goes unseen): finalize
    asks for fresh, interleaved timings of the winner and the runner-up and journals both beside the search-time
    ones; a winner whose search-time median met the target but whose fresh one does not is reported as a miss."""
    measure = FakeLatency(fresh_offset_ms=0.0)
    search = make_search(tmp_path / "j.jsonl", latency=measure, latency_ms=6.0)
    records = search.run()
    winner = best_record(records, search.constraints)
    runner = best_record([r for r in records if r.hash != winner.hash], search.constraints)
    slack = 6.0 - winner.latency.median_ms
    assert slack >= 0
    measure.calls.clear()
    measure.fresh_offset_ms = slack + 0.01  # the device is a little slower now than during the search
    final = search.finalize(records, measure, rounds=4)
    assert measure.calls == [], "the winner was re-read through the search's latency path (its cache)"
    assert measure.fresh_calls == [[winner.hash, runner.hash]]
    assert final.rounds == 4 and final.latency.stats.n == 20
    assert final.search_latency == winner.latency and final.latency.median_ms == pytest.approx(6.01)
    assert final.meets_target is False
    assert final.runner_up.hash == runner.hash and final.runner_up.search_latency == runner.latency
    assert final.runner_up.meets_target is (runner.latency.median_ms + slack + 0.01 <= 6.0)
    line = json.loads((tmp_path / "j.jsonl").read_text().splitlines()[-1])
    assert line["rounds"] == 4 and line["search_latency"]["median_ms"] == winner.latency.median_ms
    assert line["runner_up"]["hash"] == runner.hash
    from detnas.search.report import SearchRun

    verdict = SearchRun.load(tmp_path / "j.jsonl").verdict()
    assert verdict.startswith("winner does NOT meet the 6ms target: fresh 6.010ms (4 interleaved rounds, 20 runs, "
                              f"uncached; search-time {winner.latency.median_ms:.3f}ms)"), verdict
    assert f"runner-up {runner.hash} fresh" in verdict


def test_bad_settings() -> None:
    with pytest.raises(DetnasError, match="must equal --population"):
        EvolutionSettings(population=50, mutations=20, crossovers=20, randoms=5)
    with pytest.raises(DetnasError, match="needs --latency-target"):
        Constraints(objective="soft")


def test_backbone_cost_matches_detnas_flops() -> None:
    from detnas.flops import count_flops, count_params

    for seed in range(3):
        arch = sample_arch(TINY, seed)
        assert BackboneCost(96)(arch) == (count_flops(arch, 96), count_params(arch))


def test_more_generations_extend_a_finished_search_exactly(tmp_path) -> None:
    longer = {**SMALL, "generations": 6}
    straight = tmp_path / "straight.jsonl"
    make_search(straight, settings=longer).run()
    extended = tmp_path / "extended.jsonl"
    make_search(extended).run()
    counting = FakeAccuracy()
    make_search(extended, counting, settings=longer).run(resume=True)
    assert len(counting.calls) == 20
    header_free = lambda path: strip_volatile(read_journal(path))[1:]  # noqa: E731 - the header records the budget
    assert header_free(extended) == header_free(straight)


def test_pareto_objective_ranks_by_the_fitness_metric() -> None:
    """On VOC data the fitness is VOC07 mAP: the Pareto objective orders, fronts and picks by it, not by COCO AP."""
    from types import SimpleNamespace

    from detnas.search.objectives import OBJECTIVES

    def candidate(name: str, ap: float, map50: float, ms: float) -> SimpleNamespace:
        return SimpleNamespace(hash=name, metrics={"AP": ap, "mAP50_07": map50}, fitness=map50,
                               latency=SimpleNamespace(median_ms=ms, upper_ms=ms))

    coco_best, voc_best, slow = candidate("a", 0.5, 0.2, 5.0), candidate("b", 0.3, 0.6, 5.0), candidate("c", 0.1, 0.1, 9.0)
    records = [coco_best, voc_best, slow]
    voc = Constraints(objective="pareto", latency_ms=6.0, metric="mAP50_07")
    pareto = OBJECTIVES.get("pareto")()
    assert pareto.best(records, voc) is voc_best
    assert pareto.rank(records)[0] is voc_best and pareto.rank(records)[-1] is slow
    assert pareto_front(records, "mAP50_07") == [voc_best] and pareto_front(records) == [coco_best]
