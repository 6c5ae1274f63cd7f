"""An output (a run's folder, an export's file) is owned by one run at a time: a second run is refused with one line
naming the first, and the lock a killed run left is taken over with a note."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.lock import LOCK_NAME, lock_file, output_lock

_HOLDER = textwrap.dedent("""
    import sys, time
    from detnas.lock import output_lock
    with output_lock(sys.argv[1], command="detnas search run --out " + sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def held(tmp_path):
    """A folder held by another live process (killed with -9 at the end, as a crash would)."""
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield folder, holder
    if holder.poll() is None:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_second_run_is_refused_naming_the_first(held, capsys):
    folder, holder = held
    with pytest.raises(DetnasError, match=rf"in use by another detnas run \(pid {holder.pid}, `detnas search run"):
        with output_lock(folder):
            pass
    capsys.readouterr()
    code = main(["demo", "--out", str(folder), "--plan", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"pid {holder.pid}" in err, err
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME], "the refused run wrote nothing"


def test_a_stale_lock_of_a_killed_run_is_taken_over_with_a_note(held):
    folder, holder = held
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads(lock_file(folder).read_text())["pid"] == holder.pid, "kill -9 leaves the lock file"
    notes: list[str] = []
    with output_lock(folder, command="detnas train", log=notes.append) as owner:
        assert owner.pid == os.getpid() and json.loads(lock_file(folder).read_text())["pid"] == os.getpid()
        with output_lock(folder, log=notes.append):  # re-entrant within one process (the demo and its steps)
            pass
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "no longer running" in notes[0], notes
    assert not lock_file(folder).exists(), "a finished run removes its lock file"


def test_a_lock_on_a_file_leaves_its_folder_free(tmp_path):
    with output_lock(tmp_path / "a.onnx", folder=False), output_lock(tmp_path / "b.onnx", folder=False):
        assert lock_file(tmp_path / "a.onnx", folder=False).exists()
    with output_lock(tmp_path):
        time.sleep(0)


def test_one_kind_of_run_never_writes_into_another_kinds_folder(tmp_path, capsys):
    """Training into a search folder (or the reverse) mixed checkpoints with a journal without a word: refused."""
    search = tmp_path / "search"
    search.mkdir()
    (search / "journal.jsonl").write_text("")
    with pytest.raises(DetnasError, match="holds a search run .journal.jsonl.; a training run there would mix"):
        with output_lock(search, kind="training"):
            pass
    with output_lock(search, kind="search"):
        pass
    training = tmp_path / "training"
    training.mkdir()
    (training / "config.json").write_text("{}")
    capsys.readouterr()
    code = main(["demo", "--out", str(training), "--plan", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and "holds a training run (config.json)" in err, err
    assert sorted(p.name for p in training.iterdir()) == ["config.json"]


def test_the_take_over_note_is_logged_not_printed_and_the_cli_prints_it(tmp_path, capsys, caplog):
    """A library call prints nothing by default: the note goes to the `detnas.lock` logger, which a command's
    logging (`command_logging`, as every CLI command runs) prints on stdout."""
    import logging

    from detnas.console import command_logging

    stale = json.dumps({"pid": 2**22 + 1, "command": "detnas train", "started": "2026-01-01T00:00:00Z"})
    folder = tmp_path / "run"
    folder.mkdir()
    lock_file(folder).write_text(stale)
    with caplog.at_level(logging.INFO, logger="detnas.lock"), output_lock(folder):
        pass
    assert capsys.readouterr().out == "", "the library printed"
    notes = [r.getMessage() for r in caplog.records if r.name == "detnas.lock"]
    assert len(notes) == 1 and "no longer running" in notes[0] and f"pid {2**22 + 1}" in notes[0], notes
    lock_file(folder).write_text(stale)
    with command_logging(), output_lock(folder):
        pass
    out = capsys.readouterr().out
    assert "took over the lock of a run that is no longer running" in out and f"pid {2**22 + 1}" in out, out
