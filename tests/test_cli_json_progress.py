"""Progress bars (only on a terminal, never under --quiet), `--json` of export and eval, and `detnas bench table` on a
tiny detector exported from a checkpoint."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from detnas.cli.main import main
from detnas.progress import progress_display, task, track, wanted
from detnas.workflows.artifact_table import produce

from helpers.data import shared_dataset
from helpers.export import CATEGORY_IDS, SIZE, save_child_checkpoint, tiny_detector, val_images


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_draw_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    assert wanted(False, terminal, terminal)
    assert not wanted(True, terminal, terminal), "--quiet"
    assert not wanted(False, pipe, terminal) and not wanted(False, terminal, pipe), "stdout or stderr redirected"
    with progress_display(True, terminal):
        assert list(track(range(3), "decoding 3 images")) == [0, 1, 2]
        with task("export: tracing to ONNX") as step:
            step.describe("export: tracing to ONNX (done)")
    drawn = terminal.getvalue()
    assert "decoding 3 images" in drawn and "0/3" in drawn and "tracing to ONNX" in drawn
    silent = Terminal()
    with progress_display(False, silent):
        assert list(track(range(3), "decoding 3 images")) == [0, 1, 2]
    assert silent.getvalue() == ""
    assert list(track(iter(range(2)), "outside any display")) == [0, 1], "a library caller sees no bar and no error"


def test_cli_is_silent_when_output_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    coco_mini = shared_dataset("coco_mini")
    ann, images = coco_mini / "annotations" / "instances_val2017.json", coco_mini / "val2017"
    for quiet in ([], ["--quiet"]):
        assert main([*quiet, "data", "check", "--ann", str(ann), "--images", str(images)]) == 0
        captured = capsys.readouterr()
        assert "images decoded" in captured.out
        assert "decoding" not in captured.err and "━" not in captured.err + captured.out, captured.err


@pytest.fixture(scope="module")
def exported(module_tmp) -> dict[str, Path]:
    """A tiny FPN checkpoint, its FP32 export (with --json) and a copy of coco_mini's val set on its three classes."""
    coco_mini = shared_dataset("coco_mini")
    detector, arch = tiny_detector("fpn", val_images(coco_mini))
    root = module_tmp("table")
    ckpt = save_child_checkpoint(detector, arch, "fpn", root / "child")
    onnx_path, doc = root / "model.onnx", root / "export.json"
    assert main(["export", "--weights", str(ckpt), "--out", str(onnx_path), "--size", f"{SIZE}x{SIZE}",
                 "--score-thresh", "0.2", "--proposals", "20", "--parity-images", str(coco_mini / "val2017"),
                 "--no-simplify", "--json", str(doc)]) == 0
    coco = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    coco["categories"] = [c for c in coco["categories"] if c["id"] in CATEGORY_IDS.values()]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] in CATEGORY_IDS.values()]
    subset = root / "three_classes.json"
    subset.write_text(json.dumps(coco))
    return {"ckpt": ckpt, "onnx": onnx_path, "export_json": doc, "ann": subset, "images": coco_mini / "val2017"}


@pytest.mark.slow
def test_export_and_eval_json(exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(exported["export_json"].read_text())
    assert doc["schema"] == "detnas.export/2" and doc["onnx"]["path"] == str(exported["onnx"])
    assert doc["onnx"]["nodes"] > 0 and doc["onnx"]["parity"]["passed"] and doc["onnx"]["input"] == [1, 3, SIZE, SIZE]
    assert doc["precision"] is None and doc["tensorrt"] is None and {r["version"] for r in doc["lint"]} == {"10.3", "11"}
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(exported["onnx"]), "--ann", str(exported["ann"]), "--images",
                 str(exported["images"]), "--max-images", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["schema"] == "detnas.eval/1" and report["images"] == 4 and report["model"] == str(exported["onnx"])
    assert f"{report['detections']} detections" in printed, "the table and the JSON come from one record"
    assert set(report["metrics"]) >= {"AP", "AP50", "AR100", "mAP50_07"} and 0 <= report["metrics"]["AP"] <= 1


@pytest.mark.slow
def test_bench_table_on_a_tiny_detector(exported: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    doc, md = tmp_path / "table.json", tmp_path / "table.md"
    from detnas.export.runtime import read_onnx_meta

    assert read_onnx_meta(exported["onnx"]).thresholds["rpn_proposals"] == 20  # the eager row is rebuilt with it
    train = shared_dataset("coco_mini") / "train2017"
    assert main(["bench", "table", "--model", str(exported["onnx"]), "--convert", "int8", "--calib-images",
                 str(exported["images"]), "--calib-count", "4", "--ann", str(exported["ann"]), "--images",
                 str(exported["images"])]) == 2
    assert "are images of --ann" in capsys.readouterr().err, "calibrating on the scored images is refused"
    assert not exported["onnx"].with_name("model.int8.onnx").exists()
    assert main(["bench", "table", "--model", str(exported["onnx"]), "--weights", str(exported["ckpt"]),
                 "--convert", "int8", "--calib-images", str(train),
                 "--calib-count", "4", "--ann", str(exported["ann"]), "--images", str(exported["images"]),
                 "--max-images", "4", "--runs", "3", "--warmup", "1", "--json", str(doc), "--markdown", str(md)]) == 0
    printed = capsys.readouterr().out
    table = json.loads(doc.read_text())
    assert table["schema"] == "detnas.bench.table/1" and table["images"] == 4 and table["scope"] == "network+nms"
    rows = {r["artifact"]: r for r in table["rows"]}
    assert list(rows) == ["PyTorch eager", "ONNX FP32", "ONNX INT8"]
    int8 = exported["onnx"].with_name("model.int8.onnx")
    assert rows["ONNX INT8"]["produced"] and rows["ONNX INT8"]["path"] == str(int8) and int8.is_file()
    assert rows["ONNX FP32"]["file_mb"] == pytest.approx(exported["onnx"].stat().st_size / 2**20)
    # the eager twin runs the exported graph's computation: the same AP up to float rounding
    assert rows["PyTorch eager"]["ap"] == pytest.approx(rows["ONNX FP32"]["ap"], abs=0.01)
    for row in rows.values():
        assert 0 < row["median_ms"] <= row["p90_ms"]
        assert row["images_per_s"] == pytest.approx(1000 / row["median_ms"])
    markdown = md.read_text()
    assert markdown.count("\n| ") == 3 and table["fingerprint_hash"] in markdown and "ONNX INT8 (produced)" in markdown
    assert "int8" in printed and table["fingerprint_hash"] in printed
    assert read_onnx_meta(int8).precision.calib_method == "average", "converted as detnas export converts"
    # a second table reuses the INT8 file instead of converting again
    assert produce(exported["onnx"], "int8", None, None, 4) == (int8, False)
    assert main(["bench", "table", "--model", str(int8), "--ann", str(exported["ann"]), "--images",
                 str(exported["images"])]) == 2
    assert "give the FP32 export" in capsys.readouterr().err


def test_training_bar_silences_nested_bars(tmp_path: Path) -> None:
    from detnas.train.progress import ProgressReporter

    ambient, training = Terminal(), Terminal()
    with progress_display(True, ambient):
        reporter = ProgressReporter(tmp_path, total=2, start=0, enabled=True, label="supernet-det", stream=training)
        with task("evaluating 8 images", 8) as step:  # an evaluation during training
            step.advance(8)
        reporter.close()
        assert ambient.getvalue() == "", "two live bars on one terminal would overwrite each other"
        with task("evaluating 8 images", 8):
            pass
    assert "evaluating 8 images" in ambient.getvalue() and "━" in training.getvalue()
