"""The device profile record: profiles written before it existed (tests/data/profiles: a paper space at the backbone
and network scopes, a few-shot transfer and an elastic space, written by `detnas bench profile` before the record)
load, predict what they predicted and are written back byte for byte; an older profile without the later fields
loads; a missing or garbled field is one line naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detnas.arch import Arch
from detnas.bench.fingerprint import Fingerprint
from detnas.bench.profile import load_profile, predict_latency, read_profile, save_profile
from detnas.bench.profile_record import PROFILE_FORMAT, DeviceProfile, NearBand, TimedArch
from detnas.bench.stats import HeldOutReport, SharedPart
from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.space import SearchSpace

PROFILES = Path(__file__).parent / "data" / "profiles"
WRITTEN = sorted(PROFILES.glob("*.json"))


def test_the_written_profiles_are_all_here() -> None:
    assert [p.stem for p in WRITTEN] == ["backbone", "elastic", "fewshot", "network"]


@pytest.mark.parametrize("path", WRITTEN, ids=lambda p: p.stem)
def test_a_written_profile_round_trips_byte_for_byte(path: Path, tmp_path: Path) -> None:
    profile = read_profile(path)
    assert profile.to_dict() == json.loads(path.read_text()) and not profile.extra
    save_profile(profile, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    assert isinstance(profile.report, HeldOutReport) and isinstance(profile.fingerprint, Fingerprint)
    assert profile.fingerprint.hash == profile.fingerprint_hash and profile.space_name.startswith("record-")


def test_each_kind_of_profile_has_its_fields_typed() -> None:
    network, backbone, fewshot, elastic = (read_profile(PROFILES / f"{n}.json")
                                           for n in ("network", "backbone", "fewshot", "elastic"))
    assert network.scope == "network" and network.detector == "retinanet" and network.input_shape == (1, 3, 64, 64)
    assert isinstance(network.shared_part, SharedPart) and isinstance(network.backbone_report, HeldOutReport)
    assert network.shared_part.median_ms == network.fixed_ms["detector"]
    assert backbone.detector is None and backbone.shared_part is None and backbone.clock == "wall"
    assert isinstance(backbone.near, NearBand) and backbone.near.band == 0.15
    assert backbone.random_report is not None and backbone.random_report.n == 5  # --n-random 5
    assert fewshot.transfer["archs"] == 8 and fewshot.near is None and "random_report" not in fewshot.to_dict()
    assert elastic.predictor_choice["chosen"] in elastic.predictor_choice["alternatives"]


def test_each_timed_arch_is_a_record_with_the_fields_its_builder_wrote() -> None:
    """Rows of every kind of profile read into `TimedArch`: the fit's own fields always, the scope's and the
    builder's (backbone beside a network, an elastic path's size, the random and few-shot rows' split halves)
    where they were written; 57 rows over the four profiles."""
    network, backbone, fewshot, elastic = (read_profile(PROFILES / f"{n}.json")
                                           for n in ("network", "backbone", "fewshot", "elastic"))
    rows = [a for p in (network, backbone, fewshot, elastic) for a in p.archs]
    assert len(rows) == 57 and all(isinstance(a, TimedArch) and a.measured_ms > 0 and a.predicted_ms for a in rows)
    assert all(a.backbone_ms and a.measured_ms > a.backbone_ms for a in network.archs if a.split != "random")
    assert {a.size for a in elastic.archs if a.split != "random"} <= {(64, 64), (128, 128)}
    assert all(a.size is None and a.backbone_ms is None for a in backbone.archs)
    assert {a.split for a in fewshot.archs} == {"loo"} and all(len(a.halves_ms) == 2 for a in fewshot.archs)
    assert [a.held_out for a in backbone.archs].count(False) == sum(a.split == "train" for a in backbone.archs) > 0


def test_a_timed_arch_keeps_fields_it_does_not_know() -> None:
    row = {"choices": "0|1", "hash": "h", "split": "test", "measured_ms": 1.5, "predicted_ms": 1.4, "energy_mj": 3.0}
    timed = TimedArch.from_dict(row)
    assert timed.extra == {"energy_mj": 3.0} and timed.to_dict() == row and timed.held_out


@pytest.mark.parametrize("name", ["backbone", "network", "elastic"])
def test_a_written_profile_still_predicts_what_it_predicted(name: str) -> None:
    path = PROFILES / f"{name}.json"
    profile = read_profile(path)
    space = SearchSpace.from_dict(profile.space)
    loaded = load_profile(path, space, "torch", fingerprint=profile.fingerprint_hash)
    rows = [a for a in loaded.archs if a.split in ("train", "test", "random")]
    assert len(rows) >= 10
    for row in rows:
        arch = Arch.from_dict({"space": space.name, "choices": row.choices, "space_spec": profile.space})
        assert predict_latency(loaded, arch) == pytest.approx(row.predicted_ms)


#: what the first profiles held (before the detector, the held-out report and the random sets were written)
FIRST = {"format": PROFILE_FORMAT, "space": {"name": "first"}, "space_digest": "abc", "backend": "ort",
         "variant": "ort-cpu", "precision": "fp32", "scope": "backbone", "input_shape": [1, 3, 224, 224],
         "protocol": {"warmup": 3, "runs": 20, "rounds": 10, "threads": 1, "device": "cpu", "clock": "wall"},
         "fingerprint_hash": "0123456789ab", "fixed_ms": {"stem": 0.1}, "blocks_cv": [[0.01, 0.02]],
         "archs": [{"choices": "0", "hash": "h", "split": "test", "measured_ms": 1.0, "predicted_ms": 1.1}],
         "accuracy": {"mape": 3.0}, "accuracy_uncorrected": {"mape": 9.0}, "build_seconds": 12.5}


def test_an_older_profile_loads_and_keeps_the_fields_it_had() -> None:
    profile = DeviceProfile.from_dict(FIRST, "first.json")
    assert profile.report is None and profile.near is None and profile.detector is None and profile.fingerprint is None
    assert profile.extra == {"accuracy": {"mape": 3.0}, "accuracy_uncorrected": {"mape": 9.0}}
    assert profile.to_dict() == {**FIRST, "detector": None}  # the header's detector is written, null: unrecorded


@pytest.mark.parametrize("field, value, message", [
    ("backend", None, "field 'backend' is missing"),
    ("space_digest", 7, "field 'space_digest' is not a digest"),
    ("input_shape", "1x3x224x224", "field 'input_shape' is not an input shape"),
    ("fingerprint", {"cpu": "x"}, "field 'fingerprint' is not a device fingerprint"),
    ("report", {"n": 3}, "field 'report' is not a held-out report"),
    ("near", {"band": 0.15}, "field 'near' is not a near-target band"),
    ("archs", {"choices": "0"}, "field 'archs' is not a list of timed archs"),
    ("archs", [{"choices": "0", "split": "test", "measured_ms": 1.0}], "field 'archs' is not a list of timed archs"),
    ("archs", [{"choices": "0", "hash": "h", "split": "test", "measured_ms": "1 ms"}],
     "field 'archs' is not a list of timed archs"),
    ("fixed_ms", {"stem": "fast"}, "field 'fixed_ms' is not a mapping of fixed parts to ms"),
    ("build_seconds", True, "field 'build_seconds' is not a number of seconds"),
    ("format", "detnas-latency-profile/0", "not a detnas latency profile (field 'format'"),
])
def test_a_missing_or_garbled_field_is_one_line_naming_file_and_field(tmp_path, capsys, field, value, message) -> None:
    data = json.loads((PROFILES / "backbone.json").read_text())
    if value is None:
        del data[field]
    else:
        data[field] = value
    path = tmp_path / "device.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DetnasError, match=message.replace("(", r"\(")) as err:
        read_profile(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert main(["bench", "predict", "--profile", str(path), "--arch", "COCO-FPN-300M"]) == 2
    err_text = capsys.readouterr().err
    assert len(err_text.strip().splitlines()) == 1 and message in err_text and str(path) in err_text, err_text
