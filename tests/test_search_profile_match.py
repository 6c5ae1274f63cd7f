"""A device profile is refused by the search when it was timed otherwise than the search times: precision,
detector kind, scope, clock or input size, each difference named."""

from __future__ import annotations

import json

import pytest

from detnas.bench.fingerprint import collect_fingerprint
from detnas.bench.profile import PROFILE_FORMAT, DeviceProfile
from detnas.errors import DetnasError
from detnas.search.latency import ProfileLatency, Timing, profile_differences

from helpers.search import TINY

SEARCH = Timing(size=(64, 96), precision="fp32", scope="network+nms", detector="fpn")


def _json(**fields) -> dict:
    here = collect_fingerprint("cpu", 1)
    return {"format": PROFILE_FORMAT, "space": TINY.to_dict(), "space_digest": TINY.digest, "backend": "ort",
            "fingerprint_hash": here.hash, "fingerprint": here.to_dict(), "precision": "fp32", "scope": "network+nms",
            "detector": "fpn", "input_shape": [1, 3, 64, 96], "protocol": {"clock": "wall"}, **fields}


def _profile(**fields) -> DeviceProfile:
    return DeviceProfile.from_dict(_json(**fields), "device.json")


@pytest.mark.parametrize("fields, named", [
    ({"precision": "fp16"}, "precision fp16 (search: fp32)"),
    ({"detector": "retinanet"}, "detector retinanet (search: fpn)"),
    ({"scope": "network"}, "scope network (search: network+nms)"),
    ({"protocol": {"clock": "thread-cpu"}}, "clock thread-cpu (search: wall)"),
    ({"input_shape": [1, 3, 800, 1344]}, "input [1, 3, 800, 1344] (search: [1, 3, 64, 96])"),
    ({"precision": None}, "precision unrecorded (search: fp32)"),
])
def test_each_difference_is_named_and_refused(tmp_path, fields, named) -> None:
    assert profile_differences(_profile(**fields), SEARCH) == [named]
    path = tmp_path / "device.json"
    path.write_text(json.dumps(_json(**fields)))
    with pytest.raises(DetnasError, match="timed otherwise than the search times") as err:
        ProfileLatency(path, TINY, SEARCH)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert ProfileLatency(path, TINY, SEARCH, force=True).profile.backend == "ort"


def test_a_matching_profile_and_the_backbone_scope_ignore_the_detector(tmp_path) -> None:
    assert profile_differences(_profile(), SEARCH) == []
    backbone = Timing(size=(64, 96), scope="backbone", detector="retinanet")
    assert profile_differences(_profile(scope="backbone", detector=None), backbone) == []


def test_a_thread_cpu_search_takes_a_thread_cpu_profile_and_times_on_that_clock(tmp_path) -> None:
    """The search's clock is a setting like its scope: a profile timed on the same clock matches, and the oracle
    times (and caches) on it, so a wall-clock figure is never served to a thread-cpu search or the reverse."""
    import sqlite3

    from detnas.arch import sample_arch
    from detnas.search.latency import OracleLatency

    cpu = Timing(size=(64, 96), precision="fp32", scope="backbone", clock="thread-cpu", runs=3, warmup=1)
    assert profile_differences(_profile(scope="backbone", protocol={"clock": "thread-cpu"}), cpu) == []
    assert profile_differences(_profile(scope="backbone"), cpu) == ["clock wall (search: thread-cpu)"]
    arch = sample_arch(TINY, 0)
    for timing in (cpu, Timing(size=(64, 96), scope="backbone", runs=3, warmup=1)):
        assert OracleLatency(timing, tmp_path / "cache.sqlite").latency(arch).median_ms > 0
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        rows = sorted(r[0] for r in db.execute("SELECT protocol FROM latency"))
    assert len(rows) == 2 and "clock=thread-cpu" in rows[0] and "clock=wall" in rows[1], rows
