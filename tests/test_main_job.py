"""The README's main command at the CI-sized plan: every step runs for real and leaves its files, the exported
winner detects, parity compared enough to mean something, and what ships is what the search scored."""

import json

import onnx
import pytest

from detnas.arch import Arch
from detnas.cli import main
from detnas.detection.cost import path_size
from detnas.workflows.main_job import SHIPPED_AP_TOL, MainJobPlan

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # the whole road on the CI-sized plan: minutes

# the smoke plan (200 detection iterations) on the elastic space shipped AP50 0.089-0.198 on 12 validation images
# here (0.17 on the paper space before); the full plan 0.412. A detector that detects nothing scores ~0.
SMOKE_AP50 = 0.05
# the candidates' network+nms latencies, slowest / fastest: the genes cost (a smoke run here: 3.7x). The front's
# own span depends on which candidate scores best on 8 images (smoke: 1.11-3.71x; full plan 3.69x, docs/demo.md).
CANDIDATE_SPAN = 2.0


@pytest.fixture(scope="module")
def smoke(module_tmp):
    out = module_tmp("main_job") / "demo"
    assert main(["demo", "--out", str(out), "--plan", "smoke"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_demo_smoke_plan_end_to_end(smoke):
    out, summary = smoke
    arch = Arch.from_dict(json.loads((out / "search" / "best_arch.tight.json").read_text()))
    assert arch.hash == summary["arch"]["hash"]
    for name in ("search/pareto.tight.png", "search/convergence.png", "search/journal.jsonl", "benchmark.json",
                 "predict/results.json", "predict/grid.png", "report.md", "model/detector.onnx"):
        assert (out / name).stat().st_size > 0, name
    model = onnx.load(str(out / "model" / "detector.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert Arch.from_json(meta["detnas.arch"]).hash == arch.hash
    bench = json.loads((out / "benchmark.json").read_text())
    assert bench["stats"]["median_ms"] > 0 and bench["backend"] == "ort"
    # the search timed whole detectors (network+nms, where every gene of the elastic space costs) and the winner
    # ships at its own input-size gene's size, the size it was timed and scored at
    assert summary["latency_scope"] == "network+nms" and arch.space.name == MainJobPlan.named("smoke").space
    size = list(path_size(arch, (MainJobPlan.named("smoke").det_size,) * 2))
    assert summary["benchmark"]["size"] == size and [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][2:] == size
    assert 0.25 < summary["benchmark"]["searched_share"] < 4, summary["benchmark"]
    # one search for two targets: every kept candidate meets one of them by its 95 % bound, and each target has its
    # winner, timed afresh, with a verdict and a front
    journal = [json.loads(line) for line in (out / "search" / "journal.jsonl").read_text().splitlines()]
    candidates = [r for r in journal if r["type"] == "candidate"]
    targets = {name: row["latency_ms"] for name, row in summary["targets"].items()}
    assert targets == {"tight": summary["latency_target_ms"], "loose": round(1.5 * summary["latency_target_ms"], 3)}
    assert candidates and all(any(r["latencies"][n]["upper_ms"] <= ms for n, ms in targets.items()) for r in candidates)
    # what the elastic genes buy: candidates that differ in latency far beyond the noise, and the front's span
    # computed over them (its fastest member is the fastest candidate, its slowest the most accurate)
    spread, front = summary["latency_spread"], summary["front_span"]
    assert spread["max_ms"] / spread["min_ms"] >= CANDIDATE_SPAN, spread
    assert front["members"] >= 1 and front["fastest_ms"] == pytest.approx(spread["min_ms"]), (front, spread)
    assert front["AP"][-1] == max(r["metrics"]["AP"] for r in candidates), front
    assert front["ratio"] == pytest.approx(front["slowest_ms"] / front["fastest_ms"])
    assert summary["targets"]["tight"]["front_ratio"] == pytest.approx(front["ratio"])
    for name, row in summary["targets"].items():
        assert row["fresh_ms"] > 0 and row["search_ms"] > 0 and row["front"] >= 1, row
        assert row["meets_target"] is (row["fresh_ms"] <= targets[name]) and row["verdict"].startswith("winner")
        assert (out / "search" / f"best_arch.{name}.json").is_file() and (out / "search" / f"pareto.{name}.png").is_file()
    versus = summary["versus"]
    assert versus["random_count"] > 0 and versus["random_best_AP"] >= versus["random_median_AP"]
    report = (out / "report.md").read_text()
    for text in ("AP50", "random median", "images/s", "p90", "search/pareto.tight.png", "detections compared",
                 "latency span of"):
        assert text in report, text
    # each training stage kept its newest checkpoint only (weights and optimiser state), enough to continue
    for stage in ("supernet-cls", "supernet-det"):
        files = sorted(p.name for p in (out / "runs" / stage / "checkpoints").iterdir())
        assert len({name.split(".")[0] for name in files}) == 1 and len(files) == 4, (stage, files)


def test_exported_winner_detects_and_parity_compared_enough(smoke):
    _, summary = smoke
    val = summary["onnx_val"]
    assert val["annotations"] > 0 and val["AP50"] >= SMOKE_AP50, val
    parity = summary["export"]["parity"]
    assert parity["passed"] and parity["detections"] >= MainJobPlan.named("smoke").min_parity_detections, parity
    assert parity["tensors"] and all(t["items"] > 0 for t in parity["tensors"]), parity["summary"]


def test_what_ships_is_what_was_scored(smoke):
    """The saved weights and the ONNX file score the journal's AP on the search-validation split."""
    _, summary = smoke
    shipped = summary["shipped"]
    assert shipped["images"] > 0
    assert shipped["weights_AP"] == pytest.approx(shipped["journal_AP"], abs=1e-6), shipped
    assert abs(shipped["onnx_AP"] - shipped["journal_AP"]) <= SHIPPED_AP_TOL, shipped
    assert shipped["within_tolerance"]


def test_rerun_into_the_same_folder_continues_that_run(smoke, capsys):
    """The README's command run twice in place: the second run trains no step and evaluates no candidate again,
    and ships the same winner; a rerun with another plan is refused before anything is touched."""
    out, first = smoke
    journal = (out / "search" / "journal.jsonl").read_text()
    record = (out / "main_job.json").read_text()
    assert main(["demo", "--out", str(out), "--plan", "full"]) == 2
    assert "another plan" in capsys.readouterr().err
    assert (out / "main_job.json").read_text() == record
    assert MainJobPlan.recorded(out) == MainJobPlan.named("smoke")
    assert main(["demo", "--out", str(out), "--plan", "smoke"]) == 0
    second = json.loads((out / "summary.json").read_text())
    assert (out / "search" / "journal.jsonl").read_text() == journal
    assert second["arch"]["hash"] == first["arch"]["hash"]
    assert second["latency_target_ms"] == first["latency_target_ms"]
    assert second["shipped"]["weights_AP"] == pytest.approx(first["shipped"]["weights_AP"], abs=1e-6)
    for stage in ("supernet-cls", "supernet-det"):
        log = [json.loads(line) for line in (out / "runs" / stage / "metrics.jsonl").read_text().splitlines()]
        steps = [r["iteration"] for r in log if "loss" in r]
        assert steps and len(steps) == len(set(steps)), f"{stage}: iterations trained twice"


def test_a_supernet_path_exports_as_the_search_scored_it(smoke, tmp_path, capsys):
    """`detnas export --arch search/best_arch.tight.json` (the shipped target's winner) with no option repeated: the
    file names the supernet, the BN images, count and batch, the sizes and proposals the search scored with, so
    the file scores the journal's AP on the search-validation split; the export checks that and records both. A
    plain arch file on the supernet names nothing, and the export refuses it without the BN split (the supernet's
    statistics mix every path)."""
    out, summary = smoke
    best = out / "search" / "best_arch.tight.json"
    onnx_path, doc = tmp_path / "winner.onnx", tmp_path / "winner.json"
    assert main(["export", "--arch", str(best), "--out", str(onnx_path), "--json", str(doc)]) == 0
    printed = capsys.readouterr().out
    plan = MainJobPlan.named("smoke")
    # an elastic path's proposals are its own gene (in the arch), not a run-wide figure the export would print
    assert f"BN re-estimated on {plan.bn_images} images" in printed
    assert "proposals" not in next(line for line in printed.splitlines() if "min/max size" in line)
    check = json.loads(doc.read_text())["search"]["ap"]
    assert check["faithful"] and check["images"] == plan.search_val_images, check
    assert check["journal"] == pytest.approx(summary["shipped"]["journal_AP"]), check
    assert check["within_tolerance"] and abs(check["exported"] - check["journal"]) <= SHIPPED_AP_TOL, check
    plain = tmp_path / "plain_arch.json"
    plain.write_text(Arch.from_dict(json.loads(best.read_text())).to_json())
    assert main(["export", "--weights", str(out / "runs" / "supernet-det" / "final"), "--arch", str(plain),
                 "--no-parity", "--out", str(tmp_path / "plain.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bn-ann" in err[0] and not (tmp_path / "plain.onnx").exists(), err
