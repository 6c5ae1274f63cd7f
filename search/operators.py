"""Variation operators on `Arch`: the three ways DetNAS' evolution proposes a new candidate.

They act on every gene of the space (`Arch.genes`, `gene_options`): a paper space's genes are its op choices, so
its candidates are drawn exactly as before; an elastic space's also carry widths, depths and detector genes.
"""

from __future__ import annotations

import random

from detnas.arch import Arch, gene_options


def mutate(parent: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
    """Redraw each gene uniformly with probability `prob` (it may land on its old value, as in DetNAS)."""
    options = gene_options(parent.space)
    genes = tuple(rng.choice(allowed) if rng.random() < prob else g for g, allowed in zip(parent.genes(), options))
    return Arch.from_genes(parent.space, genes)


def crossover(a: Arch, b: Arch, rng: random.Random) -> Arch:
    """Uniform crossover: every gene comes from either parent with equal chance."""
    if a.space.digest != b.space.digest:
        raise ValueError(f"cannot cross archs of spaces '{a.space.name}' and '{b.space.name}'")
    return Arch.from_genes(a.space, tuple(x if rng.random() < 0.5 else y for x, y in zip(a.genes(), b.genes())))
