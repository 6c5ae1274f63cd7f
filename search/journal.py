"""The search journal: JSONL, one durable line per event, the only state a resumed search needs.

Line 1 is the header (configuration and its hash). Then, per generation, a `generation` line with the planned
candidates (and the rejected ones with why), then one `candidate` line per evaluated architecture, and finally
a `final` line with the winner's and the runner-up's fresh (uncached, interleaved) timings. Every line is
fsync'ed before the search moves on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError
from detnas.io import append_line, atomic_write_text, read_text_file
from detnas.search.records import Record, decode_record

#: 2: several named latency targets (candidates' `latencies`, one final line per target); 1 is still read and resumed
JOURNAL_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: fields that legitimately differ between an interrupted+resumed run and a straight one
VOLATILE_FIELDS = ("wall_s", "timing")


#: header key of the settings every candidate was scored with (`detnas.search_settings.SearchSettings`)
SETTINGS_HEADER = "search_settings"

#: configuration fields a resume may change: more generations extend a search without altering its past
EXTENDABLE_FIELDS = ("generations",)


#: fields added after version-1 journals were written, with the value every such journal had: at that value a field
#: stays out of the hash, so an older journal resumes under the settings it was searched with
LEGACY_VALUES: dict[str, Any] = {"constraint_feasibility": "median", "constraint_targets": ()}


def config_hash(config: dict[str, Any]) -> str:
    bound = {k: v for k, v in config.items()
             if k not in EXTENDABLE_FIELDS and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])}
    return hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()[:16]


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """All complete records; a torn last line (crash mid-write) is ignored, any other bad line is an error."""
    path = Path(path)
    text = read_text_file(path, "journal")
    records = []
    # the piece after the last newline is a torn write (never a whole record), so it is left out
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise DetnasError(f"{path}: line {number} is not JSON; the journal is corrupted") from None
    if not records or records[0].get("type") != "header" or records[0].get("version") not in READABLE_VERSIONS:
        raise DetnasError(f"{path}: not a detnas search journal (no version-{JOURNAL_VERSION} or -1 header on line 1)")
    return records


def decode_journal(path: str | Path, records: list[dict[str, Any]]) -> list[Record]:
    """The typed records of a journal's lines after the header (`read_journal`'s output)."""
    return [decode_record(r, f"{path}: line {number}") for number, r in enumerate(records[1:], start=2)]


class Journal:
    """Append-only writer; open with `create` for a new search or `resume` to continue one. `records` are the
    lines as JSON (header first), `entries` the typed records after the header."""

    def __init__(self, path: Path, records: list[dict[str, Any]]) -> None:
        self.path = path
        self.records = records
        self.entries: list[Record] = decode_journal(path, records) if records else []

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], search_settings: dict[str, Any] | None = None) -> Journal:
        """A new journal; `search_settings` (`detnas.search_settings`: absolute paths, resolved sizes) ride in the
        header outside the hashed configuration, so a resume from another folder still matches."""
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            raise DetnasError(f"{path}: a journal already exists; pass --resume to continue it or choose another --out")
        header = {"type": "header", "version": JOURNAL_VERSION, "config_hash": config_hash(config), "config": config}
        if search_settings is not None:
            header[SETTINGS_HEADER] = search_settings
        atomic_write_text(path, _line(header))  # a refused write leaves no 0-byte journal to resume from
        return cls(path, [header])

    @classmethod
    def resume(cls, path: str | Path, config: dict[str, Any]) -> Journal:
        """Reopen after checking the configuration matches; nothing is written when it does not."""
        path = Path(path)
        if not path.exists():
            raise DetnasError(f"{path}: no journal to resume; drop --resume to start a new search")
        records = read_journal(path)
        expected, found = config_hash(config), records[0].get("config_hash")
        if found != expected:
            stored = {**LEGACY_VALUES, **records[0].get("config", {})}
            changed = sorted(k for k in set(config) | set(stored)
                             if config.get(k) != stored.get(k) and k not in EXTENDABLE_FIELDS)
            raise DetnasError(
                f"{path}: journal is from another search configuration (hash {found} != {expected}; differs in "
                f"{', '.join(changed) or 'format'}); use the original flags or another --out"
            )
        size = sum(len(line) + 1 for line in path.read_text().split("\n")[:-1])
        if size != path.stat().st_size:  # drop a torn last line before appending after it
            with open(path, "r+b") as handle:
                handle.truncate(size)
        return cls(path, records)

    @property
    def header(self) -> dict[str, Any]:
        return self.records[0]

    def append(self, record: Record) -> None:
        self._append_line(record.to_json())
        self.entries.append(record)

    def _append_line(self, data: dict[str, Any]) -> None:
        append_line(self.path, _line(data))
        self.records.append(data)


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True) + "\n"


def strip_volatile(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without wall-clock fields, for comparing two runs of the same search."""
    return [{k: v for k, v in r.items() if k not in VOLATILE_FIELDS} for r in records]
