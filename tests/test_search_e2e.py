"""`detnas search run` end to end on real COCO images (coco_mini), a tiny detection supernet and ORT-CPU
latency, and the bad inputs that must be refused before the journal is touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detnas.checkpoint import load_checkpoint, save_checkpoint
from detnas.cli.main import main
from detnas.pixels import DEFAULT_PIXELS
from detnas.supernet import Supernet

from helpers.search import TINY, save_tiny_supernet, search_args

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


@pytest.fixture(scope="module")
def searched(search_setup) -> tuple[Path, str]:
    """One generation, then resumed with a second one; returns the folder and the first session's journal."""
    out = search_setup["tmp"] / "run"
    assert main(search_args(search_setup, out, "--latency-target", "1s", "--generations", "1")) == 0
    first = (out / "journal.jsonl").read_text()
    assert main(search_args(search_setup, out, "--latency-target", "1s", "--generations", "2", "--resume")) == 0
    return out, first


def test_search_runs_resumes_and_reports(searched) -> None:
    out, first = searched
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert (out / "journal.jsonl").read_text().startswith(first), "resuming rewrote the journal's past"
    candidates = [r for r in journal if r["type"] == "candidate"]
    assert len(candidates) == 4 and len({r["hash"] for r in candidates}) == 4, "a candidate was evaluated twice"
    assert {r["generation"] for r in candidates} == {0, 1}
    for r in candidates:
        assert r["latency"]["median_ms"] <= 1000 and set(r["metrics"]) >= {"AP", "AP50", "AP75", "APs", "AR100"}
        assert 0 <= r["metrics"]["AP"] <= 1 and r["timing"]["bn_s"] > 0 and r["timing"]["eval_s"] > 0
        assert r["flops"] > 0 and r["params"] > 0 and r["fingerprint"]
    final = [r for r in journal if r["type"] == "final"][-1]  # the winner, timed afresh (again if it changed)
    by_hash = {r["hash"]: r for r in candidates}
    # fresh: 5 interleaved rounds of the 10 runs the search takes, never the cached 10-run figure
    assert final["source"] == "measured" and final["rounds"] == 5 and final["latency"]["n"] == 50
    assert final["search_latency"] == by_hash[final["hash"]]["latency"] and final["search_latency"]["n"] == 10
    assert final["meets_target"] is (final["latency"]["median_ms"] <= 1000)
    runner = final["runner_up"]
    assert runner["hash"] != final["hash"] and runner["latency"]["n"] == 50
    assert runner["search_latency"] == by_hash[runner["hash"]]["latency"]
    assert final["hash"] == json.loads((out / "best_arch.json").read_text())["hash"]
    for name in ("best_arch.json", "topk.json", "summary.json", "pareto.png", "convergence.png"):
        assert (out / name).is_file()
    verdict = json.loads((out / "summary.json").read_text())["verdict"]
    assert f"fresh {final['latency']['median_ms']:.3f}ms (5 interleaved rounds, 50 runs, uncached" in verdict, verdict
    for r in candidates:  # feasible by the bound of 10 runs at 1 - 0.05/4, not the median alone
        assert r["latency"]["median_ms"] <= r["latency"]["upper_ms"] <= 1000


def test_best_arch_carries_what_decided_the_score(search_setup, searched) -> None:
    """best_arch.json names the settings every candidate was scored with, resolved (absolute paths, the detector's
    own sizes and proposals), and the winner's journal metrics: the export's defaults."""
    from detnas.search_settings import read_search_settings

    out, _ = searched
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    winner = json.loads((out / "best_arch.json").read_text())["hash"]
    scored = [r["metrics"] for r in journal if r.get("type") == "candidate" and r["hash"] == winner][0]
    settings = read_search_settings(str(out / "best_arch.json"))
    assert settings is not None and settings.scored == scored
    assert (settings.bn_count, settings.bn_batch, settings.val_count, settings.proposals) == (2, 2, 2, 4)
    assert (settings.min_size, settings.max_size, settings.detector, settings.style) == (64, 96, "fpn", "torchvision")
    assert (settings.precision, settings.latency_scope, settings.latency_size) == ("fp32", "network+nms", (64, 96))
    assert settings.bn_ann == str(search_setup["train"].resolve()) and settings.val_ann == str(search_setup["val"].resolve())
    assert settings.bn_images == settings.val_images == str((search_setup["root"] / "train2017").resolve())
    assert settings.supernet == str(search_setup["ckpt"].resolve()) and settings.journal == str((out / "journal.jsonl").resolve())
    assert journal[0]["search_settings"] == {**settings.to_dict(), "scored": {}}


def test_search_times_each_candidates_trained_detector_with_nms(search_setup, searched) -> None:
    """The default fitness latency is network+nms of the candidate's own detector cut from the supernet, fed
    search-validation images; the weights' digest is part of the cache key."""
    from detnas.bench.cache import LatencyCache

    out, _ = searched
    candidates = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    hashes = {r["hash"] for r in candidates if r.get("type") == "candidate"}
    timed = {e.source.split(":")[1]: e for e in LatencyCache(search_setup["tmp"] / "latency.sqlite").entries()
             if ":fpn:supernet-det:" in e.source}
    assert hashes <= set(timed), "a candidate's latency was not measured on its trained detector"
    assert all(timed[h].scope == "network+nms" and timed[h].input_shape == "1x3x64x96" for h in hashes)


def test_search_times_each_candidate_at_int8(search_setup, tmp_path) -> None:
    """`--precision int8` times the INT8 QDQ file of each candidate's detector (ranges from one image of the
    supernet-training split) and journals what quantizing it cost."""
    from detnas.bench.cache import LatencyCache

    out = tmp_path / "int8"
    assert main(search_args(search_setup, out, "--latency-target", "10s", "--generations", "1", "--precision", "int8")) == 0
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    candidates = [r for r in journal if r["type"] == "candidate"]
    assert len(candidates) == 2 and all(r["latency"]["convert_seconds"] > 0 for r in candidates), candidates
    timed = {e.source.split(":")[1]: e for e in LatencyCache(search_setup["tmp"] / "latency.sqlite").entries()
             if e.precision == "int8"}
    assert {r["hash"] for r in candidates} <= set(timed)


def _fails(args: list[str], capsys, expected: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_target_below_the_fastest_arch(search_setup, capsys) -> None:
    out = search_setup["tmp"] / "too_fast"
    _fails(search_args(search_setup, out, "--latency-target", "1us"), capsys, "is below the fastest architecture")
    assert not (out / "journal.jsonl").exists()


def test_wrong_checkpoints(search_setup, capsys) -> None:
    tensors, meta = load_checkpoint(search_setup["ckpt"])
    cls_ckpt = search_setup["tmp"] / "cls"
    save_checkpoint(cls_ckpt, Supernet(TINY, num_classes=10).state_dict(), {**meta, "kind": "supernet-cls"})
    args = search_args(search_setup, search_setup["tmp"] / "bad", "--latency-target", "1s")
    _fails([*args[:3], str(cls_ckpt), *args[4:]], capsys, "a classification supernet")
    _fails([*args, "--space", "detnas-300m"], capsys, "supernet of space 'search-test-tiny', not 'detnas-300m'")


def test_resume_with_another_configuration(search_setup, searched, capsys) -> None:
    out, _ = searched
    before = (out / "journal.jsonl").read_bytes()
    _fails(search_args(search_setup, out, "--latency-target", "1s", "--generations", "2", "--seed", "5", "--resume"),
           capsys, "another search configuration")
    assert (out / "journal.jsonl").read_bytes() == before


def test_profile_of_another_device(search_setup, capsys) -> None:
    from detnas.bench.profile import PROFILE_FORMAT

    profile = search_setup["tmp"] / "device.json"
    profile.write_text(json.dumps({"format": PROFILE_FORMAT, "space": TINY.to_dict(), "space_digest": TINY.digest,
                                   "backend": "ort", "fingerprint_hash": "0123456789ab",
                                   "fingerprint": {"device": "Jetson Orin", "driver": "540", "cuda": "12.2",
                                                   "tensorrt": "8.6", "onnxruntime": "1.17", "torch": "2.3",
                                                   "cpu": "ARM", "threads": 6}}))
    out = search_setup["tmp"] / "profiled"
    _fails(search_args(search_setup, out, "--latency-target", "1s", "--latency-profile", str(profile)), capsys,
           "another device/environment")
    assert not out.exists() or not (out / "journal.jsonl").exists()


def test_profile_of_another_scope_or_size(search_setup, capsys) -> None:
    """A profile of this very machine is still refused when it timed something else than the search times."""
    from detnas.bench.fingerprint import collect_fingerprint
    from detnas.bench.profile import PROFILE_FORMAT

    here = collect_fingerprint("cpu", 1)
    profile = search_setup["tmp"] / "backbone_profile.json"
    profile.write_text(json.dumps({"format": PROFILE_FORMAT, "space": TINY.to_dict(), "space_digest": TINY.digest,
                                   "backend": "ort", "fingerprint_hash": here.hash, "fingerprint": here.to_dict(),
                                   "scope": "backbone", "input_shape": [1, 3, 224, 224]}))
    out = search_setup["tmp"] / "profiled_scope"
    _fails(search_args(search_setup, out, "--latency-target", "1s", "--latency-profile", str(profile)), capsys,
           "scope backbone (search: network+nms); input [1, 3, 224, 224] (search: [1, 3, 64, 96])")
    assert not (out / "journal.jsonl").exists()


def test_a_paper_style_supernet_loads_and_is_recalibrated_as_the_official_search(search_setup, tmp_path, monkeypatch):
    """A supernet trained with a paper-det recipe (FPN with BN, detector style 'detnas') is rebuilt in that style
    by the search, and its candidates' BN is re-estimated in the official mode (training mode with targets)."""
    from detnas.arch import sample_arch
    from detnas.data import CocoDetection
    from detnas.detection import build_detector, recalibrate
    from detnas.detection.supernet_path import SupernetDetector
    from detnas.search import evaluators

    classes = CocoDetection(search_setup["val"], search_setup["root"] / "train2017").classes
    detector = build_detector("fpn", Supernet(TINY), len(classes) + 1, 64, 96, DEFAULT_PIXELS, style="detnas")
    meta = {"kind": "supernet-det", "space": TINY.to_dict(), "arch": None, "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": list(classes), "num_classes": len(classes), "detector": "fpn",
            "recipe": {"min_size": 64, "max_size": 96, "detector_style": "detnas"}}
    save_checkpoint(tmp_path / "paper", detector.state_dict(), meta)
    supernet = SupernetDetector.load(tmp_path / "paper", proposals=4)
    assert supernet.style == "detnas"
    modes = []
    real = recalibrate.recalibrate_bn
    monkeypatch.setattr(recalibrate, "recalibrate_bn", lambda model, batches, **kw: modes.append(kw.get("mode"))
                        or real(model, batches, **kw))
    data = CocoDetection(search_setup["train"], search_setup["root"] / "train2017")
    val = CocoDetection(search_setup["val"], search_setup["root"] / "train2017")
    accuracy = evaluators.DetectionAP(supernet, data, val, bn_images=2, bn_batch=1, val_images=1)
    metrics = accuracy.evaluate(sample_arch(TINY, 0))
    assert modes == ["detnas"] and 0.0 <= metrics["AP"] <= 1.0


def test_two_targets_in_one_search(search_setup, tmp_path) -> None:
    """Two named targets measured by the same backend: AP once per candidate, latency per target, one winner,
    fresh timing, front and plot per target; `detnas export --arch best_arch.NAME.json` reads the winner."""
    from detnas.arch import Arch

    out = tmp_path / "two"
    assert main(search_args(search_setup, out, "--latency-target", "tight=2s", "--latency-target", "loose=10s",
                            "--generations", "1")) == 0
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert journal[0]["version"] == 2
    candidates = [r for r in journal if r["type"] == "candidate"]
    assert len(candidates) == 2 and all(set(r["latencies"]) == {"tight", "loose"} for r in candidates)
    finals = {r["target"]: r for r in journal if r["type"] == "final"}
    assert set(finals) == {"tight", "loose"} and all(f["rounds"] == 5 for f in finals.values())
    for name in ("tight", "loose"):
        assert Arch.from_json((out / f"best_arch.{name}.json").read_text()).hash == finals[name]["hash"]
        assert (out / f"pareto.{name}.png").is_file() and (out / f"pareto_front.{name}.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"].startswith("target tight (2000ms): winner") and set(summary["targets"]) == {"tight", "loose"}


def test_probe_prints_the_reachable_range_and_stops(search_setup, tmp_path, capsys) -> None:
    """`--probe` times the fastest and slowest probes as the search would, says so first, and writes nothing;
    `--latency-target auto:F` searches under the target at F of that range."""
    out, backbone = tmp_path / "probed", ["--scope", "backbone"]  # the cheapest scope: the probe times 6 archs
    assert main(search_args(search_setup, out, "--probe", *backbone)) == 0
    printed = capsys.readouterr().out
    assert "probe: timing 6 architectures" in printed, printed
    assert "backbone at 64x96, batch 1, ort on cpu, fp32, 10 timed runs each" in printed
    assert "probe: the first took " in printed and not out.exists()
    fast = float(printed.split("fastest probe: ")[1].split("ms")[0].split()[-1])
    slow = float(printed.split("slowest probe: ")[1].split("ms")[0].split()[-1])
    assert 0 < fast <= slow
    assert main(search_args(search_setup, out, "--latency-target", "auto:1", "--generations", "1", *backbone)) == 0
    printed = capsys.readouterr().out
    target = float(printed.split("latency target auto:1 = ")[1].split("ms")[0])
    header = json.loads((out / "journal.jsonl").read_text().splitlines()[0])
    assert header["config"]["constraint_latency_ms"] == target and fast <= target, (target, fast, slow)
    _fails(search_args(search_setup, tmp_path / "bad", "--latency-target", "auto:2"), capsys, "auto:F takes a fraction F")
    # named targets measured here share one probe, reported per target with its own suggestion
    named = ["--latency-target", "tight=auto:0.5", "--latency-target", "loose=20ms"]
    assert main(search_args(search_setup, out / "named", "--probe", *named, *backbone)) == 0
    printed = capsys.readouterr().out
    assert printed.count("probe: timing 6 architectures") == 1, printed
    assert "target tight: reachable range" in printed and "target loose: reachable range" in printed
    assert "--latency-target tight=auto:0.5 = " in printed and not (out / "named").exists()


def test_export_takes_the_searchs_settings_and_reproduces_its_ap(tmp_path, monkeypatch, capsys) -> None:
    """The README's road: a search given relative paths, then `detnas export --arch best_arch.json --out F` from
    another folder with no option repeated. The export rebuilds the scored detector from best_arch.json's settings
    (BN images and batch, sizes, proposals, timed size), prints them, and the file's metrics on the
    search-validation images equal the journal's; both go into the export JSON. An explicit option that differs is
    allowed with a note naming the search's value, and the AP comparison then only informs. Off a terminal the
    search and the export print progress lines (DETNAS_PROGRESS_INTERVAL=0: every unit)."""
    import os

    from detnas.data import CocoDetection
    from detnas.data.demo import ShapeLayout, make_demo_detection
    from detnas.data.split import split_coco
    from detnas.export.scored import SHIPPED_AP_TOL
    from detnas.progress import LINE_INTERVAL_ENV
    from detnas.search_settings import read_search_settings

    # the demo's generated shapes: few classes, so an untrained detector's scores clear the 0.05 threshold, and
    # large objects its boxes can hit, so there is something to compare; square images at min = max size, so the
    # file's letterbox and the scored detector's resize give the same scale
    work = tmp_path / "search"
    data = make_demo_detection(work / "data", 12, 1, seed=0, layout=ShapeLayout(sizes=(96, 96), square=True,
                                                                                 object_fraction=(0.4, 0.8)))
    train_json, val_json = split_coco(data.train_ann, 4, 0, work / "split")
    images = data.train_images
    classes = CocoDetection(val_json, images).classes
    save_tiny_supernet(work / "supernet", classes, 96, 96)
    monkeypatch.chdir(work)
    monkeypatch.setenv(LINE_INTERVAL_ENV, "0")
    rel = os.path.relpath
    assert main(["search", "run", "--supernet", "supernet", "--ann", rel(val_json), "--images", rel(images),
                 "--bn-ann", rel(train_json), "--out", "run", "--scope", "backbone", "--latency-runs", "10",
                 "--latency-cache", "latency.sqlite", "--latency-target", "10s", "--population", "2",
                 "--generations", "1", "--parents", "2", "--mutations", "1", "--crossovers", "1", "--randoms", "0",
                 "--bn-count", "3", "--bn-batch", "2", "--proposals", "30"]) == 0
    err = capsys.readouterr().err
    assert "generation 0: candidates: 2/2" in err and "BN re-estimation on 3 images (batches of 2): 2/2" in err, err
    best = work / "run" / "best_arch.json"
    settings = read_search_settings(str(best))
    assert settings is not None and settings.scored, best.read_text()

    shipped = tmp_path / "elsewhere"
    shipped.mkdir()
    monkeypatch.chdir(shipped)
    assert main(["export", "--arch", str(best), "--out", "w.onnx", "--json", "w.json"]) == 0
    captured = capsys.readouterr()
    assert f"BN re-estimated on 3 images of {settings.bn_ann}" in captured.out, captured.out
    assert "30 proposals, min/max size 96/96" in captured.out and "note: --" not in captured.out
    assert "BN re-estimation on 3 images" in captured.err, "the export's progress off a terminal"
    doc = json.loads((shipped / "w.json").read_text())
    assert doc["onnx"]["input"] == [1, 3, 96, 96] and doc["search"]["settings"] == settings.to_dict()
    check = doc["search"]["ap"]
    assert check["faithful"] and check["images"] == 4 and check["journal"] == settings.scored["AP"]
    assert check["within_tolerance"] and abs(check["exported"] - check["journal"]) <= SHIPPED_AP_TOL
    scored = {k: v for k, v in settings.scored.items() if v >= 0}
    assert max(scored.values()) > 0, f"nothing detected: the comparison would compare nothing ({scored})"
    for name, value in scored.items():  # every COCO metric, not only AP
        assert abs(check["metrics"][name] - value) <= SHIPPED_AP_TOL, (name, check["metrics"][name], value)
    assert f"AP on 4 search-validation images: file {check['exported']:.4f}, journal {check['journal']:.4f}" \
        in captured.out

    assert main(["export", "--arch", str(best), "--out", "w2.onnx", "--bn-count", "2", "--json", "w2.json"]) == 0
    out = capsys.readouterr().out
    assert f"note: --bn-count 2 differs from the search's 3 ({best})" in out, out
    assert json.loads((shipped / "w2.json").read_text())["search"]["ap"]["faithful"] is False
