"""Device profile round trip on a tiny space through the CLI, the predictor API, the choice of held-out archs, the
held-out report and the refusal checks."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from detnas.arch import Arch
from detnas.bench.fingerprint import Fingerprint
from detnas.bench.predictor import LatencyPredictor
from detnas.bench.profile import PROFILE_FORMAT, block_inputs, choose_archs, load_profile, predict_latency
from detnas.bench.stats import HeldOutReport, SharedPart, best_constant, judge_predictor
from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.space import get_space
from detnas.supernet import ChildNet

TINY = {"name": "bench-tiny", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [2, 2], "head_width": 32,
        "choices": [0, 3]}


@pytest.fixture(scope="module")
def tiny_space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def profile_run(tiny_space_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The profile file and what `detnas bench profile` printed (its --json report is next to the profile)."""
    out = tmp_path_factory.mktemp("profile") / "device.json"
    with redirect_stdout(io.StringIO()) as printed:
        code = main(["bench", "profile", "--space", str(tiny_space_file), "--size", "32", "--runs", "4", "--rounds",
                     "2", "--warmup", "1", "--n-train", "6", "--n-test", "4", "--out", str(out),
                     "--json", str(out.with_name("report.json"))])
    assert code == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def profile_file(profile_run: tuple[Path, str]) -> Path:
    return profile_run[0]


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
    loaded = load_profile(profile_file, space, "ort")
    profile = json.loads(profile_file.read_text())
    assert profile["format"] == PROFILE_FORMAT and loaded.space_digest == space.digest
    table = profile["predictor"]["table"]
    assert len(table) == space.num_blocks and all(set(t) == {"0", "3"} for t in table)
    assert all(ms > 0 for t in table for ms in t.values()) and loaded.fixed_ms["stem"] > 0
    assert [a["split"] for a in profile["archs"]].count("test") == 4 == loaded.report.n
    fitted = [a for a in profile["archs"] if a["split"] in ("train", "test")]
    assert len({a["hash"] for a in fitted}) == 10  # held-out archs are never training archs
    # uniform random archs (all 10 the tiny space has beside the 6 training archs) are judged apart
    drawn = [a for a in profile["archs"] if a["split"] == "random"]
    assert len(drawn) == 10 and not {a["hash"] for a in drawn} & {a["hash"] for a in fitted if a["split"] == "train"}
    assert profile["random_report"]["n"] == 10
    near = profile["near"]
    assert near["band"] == 0.15 and near["target_ms"] == pytest.approx(float(np.median([a["measured_ms"] for a in drawn])))
    assert near["n"] == sum(abs(a["measured_ms"] / near["target_ms"] - 1) <= 0.15 for a in drawn)
    assert (profile["near_report"] is None) == (near["n"] < 5)
    for entry in profile["archs"]:
        arch = Arch.from_dict({"space": space.name, "choices": entry["choices"]})
        assert predict_latency(loaded, arch) == pytest.approx(entry["predicted_ms"])
        assert entry["measured_ms"] > 0
    report = profile["report"]
    test = [a["measured_ms"] for a in profile["archs"] if a["split"] == "test"]
    assert report["spread_ratio"] == pytest.approx(max(test) / min(test)) and report["constant_ms"] in test
    assert report["constant"]["mape"] > 0 and report["noise_cv"] >= 0 and -1 <= report["ceiling_tau"] <= 1
    assert report["accurate"] == (report["verdict"][-1].startswith("accurate")) and profile["build_seconds"] > 0
    # the held-out set holds the fastest and the slowest arch by the measured block table
    table = LatencyPredictor.from_dict(profile["predictor"]).table
    by_table = [tuple(sorted(t, key=t.get)[i] for t in table) for i in (0, -1)]
    held_out = [Arch.from_dict({"space": space.name, "choices": a["choices"]}).choices
                for a in profile["archs"] if a["split"] == "test"]
    assert held_out[:2] == by_table


def test_cli_profile_prints_the_report_beside_the_constant(profile_run: tuple[Path, str]) -> None:
    printed = profile_run[1]
    for words in ("best constant", "a perfect", "R²", "held-out latency spread: max/min",
                  "predictor on 10 random archs"):
        assert words in printed, printed
    assert ("NOT ACCURATE" in printed) != ("accurate: MAPE" in printed)
    report = json.loads(profile_run[0].with_name("report.json").read_text())
    assert report["schema"] == "detnas.bench.profile/1" and report["profile"] == str(profile_run[0])
    assert report["report"]["n"] == 4 and all(line in printed for line in report["report"]["verdict"])


def _synthetic_table(positions: int, seed: int) -> list[dict[int, float]]:
    """Four choices whose order differs by position: the fastest arch is not all-3x3, the slowest not all-Xception."""
    rng = np.random.default_rng(seed)
    return [{c: float(v) for c, v in zip((0, 1, 2, 3), rng.permutation([1.0, 1.3, 1.7, 2.2]) * (1 + p / 4))}
            for p in range(positions)]


def test_choose_archs_spans_the_table_range() -> None:
    space = get_space("detnas-300m")
    table = _synthetic_table(space.num_blocks, seed=0)
    train, test = choose_archs(space, table, 12, 10, random.Random(0))
    cost = {a.choices: sum(t[c] for t, c in zip(table, a.choices)) for a in train + test}
    assert len(cost) == 22  # distinct: no held-out arch was fitted on
    fastest, slowest = (tuple(min(t, key=t.get) for t in table), tuple(max(t, key=t.get) for t in table))
    assert fastest != (0,) * space.num_blocks and test[0].choices == fastest and test[1].choices == slowest
    lo, hi = cost[fastest], cost[slowest]
    bins = sorted(int(8 * (cost[a.choices] - lo) / (hi - lo)) for a in test[2:])
    assert bins == list(range(8)), bins  # one held-out arch in each eighth of the range
    train_costs = sorted(cost[a.choices] for a in train)
    assert train_costs[0] < lo + (hi - lo) / 12 + 1e-9 and train_costs[-1] > hi - (hi - lo) / 12 - 1e-9
    with pytest.raises(DetnasError, match="at least 2 archs"):
        choose_archs(space, table, 12, 1, random.Random(0))


def test_synthetic_table_constant_is_called_out_and_the_fitted_predictor_is_not() -> None:
    """The issue's done-when: archs drawn from a synthetic table, latencies from a known correction plus 0.3 %
    noise per half; the fitted predictor passes the criteria, the best constant fails them."""
    space = get_space("detnas-300m")
    table = _synthetic_table(space.num_blocks, seed=1)
    stage_of = [s for s, depth in enumerate(space.stage_depths) for _ in range(depth)]
    train, test = choose_archs(space, table, 20, 30, random.Random(1))
    rng = np.random.default_rng(1)

    def truth(choices: tuple[int, ...]) -> float:
        return 3.0 + sum((1.1 + 0.1 * stage_of[p]) * table[p][c] for p, c in enumerate(choices)) + 0.05 * choices.count(3)

    def halves(choices: tuple[int, ...]) -> tuple[float, float]:
        return truth(choices) * (1 + rng.normal(0, 0.003)), truth(choices) * (1 + rng.normal(0, 0.003))

    fit_on = [sum(halves(a.choices)) / 2 for a in train]
    predictor = LatencyPredictor.fit(table, stage_of, 3.0, [a.choices for a in train], fit_on)
    split = [halves(a.choices) for a in test]
    first, second = [h[0] for h in split], [h[1] for h in split]
    measured = [(a + b) / 2 for a, b in split]
    good = judge_predictor([predictor.predict(a.choices) for a in test], measured, (first, second))
    flat = judge_predictor([best_constant(measured)] * len(test), measured, (first, second))
    assert good.accurate and not good.noise_limited, good.verdict()
    assert not flat.accurate and "best constant" in " ".join(flat.shortfalls())
    assert good.spread_ratio > 2  # the stratified set holds the whole range, not the crowded middle


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
    assert load_profile(profile_file, space, "ort", fingerprint=stored).backend == "ort"
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
    doc = tmp_path / "predict.json"
    assert main(["bench", "predict", "--profile", str(profile_file), "--arch", tiny_arch, "--json", str(doc)]) == 0
    predicted = json.loads(doc.read_text())
    assert predicted["schema"] == "detnas.bench.predict/1" and predicted["predictions"][0]["predicted_ms"] > 0
    assert f"{predicted['predictions'][0]['predicted_ms']:.3f}" in capsys.readouterr().out
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


@pytest.mark.slow  # a network-scope profile timed end to end: 20 s on 2 loaded cores
def test_profile_at_network_scope_reports_the_detector_as_fixed_part(tmp_path: Path) -> None:
    space_file, out = tmp_path / "four.json", tmp_path / "network.json"
    space_file.write_text(json.dumps({"name": "bench-four", "stem_width": 8, "stage_widths": [16, 32, 48, 64],
                                      "stage_depths": [1, 2, 1, 1], "head_width": 32, "choices": [0, 3]}))
    with redirect_stdout(io.StringIO()) as printed:
        code = main(["bench", "profile", "--space", str(space_file), "--backend", "torch", "--size", "64", "--runs",
                     "2", "--rounds", "1", "--warmup", "1", "--n-train", "8", "--n-test", "2", "--n-random", "3",
                     "--scope", "network",
                     "--detector", "retinanet", "--out", str(out)])
    assert code == 0
    profile = json.loads(out.read_text())
    assert "network minus its backbone" in printed.getvalue() and "backbone timed beside it" in printed.getvalue()
    assert profile["scope"] == "network" and profile["detector"] == "retinanet"
    fitted = [a for a in profile["archs"] if a["split"] != "random"]
    assert profile["fixed_ms"]["detector"] > 0 and len(fitted) == 10
    # every arch's backbone was timed beside it: the backbone scope is judged on the same held-out archs, and the
    # detector part is network minus backbone over all archs
    shared = SharedPart.from_dict(profile["shared_part"])
    assert shared.n == 10 and shared.median_ms == profile["fixed_ms"]["detector"]
    network = [a["measured_ms"] for a in fitted]
    backbone = [a["backbone_ms"] for a in fitted]
    assert all(n > b > 0 for n, b in zip(network, backbone))
    assert shared.median_ms == pytest.approx(float(np.median(np.subtract(network, backbone))))
    assert HeldOutReport.from_dict(profile["backbone_report"]).n == 2


def test_search_is_told_when_a_profile_ranks_noise(profile_file: Path, tiny_space_file: Path, tmp_path: Path) -> None:
    from detnas.search.latency import ProfileLatency, Timing

    space = get_space(str(tiny_space_file))
    timing = Timing(size=(32, 32), scope="backbone")
    data = json.loads(profile_file.read_text())
    report = HeldOutReport.from_dict(data["report"])
    truth = [1.0, 1.002, 1.004, 1.006]  # a 0.6 % spread under 1 % noise: the truth cannot explain the measurements
    first, second = [t * (1 + 0.02 * (-1) ** i) for i, t in enumerate(truth)], truth
    cases = {
        "noisy": judge_predictor(truth, [(a + b) / 2 for a, b in zip(first, second)], (first, second)),
        "clean": judge_predictor(truth, truth, (truth, truth)),
    }
    assert report.n == 4 and cases["noisy"].noise_limited and not cases["clean"].noise_limited
    shared = SharedPart(n=4, median_ms=1.0, std_ms=0.004, noise_ms=0.001, network_std_ms=0.005)
    for name, case in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({**data, "report": case.to_dict(),
                                                            "shared_part": shared.to_dict()}))
    noisy = ProfileLatency(tmp_path / "noisy.json", space, timing, force=True).caveats
    assert any("NOISE-LIMITED" in c and "cannot separate candidates" in c for c in noisy), noisy
    assert any("60% of the network's spread variance is not the backbone's" in c for c in noisy), noisy
    assert ProfileLatency(tmp_path / "clean.json", space, timing, force=True).caveats == []
    (tmp_path / "old.json").write_text(json.dumps({k: v for k, v in data.items() if k != "report"}))
    assert "no held-out report" in ProfileLatency(tmp_path / "old.json", space, timing, force=True).caveats[0]


def test_profile_suite_reads_its_sets() -> None:
    from detnas.bench.result import Scope
    from detnas.bench.suite.latency_profile import parse_sets

    assert parse_sets("detnas-300m:network, detnas-1.3g") == [("detnas-300m", Scope.NETWORK), ("detnas-1.3g", Scope.BACKBONE)]
    for bad, message in (("detnas-300m:neck", "unknown scope 'neck'"), ("detnas-300m:end-to-end", "not profiled"),
                         (" , ", "--sets is empty")):
        with pytest.raises(DetnasError, match=message):
            parse_sets(bad)


@pytest.mark.parametrize("suite, args, message", [
    ("latency_profile", ["--sets", " , "], "error: --sets is empty"),
    pytest.param("precision_speed", ["--skip-latency", "--work", "{full}"],  # a second suite process: 6 s of CPU
                 "error: --work {full}: not empty; choose a new folder", marks=pytest.mark.slow),
])
def test_suites_refuse_bad_input_in_one_line(tmp_path, suite, args, message) -> None:
    """Both suites go through run_suite: a DetnasError is one stderr line and exit 2, as in the CLI, not a traceback."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "kept.txt").write_text("an earlier run's file")
    done = subprocess.run([sys.executable, "-m", f"detnas.bench.suite.{suite}", *(a.format(full=full) for a in args)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(full=full)), done.stderr
    assert (full / "kept.txt").read_text() == "an earlier run's file"


def test_precision_suite_takes_ap_on_held_out_images_and_judges_the_interval(tmp_path: Path, monkeypatch) -> None:
    """The AP set's evaluated images are held out of training (AP on trained images measured memorisation), the
    INT8 ranges come from trained images, and 'goal met' needs the whole bootstrap interval within the goal."""
    from detnas.bench.suite import precision_speed

    from helpers.data import shared_dataset

    shared_dataset("coco128"), shared_dataset("coco_mini")
    monkeypatch.setattr(precision_speed, "SHARED", shared_dataset("coco128").parent)
    data = precision_speed.pooled_coco(0.05, 8, tmp_path)
    trained = {im["file_name"] for im in json.loads(data.train_ann.read_text())["images"]}
    evaluated = json.loads(data.evaluated_ann.read_text())
    held_out = {im["file_name"] for im in evaluated["images"]}
    assert len(held_out) >= 20 and len(trained) >= 3 * len(held_out) - 3 and not trained & held_out
    assert {f.name for f in data.calibration} <= trained and len(data.calibration) == 8
    train_annotations = json.loads(data.train_ann.read_text())["annotations"]
    assert {a["image_id"] for a in train_annotations}.isdisjoint({im["id"] for im in evaluated["images"]})
    verdict = precision_speed.goal_verdict
    assert verdict(-0.01, 0.008) == "met" and verdict(0.02, 0.05) == "NOT met"
    assert verdict(-0.010, 0.019).startswith("not resolved"), "a point drop of 0.004 inside a wide interval is not 'met'"


def _noisy_set(n: int, spread: float, noise: float, seed: int) -> tuple[list[float], list[float], tuple[list[float], list[float]]]:
    """Truth with relative std `spread` around 10 ms; each half median carries noise sqrt(2) x `noise`, so their mean
    (the measurement) carries `noise`."""
    rng = np.random.default_rng(seed)
    truth = 10 * (1 + spread * rng.standard_normal(n))
    first = truth * (1 + noise * np.sqrt(2) * rng.standard_normal(n))
    second = truth * (1 + noise * np.sqrt(2) * rng.standard_normal(n))
    return list(truth), list((first + second) / 2), (list(first), list(second))


def test_a_perfect_predictor_reaches_the_reference_tau_and_the_split_halves_do_not() -> None:
    """Known answer: with spread 2 % and noise 1 % the measurements keep R² = 1 - 1/5 = 0.8 of the truth's spread
    variance (spread² + noise² = 5 units), so a perfect predictor's tau is 2/pi asin(sqrt(0.8)) = 0.705; the
    halves (noise 1.41 % each) agree only at tau 2/pi asin(4/6) = 0.465, so '0.9 x the halves' asked for 59 % of a
    perfect predictor's tau. The judge's reference matches the perfect predictor's measured tau."""
    from detnas.bench.stats import perfect_tau

    assert perfect_tau(0.8) == pytest.approx(0.7048, abs=1e-4) and perfect_tau(1.0) == 1.0 and perfect_tau(-0.3) == 0.0
    truth, measured, halves = _noisy_set(600, 0.02, 0.01, seed=0)
    report = judge_predictor(truth, measured, halves)
    assert report.reference_tau == pytest.approx(0.705, abs=0.03)
    assert report.predictor.kendall_tau == pytest.approx(report.reference_tau, abs=0.03)
    assert report.ceiling_tau == pytest.approx(2 / np.pi * np.arcsin(4 / 6), abs=0.03)
    assert report.predictor.r2 == pytest.approx(0.8, abs=0.05)
    assert "Kendall tau" not in " ".join(report.shortfalls())
    # a predictor that ranks as well as the split halves do is not accurate any more
    _, worse, _ = _noisy_set(600, 0.02, 0.022, seed=1)
    mediocre = judge_predictor(worse, measured, halves)
    assert mediocre.predictor.kendall_tau < 0.9 * mediocre.reference_tau
    assert any("below 0.9 x a perfect predictor's" in m for m in mediocre.shortfalls())


def test_accuracy_metrics_on_a_known_set() -> None:
    """Predictions off by 0 %, 4 %, 8 % and 20 % of four measurements: shares within 5 / 10 %, MAPE, R² by hand, and
    the best constant (the 1/m-weighted median) with its MAPE."""
    from detnas.bench.stats import prediction_accuracy

    measured = [10.0, 20.0, 30.0, 40.0]
    predicted = [10.0, 20.8, 32.4, 48.0]
    acc = prediction_accuracy(predicted, measured)
    assert (acc.within_5, acc.within_10) == (0.5, 0.75) and acc.mape == pytest.approx(8.0)
    assert acc.r2 == pytest.approx(1 - (0 + 0.64 + 5.76 + 64) / 500) and acc.kendall_tau == 1.0
    assert best_constant(measured) == 20.0  # weights 1/10, 1/20, ...: half the weight is reached at 20
    assert prediction_accuracy([20.0] * 4, measured).mape == pytest.approx(100 * (1 + 0 + 1 / 3 + 1 / 2) / 4)


def test_random_and_near_target_sets_are_judged_apart() -> None:
    """judge_sets on synthetic random archs: all of them, and those within +-15 % of the target."""
    from detnas.bench.profile import judge_sets
    from detnas.space import get_space

    space = get_space("detnas-300m")
    table = _synthetic_table(space.num_blocks, seed=2)
    stage_of = [s for s, depth in enumerate(space.stage_depths) for _ in range(depth)]
    predictor = LatencyPredictor(tuple(table), tuple(stage_of), 0.0, (1.0,) * 4 + (0.0,) * 3 + (0.0,))
    rng = random.Random(0)
    archs = [Arch(space, tuple(rng.choice(space.choices) for _ in range(space.num_blocks))) for _ in range(40)]
    truth = [predictor.predict(a.choices) for a in archs]
    samples = [[t * (1 + 0.001 * ((i * 7 + j) % 5 - 2)) for j in range(8)] for i, t in enumerate(truth)]
    target = float(np.median(truth)) * 1.05
    judged = judge_sets(predictor, archs, samples, rounds=2, near_ms=target)
    near = [t for t in truth if abs(t / target - 1) <= 0.15]
    assert judged.random.n == 40 and judged.near.n == len(near) and 5 <= len(near) < 40
    assert judged.random.predictor.within_5 == 1.0 and judged.random.predictor.r2 > 0.99
    assert judged.to_dict()["near"] == {"target_ms": target, "band": 0.15, "n": len(near)}
    assert judge_sets(predictor, archs[:3], samples[:3], rounds=2).random is None  # too few to judge
