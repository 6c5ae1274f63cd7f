"""`LatencyResult`: one measured latency with everything needed to read it honestly later.

A number without its scope (what was timed), protocol (warm-up, runs, threads) and environment fingerprint
cannot be compared with another, so they travel together into JSON, CSV, the cache and device profiles.
The raw per-run samples travel too, so two results can be compared with a confidence interval later.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from detnas.bench.fingerprint import Fingerprint
from detnas.bench.stats import TimingStats
from detnas.errors import DetnasError
from detnas.io import atomic_write_json, atomic_write_text, read_json_file

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
#: wall-clock latency, or the one timing thread's CPU time (stable when other processes share the cores)
CLOCKS: tuple[str, ...] = ("wall", "thread-cpu")


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


SAMPLES_INLINE_MAX = 64  # up to this many runs the samples are a readable list, beyond it compressed
SAMPLES_PACKED = "zlib+base64:float32le"


def encode_samples(samples_ms: tuple[float, ...]) -> dict[str, Any]:
    """A few samples as a plain list; many as zlib-compressed little-endian float32 in base64 (~5 chars a run;
    float32 keeps 7 significant digits, far finer than any timer's jitter)."""
    if len(samples_ms) <= SAMPLES_INLINE_MAX:
        return {"n": len(samples_ms), "ms": list(samples_ms)}
    packed = zlib.compress(np.asarray(samples_ms, dtype="<f4").tobytes(), 9)
    return {"n": len(samples_ms), "encoding": SAMPLES_PACKED, "data": base64.b64encode(packed).decode("ascii")}


def decode_samples(data: dict[str, Any]) -> tuple[float, ...]:
    if "ms" in data:
        samples = tuple(float(v) for v in data["ms"])
    elif data.get("encoding") == SAMPLES_PACKED:
        try:
            raw = zlib.decompress(base64.b64decode(data["data"], validate=True))
        except (binascii.Error, zlib.error) as exc:
            raise ValueError(f"'samples.data' does not decode ({exc})") from None
        samples = tuple(float(v) for v in np.frombuffer(raw, dtype="<f4"))
    else:
        raise ValueError(f"'samples' has neither 'ms' nor encoding '{SAMPLES_PACKED}'")
    if len(samples) != data.get("n"):
        raise ValueError(f"'samples' holds {len(samples)} values but says n={data.get('n')}")
    return samples


@dataclass(frozen=True)
class LatencyResult:
    """Statistics of one timed configuration; `source` is 'arch:<hash>', 'onnx:<sha256>' or 'engine:<sha256>';
    `samples_ms` the timed runs in order (empty for results written before they were kept)."""

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
    samples_ms: tuple[float, ...] = ()
    transfers: str = "unknown"  # host<->device copies in each run: none / timed / untimed (bench.backends.TRANSFERS)

    SCHEMA: ClassVar[str] = "detnas.bench.latency/1"

    @property
    def median_ms(self) -> float:
        return self.stats.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.SCHEMA, "label": self.label, "source": self.source, "scope": self.scope, "backend": self.backend,
            "precision": self.precision, "batch": self.batch, "input_shape": list(self.input_shape),
            "warmup": self.warmup, "threads": self.threads, "transfers": self.transfers, "stats": self.stats.to_dict(),
            "fingerprint": self.fingerprint.to_dict(), "fingerprint_hash": self.fingerprint.hash,
            "details": self.details, **({"samples": encode_samples(self.samples_ms)} if self.samples_ms else {}),
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
                samples_ms=decode_samples(data["samples"]) if "samples" in data else (),
                transfers=str(data.get("transfers", "unknown")),  # results written before it was recorded
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DetnasError(f"{source}: not a detnas latency result (missing or bad field {exc})") from None

    def check_same_work(self, other: LatencyResult, name: str, other_name: str) -> None:
        """Refuse to set two results side by side when they timed different work: another scope (the backbone vs
        the whole detector) or input shape (size or batch) changes what is timed, not how fast it runs, so a
        faster / slower verdict between them would mislead. Backend, precision and environment may differ (that is
        what a comparison is for); the caller notes them."""
        differing = []
        if self.scope != other.scope:
            differing.append(f"scope {self.scope} vs {other.scope}")
        if self.input_shape != other.input_shape:
            differing.append(f"input {'x'.join(map(str, self.input_shape))} vs {'x'.join(map(str, other.input_shape))}")
        if differing:
            raise DetnasError(f"{name} vs {other_name}: {', '.join(differing)}; they time different work, so no "
                              "faster/slower verdict is given; time both at the same --scope and --size (and --batch)")

    def save_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | Path) -> LatencyResult:
        return cls.from_dict(read_json_file(path, "latency result"), source=str(path))

    def csv_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {k: v for k, v in self.to_dict().items()
                               if k not in ("schema", "stats", "fingerprint", "details", "samples")}
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
