"""Search algorithms: what each generation draws, and nothing else.

`detnas.search.evolution.Search` owns the rest (drawing until enough new feasible archs are found, timing them,
the journal, resume and the torchrun team), so an algorithm is a small class registered by name:

    @ALGORITHMS.register("my-algorithm")
    class MyAlgorithm(SearchAlgorithm):
        def quotas(self, generation): ...
        def propose(self, origin, rng, parents): ...

and `--algorithm my-algorithm` (or `EvolutionSettings(algorithm="my-algorithm")`) runs it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from detnas.arch import Arch, sample_arch
from detnas.errors import DetnasError
from detnas.registry import Registry
from detnas.search.objectives import rank_records
from detnas.search.operators import crossover, mutate
from detnas.search.records import Candidate
from detnas.space import SearchSpace

if TYPE_CHECKING:
    from detnas.search.objectives import Constraints


class SearchAlgorithm:
    """Proposes architectures per generation from the candidates evaluated before it.

    `quotas(g)` says how many proposals of each origin generation g wants; `propose` draws one of an origin. An
    origin that keeps producing seen archs yields to 'random', which every algorithm must be able to draw."""

    def __init__(self, space: SearchSpace, settings: EvolutionSettings, constraints: Constraints) -> None:
        self.space, self.settings, self.constraints = space, settings, constraints

    def quotas(self, generation: int) -> list[tuple[str, int]]:
        return [("random", self.settings.population)]

    def parents(self, evaluated: Sequence[Candidate]) -> list[Arch]:
        """The archs proposals of the next generation derive from (none for a memoryless algorithm)."""
        return []

    def propose(self, origin: str, rng: random.Random, parents: Sequence[Arch]) -> Arch:
        return sample_arch(self.space, rng)


ALGORITHMS: Registry[type[SearchAlgorithm]] = Registry("search algorithm", "--algorithm")


@dataclass(frozen=True, kw_only=True)
class EvolutionSettings:
    """The knobs of the search; the defaults are DetNAS' (spec section 6). `algorithm` names a registered
    `SearchAlgorithm`; mutations + crossovers + randoms make a population of the evolution."""

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
        ALGORITHMS.get(self.algorithm)  # refuses an unregistered name, listing the registered ones
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

    @property
    def budget(self) -> int:
        """The most candidates the search times (population x generations): its latency bounds' Bonferroni count."""
        return self.population * self.generations


@ALGORITHMS.register("evolution")
class Evolution(SearchAlgorithm):
    """DetNAS' evolution: a random first generation, then mutations and uniform crossovers of the best
    candidates so far plus some random archs."""

    def quotas(self, generation: int) -> list[tuple[str, int]]:
        if generation == 0:
            return [("random", self.settings.population)]
        return [("mutation", self.settings.mutations), ("crossover", self.settings.crossovers),
                ("random", self.settings.randoms)]

    def parents(self, evaluated: Sequence[Candidate]) -> list[Arch]:
        return [c.arch for c in rank_records(evaluated, self.constraints.objective)[: self.settings.parents]]

    def propose(self, origin: str, rng: random.Random, parents: Sequence[Arch]) -> Arch:
        if origin == "mutation" and parents:
            return mutate(rng.choice(parents), rng, self.settings.mutation_prob)
        if origin == "crossover" and parents:
            a, b = rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
            return crossover(a, b, rng)
        return sample_arch(self.space, rng)


@ALGORITHMS.register("random")
class RandomSearch(SearchAlgorithm):
    """Random search on the evolution's budget (population x generations): the baseline the paper compares to."""
