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
