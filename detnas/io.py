"""The one write path: atomic file writes (a temporary name in the same folder, fsync, then rename, so no reader
ever sees half a file) and appends that never leave a torn line.

A write that the file system refuses (disk full, read-only, no permission, a directory in the way) is one
`DetnasError` line naming the path and the fix, and leaves no partial or 0-byte file (`write_error`);
`check_writable` asks the same question before the work starts, so an unwritable output is refused up front.

Temporary files and folders are named `.<target name>.detnas-<pid>-<random>.tmp`: a process killed with -9 leaves
them behind, and `remove_stale_temps` (called when a run, search or export starts) deletes those whose process is
gone, never anything else.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError

_TEMP_NAME = re.compile(r"\..+\.detnas-(\d+)-\w+\.tmp")
_WRITE_FIXES = {  # errno -> what to do about a write the file system refused
    errno.ENOSPC: "the disk is full: free space or choose an output on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or choose an output on another disk",
    errno.EFBIG: "the file is larger than this file system allows: choose an output on another disk",
    errno.EROFS: "the file system is read-only: choose a writable output folder",
    errno.EACCES: "no permission to write there: choose a folder you can write to",
    errno.EPERM: "no permission to write there: choose a folder you can write to",
    errno.EISDIR: "it is a directory: name a file inside it instead",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another output path",
    errno.EEXIST: "a file is in the way where a folder is needed: choose another output path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter output path",
}


def write_error(path: str | Path, exc: OSError) -> DetnasError | None:
    """The one-line error for a write to `path` that the file system refused with `exc`; None for an `OSError`
    that is no such refusal (it is not this write's fault and is raised as it is)."""
    fix = _WRITE_FIXES.get(exc.errno or 0)
    if fix is None:
        return None
    return DetnasError(f"{path}: cannot write ({exc.strerror or os.strerror(exc.errno or 0)}); {fix}")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a refused write inside the block into `write_error`'s one line naming `path`."""
    try:
        yield
    except OSError as exc:
        error = write_error(path, exc)
        if error is None:
            raise
        raise error from None


def check_outputs(*outputs: tuple[str, str | Path | None]) -> None:
    """`check_writable` on each given `(option, path)` of a command, before its work; None means not asked for."""
    for option, path in outputs:
        if path is not None:
            check_writable(path, option)


def make_dir(path: str | Path) -> Path:
    """`mkdir -p` of an output folder; a refusal (read-only, permission, a file in the way) is one line."""
    path = Path(path)
    with writing(path):
        if path.exists() and not path.is_dir():
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output `path` that cannot be written: a directory where a file is wanted, a
    parent that is a file, a read-only or full file system, no permission. Probes by creating (and removing) a
    temporary file in the nearest existing folder, so it answers what the later write would meet; creates nothing
    else. Returns `path`."""
    path = Path(path)
    if path.is_dir():
        raise DetnasError(f"{path}: {what} names a directory; name a file inside it instead")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise DetnasError(f"{path}: {what} is under {folder}, which is a file, not a folder; choose another path")
    with writing(path):
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    return path


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.detnas-{os.getpid()}-"


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders that killed detnas processes left in `folder`; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or _running(int(match[1])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def temp_dir(near: str | Path) -> Iterator[Path]:
    """A scratch folder next to `near` (same file system), removed on exit, or by `remove_stale_temps` after a kill."""
    near = Path(near)
    with tempfile.TemporaryDirectory(prefix=_temp_prefix(near), suffix=".tmp", dir=near.parent) as work:
        yield Path(work)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; it replaces `path` only if the block finishes without error.

    A write the file system refuses inside the block, at fsync or at the rename (disk full, read-only, permission,
    a directory at `path`) is `write_error`'s one line; `path` keeps its previous content and the temporary file
    is removed."""
    path = Path(path)
    with writing(path):
        if path.is_dir():
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(path):
            yield tmp_path
            fd = os.open(tmp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def publish(main: tuple[Path, Path], sidecars: Sequence[tuple[Path | None, Path]] = ()) -> None:
    """Move a staged file and its sidecars (each `(staged, final)`, staged beside on the same file system) into
    place as one release; a sidecar staged as None is removed (a new file that has none must not keep the old one's).

    The old sidecars go first and the new ones come after the file: a kill in between leaves the new file without a
    sidecar, never a sidecar describing another file. Everything staged is fsynced before the first rename."""
    staged, final = main
    with writing(final):
        for source in (staged, *(s for s, _ in sidecars if s is not None)):
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if final.is_dir():
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))
        for _, target in sidecars:
            target.unlink(missing_ok=True)
        os.replace(staged, final)
        for source, target in sidecars:
            if source is not None:
                os.replace(source, target)


def append_line(path: str | Path, line: str) -> None:
    """Append one line (journals, metrics) and fsync it. A refused write is `write_error`'s one line, and the file
    is cut back to its previous length: a full disk leaves no torn line (and a new file no 0-byte file)."""
    path = Path(path)
    existed = path.exists()
    with writing(path):
        with open(path, "ab") as handle:
            size = handle.tell()
            try:
                handle.write(line.encode())
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                handle.truncate(size)
                if not existed:
                    path.unlink(missing_ok=True)
                raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_text_file(path: str | Path, what: str, fix: str = "") -> str:
    """A text file's contents, or a one-line `DetnasError` naming the file, `what` it should be and the `fix`."""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DetnasError(f"{path}: cannot read {what} ({reason}){f'; {fix}' if fix else ''}") from None


def read_json_file(path: str | Path, what: str, fix: str = "") -> Any:
    """Parse a JSON file (sidecars, profiles, results, annotations); an unreadable or unparseable one is a
    one-line `DetnasError` naming the file, `what` it should be and, when given, the `fix`."""
    text = read_text_file(path, what, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DetnasError(f"{path}: corrupted {what} JSON (malformed JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}){f'; {fix}' if fix else ''}") from None


def read_mapping_file(path: str | Path, what: str) -> Any:
    """Parse a .json or .yaml/.yml file (spaces, recipes); an unreadable or unparseable file is a one-liner."""
    if Path(path).suffix not in (".yaml", ".yml"):
        return read_json_file(path, what)
    import yaml

    try:
        return yaml.safe_load(read_text_file(path, what))
    except yaml.YAMLError as exc:  # a MarkedYAMLError says where: its problem_mark (0-based) and what it was doing
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        context = f" ({exc.context})" if getattr(exc, "context", None) else ""
        reason = f"{problem}{context}" if problem else str(exc).strip().splitlines()[0]
        raise DetnasError(f"{path}: malformed {what} YAML{where}: {reason}; fix the file there") from None


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (weights, ONNX, engine): what caches and journals are keyed by."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise DetnasError(f"{path}: cannot read file to hash it ({exc.strerror})") from None
