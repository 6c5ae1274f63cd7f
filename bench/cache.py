"""Persistent latency cache in SQLite, shared safely by several processes (searches run workers in parallel).

WAL journaling lets readers proceed while one process writes, and a busy timeout makes concurrent writers
wait for the lock instead of failing. A measurement is only reused for the exact same model, input shape,
batch, precision, backend variant, scope, environment fingerprint, protocol (warm-up, runs, clock) and timed
inputs. Rows of caches written before the protocol and inputs joined the key keep an empty protocol: their key
digests differ from every new request's, so they are listed but never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, replace
from pathlib import Path

from detnas.bench.result import LatencyResult
from detnas.errors import DetnasError

BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    label TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    batch INTEGER NOT NULL,
    precision TEXT NOT NULL,
    backend TEXT NOT NULL,
    scope TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    median_ms REAL NOT NULL,
    cv REAL NOT NULL,
    created REAL NOT NULL,
    result TEXT NOT NULL,
    protocol TEXT NOT NULL DEFAULT '',
    inputs TEXT NOT NULL DEFAULT ''
)
"""
#: columns added after the first release, with their definitions (an older cache file gains them on opening)
_ADDED_COLUMNS = {"protocol": "TEXT NOT NULL DEFAULT ''", "inputs": "TEXT NOT NULL DEFAULT ''"}


def default_cache_path() -> Path:
    """$DETNAS_CACHE_DIR/latency.sqlite, else ~/.cache/detnas/latency.sqlite."""
    base = os.environ.get("DETNAS_CACHE_DIR") or Path.home() / ".cache" / "detnas"
    return Path(base) / "latency.sqlite"


@dataclass(frozen=True)
class CacheKey:
    """Everything a latency depends on; `backend` includes its variant, e.g. 'ort:cpu' or 'torch:compile'."""

    source: str
    input_shape: tuple[int, ...]
    batch: int
    precision: str
    backend: str
    scope: str
    fingerprint: str
    protocol: str = ""  # warm-up, runs and clock (`TimingProtocol.describe`)
    inputs: str = ""  # digest of the timed input batches

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(astuple(self)).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One row as listed by `detnas bench cache list`."""

    label: str
    source: str
    input_shape: str
    batch: int
    precision: str
    backend: str
    scope: str
    fingerprint: str
    median_ms: float
    cv: float
    created: float
    protocol: str
    inputs: str


class LatencyCache:
    """Get / put latency results by `CacheKey`; every call opens its own short-lived connection."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DetnasError(f"{self.path.parent}: cannot create the latency cache folder ({exc.strerror}); "
                              "set DETNAS_CACHE_DIR to a writable folder") from None
        with self._connect() as db:
            db.execute(_SCHEMA)
            present = {row[1] for row in db.execute("PRAGMA table_info(latency)")}
            for name, definition in _ADDED_COLUMNS.items():
                if name not in present:
                    db.execute(f"ALTER TABLE latency ADD COLUMN {name} {definition}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise DetnasError(f"{self.path}: cannot open the latency cache ({exc})") from None
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        except sqlite3.DatabaseError as exc:
            raise DetnasError(f"{self.path}: latency cache error ({exc}); remove the file to start a new cache") from None
        finally:
            db.close()

    def get(self, key: CacheKey) -> LatencyResult | None:
        """The stored result, its details marked `cache` (file and time of the measurement): a figure read back
        is not a measurement, and says so."""
        with self._connect() as db:
            row = db.execute("SELECT result, created FROM latency WHERE key = ?", (key.digest,)).fetchone()
        if row is None:
            return None
        result = LatencyResult.from_dict(json.loads(row[0]), source=f"{self.path} entry")
        return replace(result, details={**result.details, "cache": {"path": str(self.path), "measured_at": row[1]}})

    def put(self, key: CacheKey, result: LatencyResult) -> None:
        row = {"key": key.digest, "source": key.source, "label": result.label,
               "input_shape": "x".join(map(str, key.input_shape)), "batch": key.batch, "precision": key.precision,
               "backend": key.backend, "scope": key.scope, "fingerprint": key.fingerprint,
               "median_ms": result.stats.median_ms, "cv": result.stats.cv, "created": time.time(),
               "result": json.dumps(result.to_dict()), "protocol": key.protocol, "inputs": key.inputs}
        with self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO latency ({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                       tuple(row.values()))

    def entries(self) -> list[CacheEntry]:
        fields = ", ".join(CacheEntry.__dataclass_fields__)
        with self._connect() as db:
            rows = db.execute(f"SELECT {fields} FROM latency ORDER BY created").fetchall()
        return [CacheEntry(*row) for row in rows]

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete all entries, or only those of one fingerprint hash; returns how many were removed."""
        with self._connect() as db:
            if fingerprint is None:
                return db.execute("DELETE FROM latency").rowcount
            return db.execute("DELETE FROM latency WHERE fingerprint = ?", (fingerprint,)).rowcount
