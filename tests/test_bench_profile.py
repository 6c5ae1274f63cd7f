"""Device profile round trip on a tiny space through the CLI, the predictor API, and the refusal checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detnas.arch import Arch
from detnas.bench.fingerprint import Fingerprint
from detnas.bench.profile import PROFILE_FORMAT, block_inputs, load_profile, predict_latency
from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.space import SearchSpace, get_space
from detnas.supernet import ChildNet

TINY = {"name": "bench-tiny", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [2, 2], "head_width": 32,
        "choices": [0, 3]}


@pytest.fixture(scope="module")
def tiny_space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def profile_file(tiny_space_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profile") / "device.json"
    code = main(["bench", "profile", "--space", str(tiny_space_file), "--size", "32", "--runs", "4", "--rounds", "2",
                 "--warmup", "1", "--n-train", "6", "--n-test", "4", "--out", str(out)])
    assert code == 0
    return out


def test_block_inputs_match_a_real_forward() -> None:
    space = get_space("detnas-300m")
    seen: list[tuple[int, int, int]] = []
    net = ChildNet(Arch(space, (0,) * space.num_blocks)).eval()
    for block in net.blocks:
        block.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[1:])))
    with torch.no_grad():
        net(torch.rand(1, 3, 200, 232))
    expected = [(cin, *hw) for cin, _, _, hw in block_inputs(space, (200, 232))]
    assert seen == expected


def test_profile_contents_and_predictions(profile_file: Path, tiny_space_file: Path) -> None:
    space = get_space(str(tiny_space_file))
    profile = load_profile(profile_file, space, "ort")
    assert profile["format"] == PROFILE_FORMAT and profile["space_digest"] == space.digest
    table = profile["predictor"]["table"]
    assert len(table) == space.num_blocks and all(set(t) == {"0", "3"} for t in table)
    assert all(ms > 0 for t in table for ms in t.values()) and profile["fixed_ms"]["stem"] > 0
    assert [a["split"] for a in profile["archs"]].count("test") == 4 == profile["accuracy"]["n"]
    assert len({a["hash"] for a in profile["archs"]}) == 10  # held-out archs are never training archs
    for entry in profile["archs"]:
        arch = Arch.from_dict({"space": space.name, "choices": entry["choices"]})
        assert predict_latency(profile, arch) == pytest.approx(entry["predicted_ms"])
        assert entry["measured_ms"] > 0
    assert 0 <= profile["accuracy"]["within_10"] <= 1 and profile["build_seconds"] > 0


def test_profile_refuses_other_space_backend_fingerprint(profile_file: Path, tiny_space_file: Path) -> None:
    space = get_space(str(tiny_space_file))
    with pytest.raises(DetnasError, match="profile is for space 'bench-tiny'"):
        load_profile(profile_file, get_space("detnas-300m"), "ort")
    with pytest.raises(DetnasError, match="backend 'ort', not 'trt'"):
        load_profile(profile_file, space, "trt")
    stored = Fingerprint.from_dict(json.loads(profile_file.read_text())["fingerprint"])
    other = Fingerprint(**{**stored.to_dict(), "threads": 4})
    with pytest.raises(DetnasError, match="another device/environment.*threads: 1 != 4"):
        load_profile(profile_file, space, "ort", fingerprint=other)
    assert load_profile(profile_file, space, "ort", fingerprint=stored)["backend"] == "ort"
    assert load_profile(profile_file, get_space("detnas-300m"), "trt", force=True, fingerprint=other)


def test_load_profile_bad_files(tmp_path: Path) -> None:
    space = get_space("detnas-300m")
    with pytest.raises(DetnasError, match="cannot read latency profile"):
        load_profile(tmp_path / "missing.json", space, "ort")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DetnasError, match="malformed JSON"):
        load_profile(tmp_path / "bad.json", space, "ort")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DetnasError, match="not a detnas latency profile"):
        load_profile(tmp_path / "other.json", space, "ort")


def test_cli_predict_checks_space_and_fingerprint(profile_file: Path, tiny_space_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tiny_arch = json.dumps({"space": "bench-tiny", "choices": "0,3|3,0", "space_spec": TINY})
    assert main(["bench", "predict", "--profile", str(profile_file), "--arch", tiny_arch]) == 0
    assert main(["bench", "predict", "--profile", str(profile_file), "--arch", "COCO-FPN-300M"]) == 2
    assert "profile is for space 'bench-tiny'" in capsys.readouterr().err
    moved = tmp_path / "other-machine.json"
    data = json.loads(profile_file.read_text())
    data["fingerprint"]["cpu"] = "some other CPU"
    data["fingerprint_hash"] = Fingerprint.from_dict(data["fingerprint"]).hash
    moved.write_text(json.dumps(data))
    assert main(["bench", "predict", "--profile", str(moved), "--arch", tiny_arch]) == 2
    assert "another device/environment" in capsys.readouterr().err
    assert main(["bench", "predict", "--profile", str(moved), "--arch", tiny_arch, "--force"]) == 0


def test_profile_asks_for_more_archs_than_the_space_has(tiny_space_file: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "profile", "--space", str(tiny_space_file), "--n-train", "20", "--n-test", "30",
                 "--out", str(tmp_path / "p.json")])
    assert code == 2 and "has only 16 archs" in capsys.readouterr().err


def test_profile_at_network_scope_reports_the_detector_as_fixed_part() -> None:
    from detnas.bench.oracle import Protocol
    from detnas.bench.profile import build_profile
    from detnas.bench.result import Scope

    space = SearchSpace("bench-four", 8, (16, 32, 48, 64), (1, 2, 1, 1), 32, (0, 3))
    profile = build_profile(space, backend="torch", size=(64, 64), protocol=Protocol(warmup=1, runs=2), n_train=8,
                            n_test=2, rounds=1, scope=Scope.NETWORK, detector="retinanet")
    assert profile["scope"] == "network" and profile["detector"] == "retinanet"
    assert profile["fixed_ms"]["detector"] > 0 and len(profile["archs"]) == 10
