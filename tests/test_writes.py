"""Every write goes through one path that survives full disks, read-only folders and directories in the way: one
line naming the path, nothing partial left.

Tests run as root, which may write anywhere: refusals of the file system are simulated by making the os-level call
raise the OSError a full or read-only disk raises."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.io import append_line, atomic_write_json, atomic_write_text, check_writable
from detnas.search.journal import Journal


def _refuse(code: int):
    def raiser(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))
    return raiser


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize(("code", "said"), [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                            (errno.EACCES, "no permission")])
def test_a_refused_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code, said):
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"good": 1})
    monkeypatch.setattr(os, "fsync", _refuse(code))
    with pytest.raises(DetnasError, match=said) as caught:
        atomic_write_json(target, {"good": 2})
    assert str(target) in str(caught.value) and "\n" not in str(caught.value)
    assert json.loads(target.read_text()) == {"good": 1}, "the previous file is kept"
    assert not _leftovers(tmp_path), "no temporary file is left"


def test_a_refused_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", _refuse(errno.EROFS))
    with pytest.raises(DetnasError, match="read-only"):
        atomic_write_text(tmp_path / "new.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_in_the_way_is_one_line(tmp_path):
    folder = tmp_path / "out.json"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(DetnasError, match="is a directory: name a file inside it"):
        atomic_write_json(folder, {})
    assert (folder / "inside").is_dir() and not _leftovers(tmp_path)


def test_appends_never_leave_a_torn_line_or_an_empty_journal(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    append_line(log, '{"a": 1}\n')
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", _refuse(errno.ENOSPC))
    with pytest.raises(DetnasError, match="disk is full"):
        append_line(log, '{"a": 2}\n')
    assert log.read_text() == '{"a": 1}\n', "cut back to the last whole line"
    with pytest.raises(DetnasError, match="disk is full"):
        append_line(tmp_path / "new.jsonl", "x\n")
    assert not (tmp_path / "new.jsonl").exists(), "no 0-byte file"
    with pytest.raises(DetnasError, match="disk is full"):
        Journal.create(tmp_path / "search" / "journal.jsonl", {"seed": 0})
    assert not (tmp_path / "search" / "journal.jsonl").exists(), "no 0-byte journal that --resume would trip on"
    monkeypatch.setattr(os, "fsync", real_fsync)
    journal = Journal.create(tmp_path / "search" / "journal.jsonl", {"seed": 0})
    assert journal.records[0]["type"] == "header" and Journal.resume(journal.path, {"seed": 0}).entries == []


def test_check_writable_refuses_before_the_work(tmp_path, monkeypatch):
    assert check_writable(tmp_path / "a" / "b" / "out.onnx") == tmp_path / "a" / "b" / "out.onnx"
    assert list(tmp_path.iterdir()) == [], "the check creates nothing"
    with pytest.raises(DetnasError, match="names a directory"):
        check_writable(tmp_path, "--json")
    (tmp_path / "file").write_text("")
    with pytest.raises(DetnasError, match="which is a file, not a folder"):
        check_writable(tmp_path / "file" / "out.json")
    monkeypatch.setattr("tempfile.mkstemp", _refuse(errno.EROFS))
    with pytest.raises(DetnasError, match=r"out\.onnx: cannot write .*read-only"):
        check_writable(tmp_path / "out.onnx")


def test_json_naming_a_directory_is_one_line(tmp_path, capsys):
    capsys.readouterr()
    code = main(["arch", "show", "COCO-FPN-300M", "--json", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(tmp_path) in err and "directory" in err, err


def test_eval_json_naming_a_directory_is_refused_before_the_work(tmp_path, capsys):
    """Refused before the detector is built or a single image evaluated (it used to fail after the evaluation)."""
    capsys.readouterr()
    code = main(["eval", "--ann", str(tmp_path / "missing.json"), "--images", str(tmp_path), "--random-init",
                 "--arch", "COCO-FPN-300M", "--json", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--json names a directory" in err, err


@pytest.mark.parametrize("command", [["bench", "compare", "a.json", "b.json"], ["search", "report", "runs/none"],
                                     ["bench", "latency", "--model", "none.onnx"],
                                     ["export", "--arch", "COCO-FPN-300M", "--random-init", "--out", "x.onnx"]],
                         ids=["bench-compare", "search-report", "bench-latency", "export"])
def test_every_json_option_refuses_a_directory_when_read(tmp_path, capsys, command):
    """The shared --json option checks its path when the options are read: before any input is opened (these
    inputs do not even exist) or any work is done."""
    capsys.readouterr()
    code = main([*command, "--json", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--json names a directory" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_file_and_its_sidecar_are_published_as_a_pair(tmp_path, monkeypatch):
    """The sidecar beside a file always describes it: a new sidecar only with the new file, an old one removed when
    the new file has none, and a refused publish changes neither."""
    from detnas.io import publish

    out, report = tmp_path / "m.onnx", tmp_path / "m.precision.json"
    out.write_text("int8 v1")
    report.write_text("describes int8 v1")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "m.onnx").write_text("int8 v2")
    (stage / "r.json").write_text("describes int8 v2")
    monkeypatch.setattr(os, "fsync", _refuse(errno.ENOSPC))
    with pytest.raises(DetnasError, match="disk is full"):
        publish((stage / "m.onnx", out), [(stage / "r.json", report)])
    assert (out.read_text(), report.read_text()) == ("int8 v1", "describes int8 v1")
    monkeypatch.undo()
    publish((stage / "m.onnx", out), [(stage / "r.json", report)])
    assert (out.read_text(), report.read_text()) == ("int8 v2", "describes int8 v2")
    (stage / "m.onnx").write_text("fp32")
    publish((stage / "m.onnx", out), [(None, report)])
    assert out.read_text() == "fp32" and not report.exists(), "an FP32 file keeps no INT8 report"


def test_a_file_in_the_way_of_a_folder_is_one_line(tmp_path):
    """`afile/x.md` where afile is a file: mkdir raised FileExistsError (EEXIST), which no fix covered: a traceback
    from bench latency --csv, bench table --markdown and predict --out (found by bench/suite/bad_input.py)."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DetnasError, match=r"afile/x\.md: cannot write .*a file is in the way"):
        atomic_write_text(tmp_path / "afile" / "x.md", "table")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("command, option", [
    (["bench", "latency", "--model", "none.onnx"], "--csv"),
    (["bench", "table", "--model", "none.onnx", "--ann", "a.json", "--images", "img"], "--markdown"),
    (["eval", "--ann", "a.json", "--images", "img", "--random-init", "--arch", "COCO-FPN-300M"], "--out-json"),
    (["bench", "profile", "--space", "detnas-300m"], "--out"),
], ids=["csv", "markdown", "out-json", "profile-out"])
def test_every_file_output_is_checked_before_the_work(tmp_path, capsys, command, option):
    """Like --json: a path under a file is refused, naming the option, before any input is opened (bench profile's
    --out was written after minutes of timing)."""
    (tmp_path / "afile").write_text("x")
    capsys.readouterr()
    code = main([*command, option, str(tmp_path / "afile" / "out.txt")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and option in err and "afile" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
