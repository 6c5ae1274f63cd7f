"""Device profiles of an elastic whole-detector space: the part model's features follow every gene (op and width
per block, skipped blocks free, FPN width, head, proposals, input size), the fit recovers a known device, the CLI
builds a profile the search can use, old op-choice profiles and mismatched ones are refused in one line, and the
few-shot transfer carries an elastic profile to another device."""

from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from detnas.arch import Arch, DetectorPath, extreme_arch, sample_arch
from detnas.bench.elastic_predictor import ElasticPredictor, columns
from detnas.bench.profile import PROFILE_FORMAT, choose_elastic_archs, load_profile, predict_latency
from detnas.cli.main import main
from detnas.detection.cost import detector_macs
from detnas.errors import DetnasError
from detnas.flops import width_table
from detnas.search.latency import ProfileLatency, Timing, check_target_reachable
from detnas.space import SearchSpace

# input sizes 416 / 800 at a base of 128 px: paths at 64 and 128 px
SPEC = {"name": "bench-elastic-tiny", "stem_width": 8, "stage_widths": [16, 32, 64, 128], "stage_depths": [2, 2, 1, 1],
        "head_width": 32, "choices": [0, 3], "width_multipliers": [0.5, 1.0], "min_depths": [1, 1, 1, 1],
        "detector": {"fpn_widths": [8, 16], "head_convs": [1, 2], "head_fc": [16, 32], "proposals": [10, 20],
                     "input_sizes": [416, 800]}}
SPACE = SearchSpace.from_dict(SPEC)
BASE = (128, 128)
SCOPE = "network+nms"


def _device(arch: Arch, backbone: float = 40.0, head: float = 10.0, rois: float = 0.05, const: float = 0.7) -> float:
    """A synthetic device: ms linear in the parts' MACs (at the path's own size), the RoIs and a fixed cost."""
    m = detector_macs(arch, "fpn", 81, base=BASE)
    return backbone * m.backbone / 1e9 + head * (m.fpn + m.dense_head + m.box_head) / 1e9 + rois * m.rois + const


def _paths(count: int, seed: int) -> list[Arch]:
    rng = random.Random(seed)
    return list({a.hash: a for a in (sample_arch(SPACE, rng) for _ in range(count))}.values())


def test_features_follow_every_gene_and_skipped_blocks_cost_nothing() -> None:
    unfitted = ElasticPredictor(SPACE.digest, SCOPE, "fpn", 81, BASE, "macs", "full", (0.0,) * 12)
    names = columns(SPACE, SCOPE, "fpn")
    assert names == ("stage1", "stage2", "stage3", "stage4", "blocks", "pixels", "neck", "neck_px", "box", "rois",
                     "roi_px", "const")
    full = Arch(SPACE, (3, 3, 3, 3, 3, 3), (1.0,) * 6, (2, 2, 1, 1), DetectorPath(16, 2, 32, 20, 800))
    shallow = Arch(SPACE, (3, 3, 3, 3, 3, 3), (1.0,) * 6, (1, 2, 1, 1), DetectorPath(16, 2, 32, 20, 800))
    row, cut = unfitted.row(full), unfitted.row(shallow)
    table = width_table(SPACE, BASE)
    assert row[0] - cut[0] == pytest.approx(table[1][3, 1.0] / 1e9) and row[4] - cut[4] == 1  # block 2 skipped: free
    assert np.array_equal(row[1:4], cut[1:4]) and np.array_equal(row[5:], cut[5:])
    narrow = Arch(SPACE, (3, 3, 3, 3, 3, 3), (0.5,) * 6, (2, 2, 1, 1), DetectorPath(16, 2, 32, 20, 800))
    assert (unfitted.row(narrow)[:4] < row[:4]).all()  # the width gene moves every stage's cost
    small = Arch(SPACE, (3, 3, 3, 3, 3, 3), (1.0,) * 6, (2, 2, 1, 1), DetectorPath(16, 2, 32, 20, 416))
    assert unfitted.row(small)[5] == pytest.approx(row[5] / 4)  # 64 px instead of 128: a quarter of the pixels
    for genes, moved in (((8, 2, 32, 20, 800), {"neck", "neck_px", "box", "roi_px"}), ((16, 1, 32, 20, 800), {"box"}),
                         ((16, 2, 16, 20, 800), {"box"}), ((16, 2, 32, 10, 800), {"box", "rois", "roi_px"})):
        other = unfitted.row(Arch(SPACE, full.choices, full.widths, full.depths, DetectorPath(*genes)))
        assert {n for n, a, b in zip(names, row, other) if a != b} == moved, genes
    macs = detector_macs(full, "fpn", 81, base=BASE)
    assert sum(row[:4]) * 1e9 == pytest.approx(macs.backbone - _stem(BASE), rel=1e-9)
    assert row[6] * 1e9 == pytest.approx(macs.fpn + macs.dense_head) and row[9] * 1e3 == macs.rois
    assert row[7] * 1e9 == 16 * 128 * 128 and row[10] * 1e9 == pytest.approx(macs.rois * 16 * 49)


def _stem(hw: tuple[int, int]) -> int:
    from detnas.flops import flops_table

    return flops_table(SPACE, hw, 0)[0]


def test_fit_recovers_a_device_from_measured_paths_and_predicts_held_out_ones() -> None:
    train, held_out = _paths(24, 0), _paths(40, 1)
    predictor, = [ElasticPredictor.fit(SPACE, train, [_device(a) for a in train], scope=SCOPE, detector="fpn",
                                       num_classes=81, base=BASE)]
    errors = [abs(predictor.predict(a) / _device(a) - 1) for a in held_out]
    assert max(errors) < 1e-6, max(errors)
    fits = ElasticPredictor.fit_candidates(SPACE, train, [_device(a) for a in train], scope=SCOPE, detector="fpn",
                                           num_classes=81, base=BASE)
    assert set(fits) == {"macs/full", "macs/parts", "macs/coarse"}
    again = ElasticPredictor.from_dict(json.loads(json.dumps(predictor.to_dict())))
    assert again.predict(held_out[0]) == pytest.approx(predictor.predict(held_out[0]))
    with pytest.raises(DetnasError, match="needs at least 9 measured paths, got 4"):
        ElasticPredictor.fit(SPACE, train[:4], [1.0] * 4, scope=SCOPE, detector="fpn", num_classes=81, base=BASE)


def test_chosen_archs_span_the_cost_range() -> None:
    cost = ElasticPredictor(SPACE.digest, SCOPE, "fpn", 81, BASE, "macs", "coarse",
                            (1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0)).predict
    train, test = choose_elastic_archs(SPACE, cost, 8, 6, random.Random(0))
    assert len({a.hash for a in train + test}) == 14
    narrowest, widest = test[0], test[1]
    assert narrowest == extreme_arch(SPACE, narrowest.choices, widest=False) and narrowest.detector.input_size == 416
    assert widest == extreme_arch(SPACE, widest.choices, widest=True)
    assert min(map(cost, train + test)) == cost(narrowest) and max(map(cost, train + test)) == cost(widest)


def test_the_transfer_carries_an_elastic_profile_to_a_device_with_other_part_speeds() -> None:
    train = _paths(24, 0)
    reference = ElasticPredictor.fit(SPACE, train, [_device(a) for a in train], scope=SCOPE, detector="fpn",
                                     num_classes=81, base=BASE)
    shots = _paths(10, 2)

    def there(a: Arch) -> float:  # backbone 3x slower, head 1.5x, a larger fixed cost
        return _device(a, backbone=120.0, head=15.0, rois=0.075, const=2.0)

    moved, scored = ElasticPredictor.transfer(reference, SPACE, shots, [there(a) for a in shots])
    assert set(scored) == {"scales", "one-scale", "refit"} and min(scored.values()) < 1.0
    held_out = [a for a in _paths(40, 3) if a.hash not in {s.hash for s in shots}]
    assert max(abs(moved.predict(a) / there(a) - 1) for a in held_out) < 0.02
    one_scale = max(abs(reference.predict(a) * there(held_out[0]) / reference.predict(held_out[0]) / there(a) - 1)
                    for a in held_out)
    assert one_scale > 0.05  # the device really moves the parts apart: one scale does not carry it


@pytest.fixture(scope="module")
def elastic_profile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A profile of the tiny elastic space at network+nms (torch backend, few runs) built by the CLI."""
    root = tmp_path_factory.mktemp("elastic")
    space_file = root / "space.json"
    space_file.write_text(json.dumps(SPEC))
    out = root / "device.json"
    with redirect_stdout(io.StringIO()) as printed:
        code = main(["bench", "profile", "--space", str(space_file), "--backend", "torch", "--scope", SCOPE,
                     "--size", "128", "--runs", "4", "--rounds", "2", "--warmup", "1", "--n-train", "10",
                     "--n-test", "4", "--n-random", "5", "--out", str(out)])
    assert code == 0, printed.getvalue()
    return out, space_file, printed.getvalue()


def test_cli_profile_of_an_elastic_space_predicts_every_gene(elastic_profile) -> None:
    out, _, printed = elastic_profile
    profile = json.loads(out.read_text())
    assert profile["predictor"]["kind"] == ElasticPredictor.KIND and profile["input_shape"] == [1, 3, 128, 128]
    assert len(profile["predictor"]["lut"]) == SPACE.num_blocks and len(profile["predictor"]["lut"][0]) == 4
    assert profile["predictor_choice"]["chosen"] in profile["predictor_choice"]["alternatives"]
    splits = [a["split"] for a in profile["archs"]]
    assert splits.count("train") == 10 and splits.count("test") == 4 and splits.count("random") == 5
    assert {tuple(a["size"]) for a in profile["archs"] if "size" in a} <= {(64, 64), (128, 128)}
    assert "random archs" in printed and profile["report"]["n"] == 4
    loaded = load_profile(out, SPACE, "torch")
    small, large = (Arch(SPACE, (0,) * 6, (), (), DetectorPath(16, 2, 32, 20, size)) for size in (416, 800))
    assert np.isfinite(predict_latency(loaded, small)) and predict_latency(loaded, small) != predict_latency(loaded, large)
    with pytest.raises(DetnasError, match="predicts a path with its genes"):
        predict_latency(loaded, (0,) * 6)


def test_search_uses_an_elastic_profile_and_refuses_a_mismatched_one(elastic_profile, tmp_path) -> None:
    out, _, _ = elastic_profile
    timing = Timing(size=BASE, backend="torch", scope=SCOPE, detector="fpn")
    latency = ProfileLatency(out, SPACE, timing)
    arch = sample_arch(SPACE, 0)
    assert latency.latency(arch).median_ms == pytest.approx(predict_latency(latency.profile, arch))
    fastest, fastest_ms = check_target_reachable(SPACE, 1e6, latency, (128, 128))
    assert fastest_ms == pytest.approx(predict_latency(latency.profile, fastest))
    for timed, named in ((Timing(size=(256, 256), backend="torch", scope=SCOPE, detector="fpn"), "input"),
                         (Timing(size=BASE, backend="torch", scope="network", detector="fpn"), r"scope network\+nms \(search: network\)")):
        with pytest.raises(DetnasError, match=named) as err:
            ProfileLatency(out, SPACE, timed)
        assert "\n" not in str(err.value)
    other = SearchSpace.from_dict({**SPEC, "name": "bench-elastic-other", "width_multipliers": [0.5, 1.5]})
    with pytest.raises(DetnasError, match="build a profile for this space") as err:
        ProfileLatency(out, other, timing)
    assert "\n" not in str(err.value)


def test_an_op_choice_profile_of_an_elastic_space_is_refused(elastic_profile, tmp_path) -> None:
    """What today's profiles were: a table by op choice only, blind to widths, depths and the detector genes."""
    out, _, _ = elastic_profile
    old = json.loads(out.read_text())
    old["predictor"] = {"kind": "lut+stage-linear+choice-count", "table": [{"0": 1.0, "3": 2.0}] * 6,
                        "stage_of": [0, 0, 1, 1, 2, 3], "fixed_ms": 0.0, "coef": [1.0] * 6}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    with pytest.raises(DetnasError, match="predicts op choices only") as err:
        ProfileLatency(path, SPACE, Timing(size=BASE, backend="torch", scope=SCOPE, detector="fpn")).latency(
            sample_arch(SPACE, 0))
    assert "\n" not in str(err.value)


def test_cli_fewshot_from_an_elastic_reference(elastic_profile, tmp_path) -> None:
    out, _, _ = elastic_profile
    fewshot = tmp_path / "fewshot.json"
    with redirect_stdout(io.StringIO()) as printed:
        code = main(["bench", "profile", "--from", str(out), "--archs", "6", "--backend", "torch", "--runs", "4",
                     "--rounds", "2", "--warmup", "1", "--out", str(fewshot)])
    assert code == 0, printed.getvalue()
    profile = json.loads(fewshot.read_text())
    assert profile["predictor"]["kind"] == ElasticPredictor.KIND and profile["transfer"]["archs"] == 6
    assert profile["transfer"]["rule"] in ("scales", "one-scale", "refit") and profile["report"]["n"] == 6
    assert "chosen by leave-one-out" in printed.getvalue()
    loaded = load_profile(fewshot, SPACE, "torch", fingerprint=profile["fingerprint_hash"])
    assert predict_latency(loaded, sample_arch(SPACE, 1)) > 0


def test_a_reference_of_another_space_is_refused(elastic_profile, tmp_path, capsys) -> None:
    out, _, _ = elastic_profile
    data = json.loads(out.read_text())
    data["space_digest"] = "0" * 12
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "format": PROFILE_FORMAT}))
    assert main(["bench", "profile", "--from", str(bad), "--archs", "6", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a latency profile of space" in err and "\n" not in err and not (tmp_path / "x.json").exists()
