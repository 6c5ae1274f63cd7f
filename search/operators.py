"""Variation operators on `Arch`: the three ways DetNAS' evolution proposes a new candidate."""

from __future__ import annotations

import random

from detnas.arch import Arch


def mutate(parent: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
    """Redraw each gene uniformly with probability `prob` (it may land on its old value, as in DetNAS)."""
    choices = parent.space.choices
    genes = tuple(rng.choice(choices) if rng.random() < prob else c for c in parent.choices)
    return Arch(parent.space, genes)


def crossover(a: Arch, b: Arch, rng: random.Random) -> Arch:
    """Uniform crossover: every gene comes from either parent with equal chance."""
    if a.space.digest != b.space.digest:
        raise ValueError(f"cannot cross archs of spaces '{a.space.name}' and '{b.space.name}'")
    return Arch(a.space, tuple(x if rng.random() < 0.5 else y for x, y in zip(a.choices, b.choices)))

