"""The probe of a search's reachable latency range (`detnas search --probe`, `--latency-target auto:F`) on a fake
latency estimator: what it times, what it says first, and where auto:F puts the target."""

from __future__ import annotations

import pytest

from detnas.errors import DetnasError
from detnas.flops import count_flops
from detnas.search.latency import fastest_probe
from detnas.search.probe import is_auto, parse_target, probe_range, slowest_probe
from detnas.search.targets import Target, parse_targets

from helpers.search import TINY, FakeLatency


def test_parse_target() -> None:
    assert parse_target(None) == (None, None)
    assert parse_target("12ms") == (12.0, None)
    assert parse_target("auto:0.25") == (None, 0.25) and parse_target("auto:1") == (None, 1.0)
    for bad in ("auto:1.5", "auto:-0.1", "auto:half"):
        with pytest.raises(DetnasError, match=r"auto:F takes a fraction F in \[0, 1\]"):
            parse_target(bad)


def test_slowest_probe_holds_the_costliest_arch() -> None:
    probes = slowest_probe(TINY, (64, 64))
    uniform = {(c,) * TINY.num_blocks for c in TINY.choices}
    costliest = [a for a in probes if a.choices not in uniform]
    assert len(costliest) <= 1 and len(probes) == len(uniform) + len(costliest)
    most = max(count_flops(a, (64, 64)) for a in probes)
    assert all(count_flops(a, (64, 64)) <= most for a in fastest_probe(TINY, (64, 64)))


def test_probe_says_what_it_times_and_how_long_then_the_range() -> None:
    latency, said = FakeLatency(), []
    result = probe_range(TINY, latency, (64, 64), "network+nms at 64x96, ort on cpu", said.append)
    timed = {a.hash for a in fastest_probe(TINY, (64, 64)) + slowest_probe(TINY, (64, 64))}
    assert set(latency.calls) == timed and len(result.timed) == len(timed), "each probe timed once"
    assert said[0].startswith(f"probe: timing {len(timed)} architectures of space 'search-test-tiny'")
    assert said[0].endswith("network+nms at 64x96, ort on cpu")
    assert said[1].startswith("probe: the first took ") and f"for the other {len(timed) - 1}" in said[1]
    (fast, fast_ms), (slow, slow_ms) = result.fastest, result.slowest
    assert fast_ms == min(ms for _, ms in result.timed) and slow_ms == max(ms for _, ms in result.timed)
    assert fast_ms < slow_ms and result.target(0) == round(fast_ms, 3) and result.target(1) == round(slow_ms, 3)
    assert result.target(0.5) == pytest.approx((fast_ms + slow_ms) / 2, abs=1e-3)
    lines = result.lines()
    assert lines[0] == f"fastest probe: {fast.compact()} {fast_ms:.3f}ms (measured)"
    assert lines[1] == f"slowest probe: {slow.compact()} {slow_ms:.3f}ms (measured)"
    assert f"auto:0.5 = {result.target(0.5):g}ms" in lines[2]


def test_auto_targets_are_placed_by_the_caller_named_or_not() -> None:
    """parse_targets hands each auto:F to `auto` with its target's name (None for the one unnamed target), after
    every other check; without `auto` it is refused in one line."""
    asked = []

    def auto(name, fraction):
        asked.append((name, fraction))
        return 7.5

    assert parse_targets(["auto:0.5"], auto=auto) == (7.5, None, []) and asked == [(None, 0.5)]
    _, _, targets = parse_targets(["gpu=auto:0.25", "cpu=40ms"], ["gpu=gpu.json"], auto=auto)
    assert targets == [Target("gpu", 7.5, __import__("pathlib").Path("gpu.json")), Target("cpu", 40.0)]
    assert asked[-1] == ("gpu", 0.25)
    with pytest.raises(DetnasError, match="NAME 'gpu' is given twice"):
        parse_targets(["gpu=auto:0.5", "gpu=auto:0.1"], auto=auto)
    with pytest.raises(DetnasError, match="auto:F takes a fraction F"):
        parse_targets(["gpu=auto:2"], auto=auto)
    with pytest.raises(DetnasError, match="auto:F is placed by a probe"):
        parse_targets(["auto:0.5"])
    assert is_auto("auto:0.5") and is_auto("gpu=auto:1") and not is_auto("12ms") and not is_auto("gpu=12ms")


def test_probe_lines_of_a_named_target() -> None:
    result = probe_range(TINY, FakeLatency(), (64, 64), "backbone", lambda line: None)
    lines = result.lines("gpu")
    assert all(line.startswith("target gpu: ") for line in lines)
    assert f"--latency-target gpu=auto:0.5 = {result.target(0.5):g}ms" in lines[2]
