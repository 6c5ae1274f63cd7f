"""Several latency targets in one search: `--latency-target NAME=12ms` repeated, each with its latency source
(`--latency-profile NAME=FILE`, or the search's measuring backend when it has no profile).

A user ships one detector per device and cannot rerun the search per device: AP is evaluated once per candidate,
latency once per target, and each target gets its own winner. A single unnamed `--latency-target 12ms` stays the
one-target search it always was. A target given as `auto:F` (`NAME=auto:F`) is placed by the probe of its latency
source (`detnas.search.probe`), which the caller runs and hands in as `auto`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from detnas.errors import DetnasError
from detnas.search.probe import parse_target

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")  # it names files: best_arch.NAME.json


@dataclass(frozen=True)
class Target:
    """A named latency budget and where its latencies come from (a device profile, or measured here)."""

    name: str
    latency_ms: float
    profile: Path | None = None


def _split(text: str, flag: str, example: str) -> tuple[str | None, str]:
    name, sep, value = text.partition("=")
    if not sep:
        return None, text
    if not _NAME.match(name):
        raise DetnasError(f"{flag} '{text}': NAME '{name}' must be letters, digits, '-' or '_' (it names "
                          f"best_arch.NAME.json), e.g. {example}")
    return name, value


#: places an auto:F target: (its NAME, None for the unnamed one; F) -> milliseconds
AutoTarget = Callable[[str | None, float], float]


def parse_targets(values: Sequence[str], profiles: Sequence[str] = (),
                  auto: AutoTarget | None = None) -> tuple[float | None, Path | None, list[Target]]:
    """`--latency-target` and `--latency-profile` values -> (the one unnamed target, its profile, []) for a
    one-target search, or (None, None, named targets) for several; every mistake is one line naming the option.
    An `auto:F` value takes its milliseconds from `auto` (refused without it)."""

    def latency_ms(name: str | None, value: str) -> float:
        ms, fraction = parse_target(value)
        if fraction is None:
            assert ms is not None
            return ms
        if auto is None:
            raise DetnasError(f"--latency-target '{value}': auto:F is placed by a probe of the latency range "
                              "(`detnas search`); give a duration such as 12ms here")
        return auto(name, fraction)

    parsed = [(*_split(v, "--latency-target", "gpu=12ms"), v) for v in values]
    sources = [(*_split(p, "--latency-profile", "gpu=device.json"), p) for p in profiles]
    named = [p for p in parsed if p[0] is not None]
    if not named:
        if len(parsed) > 1:
            raise DetnasError("--latency-target given several times without names; name each, e.g. "
                              "--latency-target gpu=12ms --latency-target cpu=40ms")
        if any(s[0] is not None for s in sources) or len(sources) > 1:
            raise DetnasError("--latency-profile NAME=FILE names a target, but --latency-target has no NAME; give "
                              "--latency-target NAME=12ms, or one unnamed --latency-profile FILE")
        return (latency_ms(None, parsed[0][1]) if parsed else None, Path(sources[0][1]) if sources else None, [])
    if len(named) != len(parsed):
        raise DetnasError("--latency-target: name every target when there are several (NAME=12ms), or give one "
                          "unnamed target")
    names = [n for n, _, _ in named]
    for name in names:
        if names.count(name) > 1:
            raise DetnasError(f"--latency-target: NAME '{name}' is given twice; each target needs its own name")
    by_name: dict[str, Path] = {}
    for name, value, text in sources:
        if name is None:
            raise DetnasError(f"--latency-profile '{text}': with named targets say whose profile it is, e.g. "
                              f"--latency-profile {names[0]}=device.json")
        if name not in names:
            raise DetnasError(f"--latency-profile '{text}': '{name}' is not a --latency-target (they are "
                              f"{', '.join(names)}); name the target it predicts for")
        if name in by_name:
            raise DetnasError(f"--latency-profile: target '{name}' is given two profiles; keep one")
        by_name[name] = Path(value)
    return None, None, [Target(name, latency_ms(name, value), by_name.get(name)) for name, value, _ in named]
