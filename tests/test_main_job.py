"""The README's main command at the CI-sized plan: every step runs for real and leaves its files."""

import json

import onnx

from detnas.arch import Arch
from detnas.cli import main


def test_demo_smoke_plan_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--plan", "smoke"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    arch = Arch.from_dict(json.loads((out / "search" / "best_arch.json").read_text()))
    assert arch.hash == summary["arch"]["hash"] and arch.compact() in printed
    for name in ("search/pareto.png", "search/convergence.png", "search/journal.jsonl", "benchmark.json",
                 "predict/results.json", "report.md", "model/detector.onnx"):
        assert (out / name).stat().st_size > 0, name
        assert name.split("/")[-1] in printed
    assert list((out / "predict").glob("*.png")), "predict wrote no drawn image"
    model = onnx.load(str(out / "model" / "detector.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert Arch.from_json(meta["detnas.arch"]).hash == arch.hash
    bench = json.loads((out / "benchmark.json").read_text())
    assert bench["stats"]["median_ms"] > 0 and bench["backend"] == "ort"
    assert summary["latency_target_ms"] > 0 and summary["export"]["parity"]
    # the hard latency constraint held for every candidate the search kept
    journal = [json.loads(line) for line in (out / "search" / "journal.jsonl").read_text().splitlines()]
    candidates = [r for r in journal if r["type"] == "candidate"]
    assert candidates and all(r["latency"]["median_ms"] <= summary["latency_target_ms"] for r in candidates)
