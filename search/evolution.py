"""The search loop around a registered algorithm (`detnas.search.algorithms`: DetNAS' evolution, random search),
over the small evaluator interfaces, with its journal, resume and torchrun team.

Each generation is first *planned* (the algorithm's proposals drawn, duplicates and infeasible ones redrawn,
latency and cost attached) and journaled, then its candidates are evaluated. The proposals of generation g come from an RNG
seeded by (seed, g) and from the candidates evaluated before g, so a resumed search re-plans nothing it has
journaled, evaluates nothing twice, and writes exactly the lines a straight run would.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from detnas.arch import Arch
from detnas.errors import DetnasError
from detnas.progress import Step, task, track
from detnas.search.algorithms import ALGORITHMS, EvolutionSettings, SearchAlgorithm
from detnas.search.distributed import Team
from detnas.search.interfaces import AccuracyEvaluator, FreshTimer, LatencyEstimator
from detnas.search.journal import Journal
from detnas.search.objectives import Constraints
from detnas.search.records import Candidate, Final, Latency, Plan, Proposal, Retimed
from detnas.space import SearchSpace

CostFn = Callable[[Arch], tuple[int, int]]
#: interleaved rounds of the winner's fresh timing (each of the search's --latency-runs runs)
FRESH_ROUNDS = 5
logger = logging.getLogger(__name__)


def generation_rng(seed: int, generation: int) -> random.Random:
    """The RNG generation `generation` of a search seeded with `seed` draws its proposals from: seeded per generation,
    so a resume re-plans what a straight run planned, and generation 0's uniform draws can be known in advance
    (`detnas.workflows.main_job` times its latency target on them, into the cache the search then reads)."""
    return random.Random(f"detnas-search:{seed}:{generation}")


def search_config(space: SearchSpace, settings: EvolutionSettings, constraints: Constraints,
                  context: dict[str, Any]) -> dict[str, Any]:
    """The flat configuration a journal is bound to; `context` names the supernet, data and latency source."""
    return {"space": space.name, "space_digest": space.digest, **asdict(settings),
            **{f"constraint_{k}": v for k, v in asdict(constraints).items()}, **context}


class Search:
    """One search run bound to a journal file; `run()` starts it or continues it. The registered algorithm named by
    `settings.algorithm` decides what is drawn; this class plans, evaluates, journals and shares the work."""

    def __init__(self, space: SearchSpace, settings: EvolutionSettings, constraints: Constraints,
                 accuracy: AccuracyEvaluator, latency: LatencyEstimator, cost: CostFn, journal_path: str | Path,
                 context: dict[str, Any] | None = None,
                 target_latency: Mapping[str, LatencyEstimator] | None = None,
                 scored_with: dict[str, Any] | None = None) -> None:
        self.space, self.settings, self.constraints = space, settings, constraints
        self.scored_with = scored_with  # the journal header's search settings (detnas.search_settings)
        self.algorithm: SearchAlgorithm = ALGORITHMS.get(settings.algorithm)(space, settings, constraints)
        self.accuracy, self.latency, self.cost = accuracy, latency, cost
        self.target_latency = dict(target_latency or {})  # named target -> its latency source
        missing = [name for name, _ in constraints.targets if name not in self.target_latency]
        if missing:
            raise DetnasError(f"--latency-target {', '.join(missing)}: no latency source for this target")
        self.journal_path = Path(journal_path)
        self.config = search_config(space, settings, constraints, context or {})
        self.team = Team()
        self._journal: Journal | None = None
        self.latency_seconds = 0.0  # time spent asking the latency estimator in this session (for benchmarks)

    # -- journal -------------------------------------------------------------------------------------------
    def _write(self, record: Plan | Candidate | Final) -> None:
        """Rank 0 appends; the journal file is created on the first write so a failed start leaves nothing."""
        if not self.team.is_leader:
            return
        if self._journal is None:
            self._journal = Journal.create(self.journal_path, self.config, self.scored_with)
        self._journal.append(record)

    def _open(self, resume: bool) -> list[Plan | Candidate | Final]:
        """Rank 0 reads the journal to resume, or checks that none is in the way of a fresh one."""
        if resume:
            self._journal = Journal.resume(self.journal_path, self.config)
            return self._journal.entries
        if self.journal_path.exists() and self.journal_path.stat().st_size > 0:
            raise DetnasError(f"{self.journal_path}: a journal already exists; pass --resume to continue it "
                              "or choose another --out")
        return []

    # -- planning ------------------------------------------------------------------------------------------
    def _draw(self, origin: str, wanted: int, rng: random.Random, parents: Sequence[Arch], seen: set[str],
              plan: Plan, step: Step) -> int:
        """Add up to `wanted` new feasible proposals to `plan`; returns how many it found."""
        found = tries = 0
        while found < wanted and tries < wanted * self.settings.max_tries:
            tries += 1
            arch = self.algorithm.propose(origin, rng, parents)
            if arch.hash in seen:
                plan.duplicates += 1
                continue
            seen.add(arch.hash)
            flops, params = self.cost(arch)
            latency, latencies = None, {}
            reason = self.constraints.violation(flops, params)
            if reason is None:  # the cheap analytic limits pass: worth timing
                start = time.perf_counter()
                latencies = {name: self.target_latency[name].latency(arch) for name, _ in self.constraints.targets}
                latency = next(iter(latencies.values())) if latencies else self.latency.latency(arch)
                self.latency_seconds += time.perf_counter() - start
                reason = self.constraints.violation(flops, params, latency, latencies)
            proposal = Proposal(arch, origin, flops, params, latency, reason, latencies)
            if reason is not None:
                plan.rejected.append(proposal)
                continue
            plan.planned.append(proposal)
            step.advance()
            found += 1
        return found

    def _plan(self, generation: int, parents: list[Arch], seen: set[str]) -> Plan:
        start = time.perf_counter()
        rng = generation_rng(self.settings.seed, generation)
        plan = Plan(generation, parents=[p.hash for p in parents])
        quotas = list(self.algorithm.quotas(generation))
        with task(f"generation {generation}: planning (each candidate timed)", sum(w for _, w in quotas)) as step:
            for origin, wanted in quotas:
                missing = wanted - self._draw(origin, wanted, rng, parents, seen, plan, step)
                if missing and origin != "random":  # an operator that keeps producing seen archs yields to random
                    self._draw("random", missing, rng, parents, seen, plan, step)
        plan.wall_s = time.perf_counter() - start
        if generation == 0 and not plan.planned:
            raise DetnasError(self._unsatisfiable(plan))
        return plan

    def _unsatisfiable(self, plan: Plan) -> str:
        timed = [r.latency.median_ms for r in plan.rejected if r.latency is not None]
        fastest = f"fastest {self.latency.source} latency seen {min(timed):.3f}ms, " if timed else ""
        smallest = min((r.flops for r in plan.rejected), default=0) / 1e6
        return (f"no architecture of space '{self.space.name}' met the constraints in {len(plan.rejected)} random "
                f"draws ({fastest}smallest FLOPs {smallest:.1f}M); relax --latency-target / --flops-max / --params-max")

    def _parents(self, candidates: list[Candidate]) -> list[Arch]:
        """The algorithm's parents; with several targets, its parents among the candidates meeting each target,
        merged, so no target's front is bred from another target's winners alone."""
        if not self.constraints.targets:
            return self.algorithm.parents(candidates)
        merged: dict[str, Arch] = {}
        for name, _ in self.constraints.targets:
            for arch in self.algorithm.parents([c for c in candidates if self.constraints.meets(c, name)]):
                merged.setdefault(arch.hash, arch)
        return list(merged.values())

    # -- evaluation ----------------------------------------------------------------------------------------
    def _evaluate(self, proposal: Proposal, generation: int, index: int) -> Candidate:
        assert proposal.latency is not None  # planned proposals are timed
        start = time.perf_counter()
        metrics = {k: float(v) for k, v in self.accuracy.evaluate(proposal.arch).items()}
        timing = {"accuracy_s": time.perf_counter() - start, **self.accuracy.last_timing}
        return Candidate(index=index, generation=generation, origin=proposal.origin, arch=proposal.arch,
                         metrics=metrics, latency=proposal.latency, flops=proposal.flops, params=proposal.params,
                         fitness=self.constraints.fitness(metrics[self.constraints.metric], proposal.latency.median_ms),
                         seed=self.settings.seed, fingerprint=self.latency.fingerprint, wall_s=timing["accuracy_s"],
                         timing=timing, latencies=dict(proposal.latencies))

    def run(self, resume: bool = False) -> list[Candidate]:
        """Run (or continue) every generation; returns the evaluated candidates, in journal order."""
        done = self.team.lead(partial(self._open, resume))
        plans = {r.generation: r for r in done if isinstance(r, Plan)}
        evaluated = {r.hash: r for r in done if isinstance(r, Candidate)}
        candidates: list[Candidate] = []
        seen: set[str] = set()
        index = 0
        for generation in track(range(self.settings.generations), f"search: {self.settings.generations} generations"):
            if generation in plans:
                plan = plans[generation]
            else:
                plan = self.team.lead(partial(self._plan, generation, self._parents(candidates), seen))
                self._write(plan)
            seen.update(p.hash for p in plan.planned + plan.rejected)
            if not plan.planned:
                logger.info(f"generation {generation}: the space has no new feasible architecture left; stopping")
                break
            todo = [(index + i, p) for i, p in enumerate(plan.planned) if p.hash not in evaluated]
            logger.info(f"generation {generation}: {len(plan.planned)} planned, {len(plan.rejected)} rejected, "
                     f"{plan.duplicates} duplicates, {len(todo)} to evaluate")
            mine = []
            for i, proposal in track(list(self.team.share(todo)), f"generation {generation}: candidates"):
                record = self._evaluate(proposal, generation, i)
                if self.team.world == 1:
                    self._write(record)
                mine.append(record)
                logger.info(f"  #{i} {proposal.hash} AP {record.metrics['AP']:.4f} "
                         f"latency {record.latency.median_ms:.3f}ms")
            if self.team.world > 1:
                for record in sorted(self.team.gather(mine), key=lambda r: r.index):
                    self._write(record)
                    evaluated[record.hash] = record
            evaluated.update((r.hash, r) for r in mine)
            candidates.extend(evaluated[p.hash] for p in plan.planned)
            index += len(plan.planned)
        return candidates

    def finalize(self, candidates: list[Candidate], measure: FreshTimer, rounds: int = FRESH_ROUNDS,
                 elsewhere: Collection[str] = ()) -> Final | None:
        """Time each target's winner and runner-up afresh (uncached, interleaved rounds) and journal both figures
        beside their search-time ones, and whether the fresh medians meet the target; returns the (first) target's
        final line. The winner's search-time median is the lowest of noisy draws that passed the target, so only a
        fresh timing can tell whether it meets it. Targets `elsewhere` (predicted for another device) cannot be
        timed here and are left to that device."""
        if not self.team.is_leader:
            return None
        slots = [(name, ms) for name, ms in self.constraints.targets] or [(None, self.constraints.latency_ms)]
        for name in elsewhere:
            logger.warning(f"target {name}: predicted from a profile of another device; time its winner there "
                     "(`detnas bench latency`)")
        finals = [self._finalize_target(candidates, measure, rounds, name, ms) for name, ms in slots
                  if name not in elsewhere]
        return finals[0] if finals else None

    def _finalize_target(self, candidates: list[Candidate], measure: FreshTimer, rounds: int, target: str | None,
                         target_ms: float | None) -> Final | None:
        pool = candidates if target is None else [c for c in candidates if self.constraints.meets(c, target)]
        best = best_record(pool, self.constraints)
        if best is None:
            return None
        previous = [r for r in (self._journal.entries if self._journal else []) if isinstance(r, Final)
                    and r.target == target]
        if previous and previous[-1].hash == best.hash and previous[-1].fresh:
            return previous[-1]
        if measure.source != "measured":
            raise DetnasError("the winner's latency must be timed afresh, not predicted; give a measuring backend")
        runner = best_record([c for c in pool if c.hash != best.hash], self.constraints)
        named = "" if target is None else f" of target {target}"
        logger.info(f"timing the winner{' and the runner-up' if runner else ''}{named} afresh: {rounds} interleaved "
                 "rounds, uncached")
        fresh = measure.fresh([best.arch] + ([runner.arch] if runner else []), rounds)

        def meets(latency: Latency) -> bool | None:
            return None if target_ms is None else latency.median_ms <= target_ms

        def searched(candidate: Candidate) -> Latency:
            return candidate.latency if target is None else candidate.latencies[target]

        record = Final(arch=best.arch, latency=fresh[0], source=measure.source, fingerprint=measure.fingerprint,
                       latency_target_ms=target_ms, meets_target=meets(fresh[0]), search_latency=searched(best),
                       rounds=rounds, target=target,
                       runner_up=None if runner is None else Retimed(runner.arch, searched(runner), fresh[1],
                                                                     meets(fresh[1])))
        self._write(record)
        return record


def best_record(candidates: Sequence[Candidate], constraints: Constraints, target: str | None = None) -> Candidate | None:
    """The winner under the constraints' objective (e.g. the top-ranked candidate, or for pareto the highest AP on
    the front within the target); with a named `target`, among the candidates that meet it."""
    if target is not None:
        candidates = [c for c in candidates if constraints.meets(c, target)]
    return constraints.rule.best(candidates, constraints) if candidates else None
