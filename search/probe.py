"""The latency range a search can reach, measured before it starts: its fastest and slowest probe architectures.

A latency target only means something against the range the space spans on this device, at this scope and size,
and that range is not known until it is measured. `detnas search --probe` times the probes, prints them and stops;
`--latency-target auto:F` puts the target at the fraction F of the measured range and goes on searching (with
several named targets, `NAME=auto:F` at F of the range of that target's own latency source).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from detnas.arch import Arch
from detnas.errors import DetnasError
from detnas.search.interfaces import LatencyEstimator
from detnas.search.latency import fastest_probe
from detnas.space import SearchSpace

AUTO_PREFIX = "auto:"
logger = logging.getLogger(__name__)


def is_auto(text: str) -> bool:
    """Whether a `--latency-target` value (NAME= or not) asks for auto:F."""
    return text.partition("=")[2 if "=" in text else 0].startswith(AUTO_PREFIX)


def parse_target(text: str | None) -> tuple[float | None, float | None]:
    """(milliseconds, fraction) of `--latency-target`: '12ms' -> (12.0, None), 'auto:0.3' -> (None, 0.3)."""
    from detnas.search.latency import parse_latency_ms

    if text is None:
        return None, None
    if not text.startswith(AUTO_PREFIX):
        return parse_latency_ms(text), None
    try:
        fraction = float(text[len(AUTO_PREFIX):])
    except ValueError:
        fraction = -1.0
    if not 0.0 <= fraction <= 1.0:
        raise DetnasError(f"--latency-target {text}: auto:F takes a fraction F in [0, 1] of the measured range "
                          "between the fastest and slowest probe architectures, e.g. auto:0.5")
    return None, fraction


def slowest_probe(space: SearchSpace, cost_size: tuple[int, int]) -> list[Arch]:
    """Archs that bound the space's slowest latency in practice: one per uniform choice, and the arch with the
    most FLOPs per block (the mirror of `fastest_probe`; of an elastic space also the widest path over it)."""
    from detnas.flops import flops_table

    _, per_block, _ = flops_table(space, cost_size, 0)
    costliest = tuple(max(table, key=lambda c: (table[c], -c)) for table in per_block)
    probes = [Arch(space, (c,) * space.num_blocks) for c in space.choices] + [Arch(space, costliest)]
    if space.elastic:  # the widest path: largest widths, depths and detector genes on the costliest ops
        from detnas.arch import extreme_arch

        probes.append(extreme_arch(space, costliest, widest=True))
    return list({a.hash: a for a in probes}.values())


@dataclass(frozen=True)
class ProbeResult:
    """Every probe's median latency, and the fastest and slowest of them."""

    timed: tuple[tuple[Arch, float], ...]
    source: str  # measured or predicted
    seconds: float

    @property
    def fastest(self) -> tuple[Arch, float]:
        return min(self.timed, key=lambda t: (t[1], t[0].hash))

    @property
    def slowest(self) -> tuple[Arch, float]:
        return max(self.timed, key=lambda t: (t[1], t[0].hash))

    def target(self, fraction: float) -> float:
        """The latency at `fraction` of the range from the fastest (0) to the slowest (1) probe, in ms."""
        low, high = self.fastest[1], self.slowest[1]
        return round(low + fraction * (high - low), 3)

    def lines(self, name: str = "") -> list[str]:
        """What the probe found, as printed; `name`: the named target it was probed for ('' for a one-target
        search), which heads each line and goes into the suggested `--latency-target NAME=auto:F`."""
        (fast, fast_ms), (slow, slow_ms) = self.fastest, self.slowest
        head, flag = (f"target {name}: ", f"{name}=auto:") if name else ("", "auto:")
        return [f"{head}fastest probe: {fast.compact()} {fast_ms:.3f}ms ({self.source})",
                f"{head}slowest probe: {slow.compact()} {slow_ms:.3f}ms ({self.source})",
                f"{head}reachable range {fast_ms:.3f}-{slow_ms:.3f}ms, probed in {self.seconds:.0f} s; e.g. "
                f"--latency-target {flag}0.5 = {self.target(0.5):g}ms, {flag}0.25 = {self.target(0.25):g}ms"]


def probe_range(space: SearchSpace, estimator: LatencyEstimator, cost_size: tuple[int, int], what: str,
                log: Callable[[str], None] | None = None) -> ProbeResult:
    """Time the fastest and slowest probes with `estimator` (its cache serves repeats), saying first what is timed
    (`what`: scope, size, backend) and, once the first probe is done, how long the rest will take (to `log`, by
    default this module's logger)."""
    from detnas.progress import track

    say = log or logger.info
    archs = list({a.hash: a for a in fastest_probe(space, cost_size) + slowest_probe(space, cost_size)}.values())
    say(f"probe: timing {len(archs)} architectures of space '{space.name}' (one per uniform choice, the fewest and "
        f"the most FLOPs per block): {what}")
    start = time.perf_counter()
    timed = []
    for arch in track(archs, f"probe: {len(archs)} architectures"):
        began = time.perf_counter()
        median_ms = estimator.latency(arch).median_ms
        timed.append((arch, median_ms))
        if len(timed) == 1 and len(archs) > 1:
            took = time.perf_counter() - began
            say(f"probe: the first took {took:.1f} s, so about {took * (len(archs) - 1):.0f} s for the other "
                f"{len(archs) - 1} (repeats come from the latency cache)")
        say(f"probe: {arch.compact()} {median_ms:.3f}ms")
    return ProbeResult(tuple(timed), estimator.source, time.perf_counter() - start)
