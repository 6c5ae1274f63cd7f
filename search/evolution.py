"""DetNAS' evolutionary search (and random search on the same budget) over the small evaluator interfaces.

Each generation is first *planned* (proposals drawn, duplicates and infeasible ones redrawn, latency and cost
attached) and journaled, then its candidates are evaluated. The proposals of generation g come from an RNG
seeded by (seed, g) and from the candidates evaluated before g, so a resumed search re-plans nothing it has
journaled, evaluates nothing twice, and writes exactly the lines a straight run would.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from detnas.arch import Arch, sample_arch
from detnas.errors import DetnasError
from detnas.progress import track
from detnas.search.distributed import Team
from detnas.search.interfaces import AccuracyEvaluator, LatencyEstimator
from detnas.search.journal import Journal
from detnas.search.objectives import Constraints, pareto_front, rank_records
from detnas.search.operators import crossover, mutate
from detnas.space import SearchSpace

ALGORITHMS = ("evolution", "random")


@dataclass(frozen=True)
class EvolutionSettings:
    """The knobs of the search; the defaults are DetNAS' (spec section 6)."""

    algorithm: str = "evolution"
    population: int = 50
    generations: int = 20
    parents: int = 10
    mutations: int = 20
    crossovers: int = 20
    randoms: int = 10
    mutation_prob: float = 0.1
    seed: int = 0
    max_tries: int = 50

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise DetnasError(f"--algorithm '{self.algorithm}' is not one of {', '.join(ALGORITHMS)}")
        if min(self.population, self.generations, self.parents, self.max_tries) < 1:
            raise DetnasError("--population, --generations, --parents and --max-tries must be >= 1")
        if min(self.mutations, self.crossovers, self.randoms) < 0:
            raise DetnasError("--mutations, --crossovers and --randoms must be >= 0")
        if self.algorithm == "evolution" and self.mutations + self.crossovers + self.randoms != self.population:
            raise DetnasError(
                f"--mutations {self.mutations} + --crossovers {self.crossovers} + --randoms {self.randoms} must "
                f"equal --population {self.population}"
            )
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise DetnasError(f"--mutation-prob {self.mutation_prob} must be in [0, 1]")

    def quotas(self, generation: int) -> list[tuple[str, int]]:
        """How many proposals of each origin a generation draws; the first one (and random search) is random."""
        if generation == 0 or self.algorithm == "random":
            return [("random", self.population)]
        return [("mutation", self.mutations), ("crossover", self.crossovers), ("random", self.randoms)]


CostFn = Callable[[Arch], tuple[int, int]]
Log = Callable[[str], None]


def search_config(space: SearchSpace, settings: EvolutionSettings, constraints: Constraints,
                  context: dict[str, Any]) -> dict[str, Any]:
    """The flat configuration a journal is bound to; `context` names the supernet, data and latency source."""
    return {"space": space.name, "space_digest": space.digest, **asdict(settings),
            **{f"constraint_{k}": v for k, v in asdict(constraints).items()}, **context}


class Search:
    """One search run bound to a journal file; `run()` starts it or continues it."""

    def __init__(self, space: SearchSpace, settings: EvolutionSettings, constraints: Constraints,
                 accuracy: AccuracyEvaluator, latency: LatencyEstimator, cost: CostFn, journal_path: str | Path,
                 context: dict[str, Any] | None = None, log: Log | None = None) -> None:
        self.space, self.settings, self.constraints = space, settings, constraints
        self.accuracy, self.latency, self.cost = accuracy, latency, cost
        self.journal_path = Path(journal_path)
        self.config = search_config(space, settings, constraints, context or {})
        self.log = log or (lambda message: None)
        self.team = Team()
        self._journal: Journal | None = None
        self.latency_seconds = 0.0  # time spent asking the latency estimator in this session (for benchmarks)

    # -- journal -------------------------------------------------------------------------------------------
    def _write(self, record: dict[str, Any]) -> None:
        """Rank 0 appends; the journal file is created on the first write so a failed start leaves nothing."""
        if not self.team.is_leader:
            return
        if self._journal is None:
            self._journal = Journal.create(self.journal_path, self.config)
        self._journal.append(record)

    def _open(self, resume: bool) -> list[dict[str, Any]]:
        """Rank 0 reads the journal to resume, or checks that none is in the way of a fresh one."""
        if resume:
            self._journal = Journal.resume(self.journal_path, self.config)
            return self._journal.records[1:]
        if self.journal_path.exists() and self.journal_path.stat().st_size > 0:
            raise DetnasError(f"{self.journal_path}: a journal already exists; pass --resume to continue it "
                              "or choose another --out")
        return []

    # -- planning ------------------------------------------------------------------------------------------
    def _propose(self, origin: str, rng: random.Random, parents: list[Arch]) -> Arch:
        if origin == "mutation" and parents:
            return mutate(rng.choice(parents), rng, self.settings.mutation_prob)
        if origin == "crossover" and parents:
            a, b = rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
            return crossover(a, b, rng)
        return sample_arch(self.space, rng)

    def _draw(self, origin: str, wanted: int, rng: random.Random, parents: list[Arch], seen: set[str],
              plan: dict[str, Any]) -> int:
        """Add up to `wanted` new feasible proposals to `plan`; returns how many it found."""
        found = tries = 0
        while found < wanted and tries < wanted * self.settings.max_tries:
            tries += 1
            arch = self._propose(origin, rng, parents)
            if arch.hash in seen:
                plan["duplicates"] += 1
                continue
            seen.add(arch.hash)
            flops, params = self.cost(arch)
            entry: dict[str, Any] = {"hash": arch.hash, "arch": arch.to_dict(), "origin": origin,
                                     "flops": flops, "params": params}
            reason = self.constraints.violation(flops, params)
            if reason is None:
                start = time.perf_counter()
                entry["latency"] = self.latency.latency(arch)
                self.latency_seconds += time.perf_counter() - start
                reason = self.constraints.violation(flops, params, entry["latency"]["median_ms"])
            if reason is not None:
                plan["rejected"].append({**entry, "reason": reason})
                continue
            plan["planned"].append(entry)
            found += 1
        return found

    def _plan(self, generation: int, parents: list[Arch], seen: set[str]) -> dict[str, Any]:
        start = time.perf_counter()
        rng = random.Random(f"detnas-search:{self.settings.seed}:{generation}")
        plan: dict[str, Any] = {"type": "generation", "generation": generation, "planned": [], "rejected": [],
                                "duplicates": 0, "parents": [p.hash for p in parents]}
        for origin, wanted in self.settings.quotas(generation):
            missing = wanted - self._draw(origin, wanted, rng, parents, seen, plan)
            if missing and origin != "random":  # an operator that keeps producing seen archs yields to random
                self._draw("random", missing, rng, parents, seen, plan)
        plan["wall_s"] = time.perf_counter() - start
        if generation == 0 and not plan["planned"]:
            raise DetnasError(self._unsatisfiable(plan))
        return plan

    def _unsatisfiable(self, plan: dict[str, Any]) -> str:
        rejected = plan["rejected"]
        timed = [r["latency"]["median_ms"] for r in rejected if "latency" in r]
        fastest = f"fastest {self.latency.source} latency seen {min(timed):.3f}ms, " if timed else ""
        smallest = min((r["flops"] for r in rejected), default=0) / 1e6
        return (f"no architecture of space '{self.space.name}' met the constraints in {len(rejected)} random draws "
                f"({fastest}smallest FLOPs {smallest:.1f}M); relax --latency-target / --flops-max / --params-max")

    # -- evaluation ----------------------------------------------------------------------------------------
    def _evaluate(self, entry: dict[str, Any], generation: int, index: int) -> dict[str, Any]:
        arch = Arch.from_dict(entry["arch"], source=f"journal generation {generation}")
        start = time.perf_counter()
        metrics = {k: float(v) for k, v in self.accuracy.evaluate(arch).items()}
        timing = {"accuracy_s": time.perf_counter() - start, **getattr(self.accuracy, "last_timing", {})}
        return {"type": "candidate", "index": index, "generation": generation, "origin": entry["origin"],
                "hash": entry["hash"], "arch": entry["arch"], "metrics": metrics, "latency": entry["latency"],
                "flops": entry["flops"], "params": entry["params"],
                "fitness": self.constraints.fitness(metrics[self.constraints.metric], entry["latency"]["median_ms"]),
                "seed": self.settings.seed, "fingerprint": self.latency.fingerprint,
                "wall_s": timing["accuracy_s"], "timing": timing}

    def _parents(self, candidates: list[dict[str, Any]]) -> list[Arch]:
        ranked = rank_records(candidates, self.constraints.objective)[: self.settings.parents]
        return [Arch.from_dict(r["arch"], source="journal") for r in ranked]

    def run(self, resume: bool = False) -> list[dict[str, Any]]:
        """Run (or continue) every generation; returns the evaluated candidate records, in journal order."""
        done = self.team.lead(partial(self._open, resume))
        plans = {r["generation"]: r for r in done if r.get("type") == "generation"}
        evaluated = {r["hash"]: r for r in done if r.get("type") == "candidate"}
        candidates: list[dict[str, Any]] = []
        seen: set[str] = set()
        index = 0
        for generation in track(range(self.settings.generations), f"search: {self.settings.generations} generations"):
            if generation in plans:
                plan = plans[generation]
                seen.update(e["hash"] for e in plan["planned"] + plan["rejected"])
            else:
                plan = self.team.lead(partial(self._plan, generation, self._parents(candidates), seen))
                seen.update(e["hash"] for e in plan["planned"] + plan["rejected"])
                self._write(plan)
            if not plan["planned"]:
                self.log(f"generation {generation}: the space has no new feasible architecture left; stopping")
                break
            todo = [(index + i, e) for i, e in enumerate(plan["planned"]) if e["hash"] not in evaluated]
            self.log(f"generation {generation}: {len(plan['planned'])} planned, {len(plan['rejected'])} rejected, "
                     f"{plan['duplicates']} duplicates, {len(todo)} to evaluate")
            mine = []
            for i, entry in track(list(self.team.share(todo)), f"generation {generation}: candidates"):
                record = self._evaluate(entry, generation, i)
                if self.team.world == 1:
                    self._write(record)
                mine.append(record)
                self.log(f"  #{i} {entry['hash']} AP {record['metrics']['AP']:.4f} "
                         f"latency {entry['latency']['median_ms']:.3f}ms")
            if self.team.world > 1:
                for record in sorted(self.team.gather(mine), key=lambda r: r["index"]):
                    self._write(record)
                    evaluated[record["hash"]] = record
            evaluated.update((r["hash"], r) for r in mine)
            candidates.extend(evaluated[e["hash"]] for e in plan["planned"])
            index += len(plan["planned"])
        return candidates

    def finalize(self, candidates: list[dict[str, Any]], measure: LatencyEstimator) -> dict[str, Any] | None:
        """Re-measure the winner with a measuring oracle and journal whether it really meets the target."""
        best = best_record(candidates, self.constraints)
        if best is None or not self.team.is_leader:
            return None
        previous = [r for r in (self._journal.records if self._journal else []) if r.get("type") == "final"]
        if previous and previous[-1]["hash"] == best["hash"]:
            return previous[-1]
        if measure.source != "measured":
            raise DetnasError("the winner's latency must be re-measured, not predicted; give a measuring backend")
        stats = measure.latency(Arch.from_dict(best["arch"], source="journal"))
        target = self.constraints.latency_ms
        record = {"type": "final", "hash": best["hash"], "arch": best["arch"], "latency": stats,
                  "source": measure.source, "fingerprint": measure.fingerprint, "latency_target_ms": target,
                  "meets_target": None if target is None else stats["median_ms"] <= target}
        self._write(record)
        return record


def best_record(candidates: list[dict[str, Any]], constraints: Constraints) -> dict[str, Any] | None:
    """The winner: the top-ranked candidate, or for pareto the highest AP on the front within the target."""
    if not candidates:
        return None
    if constraints.objective != "pareto":
        return rank_records(candidates, constraints.objective)[0]
    front = pareto_front(candidates)
    if constraints.latency_ms is not None:
        front = [r for r in front if r["latency"]["median_ms"] <= constraints.latency_ms] or front
    return max(front, key=lambda r: (r["metrics"]["AP"], r["hash"]))

