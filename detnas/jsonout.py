"""`--json PATH` of the measuring and reporting commands: one versioned document per command.

Each document is an object whose `schema` field names its kind and version, e.g. "detnas.eval/1"; the version goes
up only when a field changes meaning or disappears (added fields keep it). docs/json.md lists every schema. The
command's printed table is drawn from the same record, so what is shown and what is written cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Self

from detnas.io import atomic_write_json


class JsonRecord:
    """Mixin for a frozen dataclass that is written as its fields and read back from them: one place for the
    round trip every flat record shares (a record with nested records or derived fields overrides a side)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})  # type: ignore[attr-defined]


def document(schema: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its `schema` first."""
    return {"schema": schema, **body}


def write_document(path: str | Path, schema: str, body: dict[str, Any]) -> None:
    """Write the document atomically (a reader never sees half of it)."""
    atomic_write_json(path, document(schema, body))
