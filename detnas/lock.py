"""One run per output: an advisory lock (`fcntl.flock`) on a lock file that names its owner.

Two runs writing one folder interleave journals, checkpoints and metrics with no error on either side; so a command
that writes a folder (search, training, the demo) or a file (an export) holds `output_lock` on it for its whole run.
A second run is refused with one line naming the first's pid, command and start time. The kernel drops the lock when
its process dies, even by kill -9, so a lock file left behind by a dead run is taken over, with a one-line note.

The lock file is `<folder>/.detnas.lock`, or `.<name>.detnas.lock` beside a file; it holds JSON {pid, command,
started}. Locks are per process and re-entrant: the demo holds its folder while its steps lock their own outputs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from detnas.errors import DetnasError
from detnas.io import make_dir, writing

LOCK_NAME = ".detnas.lock"
# The file each kind of run writes first into its folder: a run of one kind is refused a folder that holds another
# kind's (training into a search folder interleaved checkpoints with its report, and the reverse, without a word).
RUN_MARKERS = {"search": "journal.jsonl", "training": "config.json", "demo": "main_job.json"}
_held: dict[Path, int] = {}  # lock files this process holds -> nesting depth
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockOwner:
    """Who holds an output: written into the lock file for the run it refuses to read."""

    pid: int
    command: str
    started: str  # UTC, ISO 8601

    def describe(self) -> str:
        return f"pid {self.pid}, `{self.command}`, started {self.started}"


def lock_file(target: str | Path, folder: bool = True) -> Path:
    """The lock file of an output folder (inside it) or of an output file (beside it)."""
    target = Path(target)
    return target / LOCK_NAME if folder else target.with_name(f".{target.name}{LOCK_NAME}")


def current_command() -> str:
    """This process's command line as a user typed it (`detnas search run ...`), for the lock file."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]


@contextmanager
def output_lock(target: str | Path, folder: bool = True, command: str | None = None, kind: str | None = None,
                log: Callable[[str], None] = logger.info) -> Iterator[LockOwner]:
    """Hold `target` (an output folder, created if missing; or with `folder=False` an output file) for the block;
    refuse with one line if another live run holds it or, given the run's `kind` (a key of `RUN_MARKERS`), if the
    folder holds another kind's run. Yields this run's record. The take-over note goes to `log`: by default this
    module's logger, which the CLI prints (`detnas.console.command_logging`); a library caller sees nothing unasked."""
    target = Path(target)
    make_dir(target if folder else target.parent)
    path = lock_file(target, folder)
    key = path.resolve()
    owner = LockOwner(os.getpid(), command or current_command(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if key in _held:
        _held[key] += 1
        try:
            yield owner
        finally:
            _held[key] -= 1
        return
    fd = _acquire(path, target)
    try:
        if kind is not None:
            _check_kind(target, kind)
        previous = _read_owner(fd)
        if previous is not None and previous.pid != owner.pid:
            log(f"note: {target}: took over the lock of a run that is no longer running ({previous.describe()})")
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(asdict(owner)) + "\n").encode(), 0)
            os.fsync(fd)
        _held[key] = 1
        try:
            yield owner
        finally:
            del _held[key]
    finally:
        path.unlink(missing_ok=True)  # before the unlock: a run that opened it meanwhile re-checks the inode
        os.close(fd)  # releases the flock


def _check_kind(folder: Path, kind: str) -> None:
    for other, marker in RUN_MARKERS.items():
        if other != kind and (folder / marker).exists():
            raise DetnasError(f"{folder}: holds a {other} run ({marker}); a {kind} run there would mix its files with "
                              f"it: choose another output folder")


def _acquire(path: Path, target: Path) -> int:
    """An fd of `path` holding its exclusive flock; a lock held by a live process is one line naming it."""
    while True:
        with writing(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_owner(fd)
            os.close(fd)
            who = holder.describe() if holder is not None else "an owner still writing its record"
            raise DetnasError(f"{target}: in use by another detnas run ({who}); wait for it to finish, stop it, or "
                              "choose another output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its owner removed that file as it finished: lock the one now at the path


def _read_owner(fd: int) -> LockOwner | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return LockOwner(int(data["pid"]), str(data["command"]), str(data["started"]))
    except (ValueError, TypeError, KeyError):
        return None
