"""Atomic file writes: a temporary name in the same folder, fsync, then rename, so no reader ever sees half a file.

Temporary files and folders are named `.<target name>.detnas-<pid>-<random>.tmp`: a process killed with -9 leaves
them behind, and `remove_stale_temps` (called when a run, search or export starts) deletes those whose process is
gone, never anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError

_TEMP_NAME = re.compile(r"\..+\.detnas-(\d+)-\w+\.tmp")


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
    """Yield a temporary path next to `path`; it replaces `path` only if the block finishes without error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DetnasError(f"{path}: cannot write here ({exc.strerror}); choose a writable output path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
    except yaml.YAMLError as exc:
        raise DetnasError(f"{path}: not valid YAML ({exc})".splitlines()[0]) from None


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (weights, ONNX, engine): what caches and journals are keyed by."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise DetnasError(f"{path}: cannot read file to hash it ({exc.strerror})") from None
