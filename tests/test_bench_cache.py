"""The SQLite latency cache: round trip, key separation, list/clear, and two processes writing at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from detnas.bench.cache import CacheKey, LatencyCache
from detnas.bench.fingerprint import Fingerprint
from detnas.bench.result import LatencyResult
from detnas.bench.stats import summarize

FINGERPRINT = Fingerprint("cpu model", "none", "none", "unavailable", "1.0", "2.0", "cpu model", 1)


def _result(median: float, label: str = "a") -> LatencyResult:
    return LatencyResult(
        stats=summarize([median * 0.99, median, median * 1.01]), backend="ort", precision="fp32", batch=1,
        input_shape=(1, 3, 64, 64), scope="backbone", warmup=2, threads=1, source=f"arch:{label}", label=label,
        fingerprint=FINGERPRINT,
    )


def _key(source: str, fingerprint: str = FINGERPRINT.hash, precision: str = "fp32") -> CacheKey:
    return CacheKey(source, (1, 3, 64, 64), 1, precision, "ort:cpu", "backbone", fingerprint)


def test_round_trip_and_key_fields(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "c.sqlite")
    cache.put(_key("arch:a"), _result(5.0))
    hit = cache.get(_key("arch:a"))
    assert hit is not None and hit.stats.median_ms == 5.0 and hit.fingerprint == FINGERPRINT
    assert cache.get(_key("arch:a", precision="fp16")) is None
    assert cache.get(_key("arch:a", fingerprint="other")) is None
    cache.put(_key("arch:a"), _result(6.0))  # re-measuring replaces, never duplicates
    assert [e.median_ms for e in cache.entries()] == [6.0]


def test_clear_all_or_one_fingerprint(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "c.sqlite")
    cache.put(_key("arch:a"), _result(1.0))
    cache.put(_key("arch:b", fingerprint="f2"), _result(2.0, "b"))
    assert cache.clear(fingerprint="f2") == 1
    assert [e.source for e in cache.entries()] == ["arch:a"]
    assert cache.clear() == 1
    assert cache.entries() == []


def _writer(path: str, worker: int, count: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    cache = LatencyCache(path)
    barrier.wait()  # both processes start writing at the same moment
    for i in range(count):
        cache.put(_key(f"arch:{worker}-{i}"), _result(1.0 + i, f"{worker}-{i}"))


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    count = 40
    workers = [ctx.Process(target=_writer, args=(path, w, count, barrier)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0]
    cache = LatencyCache(path)
    assert len(cache.entries()) == 2 * count
    for w in range(2):
        for i in range(count):
            hit = cache.get(_key(f"arch:{w}-{i}"))
            assert hit is not None and hit.stats.median_ms == 1.0 + i


def test_a_measurement_is_served_only_to_its_own_protocol_and_inputs(tmp_path: Path) -> None:
    """Runs, warm-up, clock and the timed pixels join the key: a 3-run smoke measurement is not served to a 30-run
    request, nor one of other images; a hit names how it was measured and that it came from the cache."""
    import torch
    from torch import nn

    from detnas.bench.oracle import TimingProtocol, measure_module

    cache = LatencyCache(tmp_path / "c.sqlite")
    module = nn.Conv2d(3, 4, 3).eval()
    images = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))]

    def measure(runs: int = 3, warmup: int = 1, clock: str = "wall", inputs: list = images) -> object:
        protocol = TimingProtocol(warmup=warmup, runs=runs, clock=clock)
        return measure_module(module, inputs, backend="torch", protocol=protocol, source="conv", cache=cache)

    smoke = measure()
    assert smoke.stats.n == 3 and "cache" not in smoke.details
    assert smoke.details["measured"] == {"warmup": 1, "runs": 3, "clock": "wall",
                                         "inputs_digest": smoke.details["measured"]["inputs_digest"]}
    hit = measure()
    assert hit.stats == smoke.stats and hit.details["cache"]["path"] == str(cache.path)
    assert hit.details["measured"]["runs"] == 3, "a cached figure must say how it was measured"
    thirty = measure(runs=30)
    assert thirty.stats.n == 30 and "cache" not in thirty.details, "a 3-run entry was served to a 30-run request"
    assert "cache" not in measure(warmup=4).details
    assert "cache" not in measure(clock="thread-cpu").details
    other = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))]
    fresh = measure(inputs=other)
    assert "cache" not in fresh.details
    assert fresh.details["measured"]["inputs_digest"] != smoke.details["measured"]["inputs_digest"]
    assert sorted(e.protocol for e in cache.entries()) == sorted(
        ["warmup=1,runs=3,clock=wall", "warmup=1,runs=30,clock=wall", "warmup=4,runs=3,clock=wall",
         "warmup=1,runs=3,clock=thread-cpu", "warmup=1,runs=3,clock=wall"])


def test_an_older_cache_file_gains_the_new_columns_and_its_rows_are_never_served(tmp_path: Path) -> None:
    import json
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the first release's table, with one row keyed without protocol or inputs
        db.execute("CREATE TABLE latency (key TEXT PRIMARY KEY, source TEXT NOT NULL, label TEXT NOT NULL, "
                   "input_shape TEXT NOT NULL, batch INTEGER NOT NULL, precision TEXT NOT NULL, backend TEXT NOT NULL, "
                   "scope TEXT NOT NULL, fingerprint TEXT NOT NULL, median_ms REAL NOT NULL, cv REAL NOT NULL, "
                   "created REAL NOT NULL, result TEXT NOT NULL)")
        old_digest = __import__("hashlib").sha256(json.dumps(
            ["arch:a", [1, 3, 64, 64], 1, "fp32", "ort:cpu", "backbone", FINGERPRINT.hash]).encode()).hexdigest()
        db.execute("INSERT INTO latency VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (old_digest, "arch:a", "a", "1x3x64x64", 1, "fp32", "ort:cpu", "backbone", FINGERPRINT.hash, 5.0,
                    0.01, 0.0, json.dumps(_result(5.0).to_dict())))
    cache = LatencyCache(path)
    assert [(e.source, e.protocol) for e in cache.entries()] == [("arch:a", "")]
    assert cache.get(CacheKey("arch:a", (1, 3, 64, 64), 1, "fp32", "ort:cpu", "backbone", FINGERPRINT.hash,
                              protocol="warmup=2,runs=3,clock=wall", inputs="abc")) is None


def test_fresh_timing_of_several_archs_is_measured_in_rounds_and_never_cached(tmp_path: Path) -> None:
    """The winner's check: every arch is prepared anew and timed in interleaved rounds, its details say so, and a
    cache that holds the arch's search-time figure is neither read nor written."""
    from detnas.arch import sample_arch
    from detnas.bench.oracle import TimingProtocol, measure_arch, measure_archs_fresh

    from helpers.search import TINY

    cache = LatencyCache(tmp_path / "c.sqlite")
    archs = [sample_arch(TINY, 0), sample_arch(TINY, 1)]
    protocol = TimingProtocol(warmup=1, runs=3)
    searched = measure_arch(archs[0], size=(32, 32), backend="torch", protocol=protocol, cache=cache)
    fresh = measure_archs_fresh(archs, size=(32, 32), rounds=3, backend="torch", protocol=protocol)
    assert [r.source for r in fresh] == [f"arch:{a.hash}" for a in archs]
    assert all(r.stats.n == 9 and "cache" not in r.details for r in fresh)
    assert fresh[0].details["measured"]["fresh_rounds"] == 3 and fresh[0].details["measured"]["runs"] == 9
    assert fresh[0].samples_ms != searched.samples_ms and len(cache.entries()) == 1
