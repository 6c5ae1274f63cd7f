"""`LatencyResult`: one measured latency with everything needed to read it honestly later.

A number without its scope (what was timed), protocol (warm-up, runs, threads) and environment fingerprint
cannot be compared with another, so they travel together into JSON, CSV, the cache and device profiles.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from detnas.bench.fingerprint import Fingerprint
from detnas.bench.stats import TimingStats
from detnas.errors import DetnasError
from detnas.io import atomic_write_json, atomic_write_text

BACKENDS: tuple[str, ...] = ("torch", "ort", "trt")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


class Scope(StrEnum):
    """What a latency covers, from the narrowest to the widest."""

    BACKBONE = "backbone"
    NETWORK = "network"  # the full detector network: backbone + FPN + head, raw outputs
    NETWORK_NMS = "network+nms"  # plus box decoding and NMS: the deployed ONNX / engine
    END_TO_END = "end-to-end"  # plus pre- and post-processing on the host

    @classmethod
    def parse(cls, value: str | Scope) -> Scope:
        try:
            return cls(value)
        except ValueError:
            raise DetnasError(f"unknown scope '{value}'; choose one of {', '.join(s.value for s in cls)}") from None


def check_choice(kind: str, value: str, allowed: tuple[str, ...]) -> str:
    """Validate a backend / precision name with a one-line error listing the allowed values."""
    if value not in allowed:
        raise DetnasError(f"unknown {kind} '{value}'; choose one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class LatencyResult:
    """Statistics of one timed configuration; `source` is 'arch:<hash>', 'onnx:<sha256>' or 'engine:<sha256>'."""

    stats: TimingStats
    backend: str
    precision: str
    batch: int
    input_shape: tuple[int, ...]
    scope: str
    warmup: int
    threads: int
    source: str
    label: str
    fingerprint: Fingerprint
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return self.stats.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "source": self.source, "scope": self.scope, "backend": self.backend,
            "precision": self.precision, "batch": self.batch, "input_shape": list(self.input_shape),
            "warmup": self.warmup, "threads": self.threads, "stats": self.stats.to_dict(),
            "fingerprint": self.fingerprint.to_dict(), "fingerprint_hash": self.fingerprint.hash,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "latency result") -> LatencyResult:
        try:
            return cls(
                stats=TimingStats.from_dict(data["stats"]), backend=data["backend"], precision=data["precision"],
                batch=int(data["batch"]), input_shape=tuple(data["input_shape"]), scope=data["scope"],
                warmup=int(data["warmup"]), threads=int(data["threads"]), source=data["source"],
                label=data["label"], fingerprint=Fingerprint.from_dict(data["fingerprint"]),
                details=dict(data.get("details", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DetnasError(f"{source}: not a detnas latency result (missing or bad field {exc})") from None

    def save_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | Path) -> LatencyResult:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise DetnasError(f"{path}: cannot read latency result ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise DetnasError(f"{path}: malformed JSON at line {exc.lineno} ({exc.msg})") from None
        return cls.from_dict(data, source=str(path))

    def csv_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {k: v for k, v in self.to_dict().items() if k not in ("stats", "fingerprint", "details")}
        row["input_shape"] = "x".join(map(str, self.input_shape))
        row.update(self.stats.to_dict())
        row.update({f"fp_{k}": v for k, v in self.fingerprint.to_dict().items()})
        return row


def write_csv(path: str | Path, results: list[LatencyResult]) -> None:
    """One row per result with flattened statistics and fingerprint columns."""
    rows = [r.csv_row() for r in results]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
