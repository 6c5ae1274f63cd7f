"""The device profile as a record: what `detnas bench profile` writes and the search, `bench predict` and a few-shot
profile read.

A profile travels between machines (built on the target, read where the search runs), so its fields are checked
once, where it is read (`DeviceProfile.from_dict`: one line naming the file and the field), and its readers use
attributes rather than string keys. `to_dict` writes the JSON the builders have always written: fields an older
detnas did not write stay absent, and fields this record does not know are kept in `extra`, so a profile
round-trips unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detnas.bench.fingerprint import Fingerprint
from detnas.bench.stats import HeldOutReport, SharedPart
from detnas.errors import DetnasError
from detnas.jsonout import JsonRecord

PROFILE_FORMAT = "detnas-latency-profile/1"
_FIX = "build one with `detnas bench profile`"


@dataclass(frozen=True)
class NearBand(JsonRecord):
    """The random archs within +-`band` of `target_ms` (their median, or the target given): where a target's
    feasibility decisions fall; `n` of them were timed."""

    target_ms: float | None
    band: float
    n: int


@dataclass(frozen=True)
class TimedArch:
    """One arch a profile timed: its compact choices and hash, which set it was in (`split`: 'train' or 'test' for
    the predictor's fit and held-out judgement, 'random' for the uniform draws, 'loo' for a few-shot transfer's
    leave-one-out), its measured median and the profile's prediction. The rest depends on what built it: `cv`
    of its runs, `halves_ms` (medians of the two halves of its rounds, the noise its judgement is held against),
    `table_sum_ms` (the block table's raw sum), `backbone_ms` (its backbone timed beside it at a network scope) and
    `size` (an elastic path's input size); absent ones stay out of the JSON, and fields this record does not know
    are kept in `extra`, as the profile keeps its own."""

    choices: str
    hash: str
    split: str
    measured_ms: float
    predicted_ms: float | None = None
    cv: float | None = None
    halves_ms: tuple[float, float] | None = None
    table_sum_ms: float | None = None
    backbone_ms: float | None = None
    size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def held_out(self) -> bool:
        """Judged on rather than fitted on: every split but the predictor's training set."""
        return self.split != "train"

    def to_dict(self) -> dict[str, Any]:
        data = {"choices": self.choices, "hash": self.hash, "split": self.split, "measured_ms": self.measured_ms,
                "predicted_ms": self.predicted_ms, "cv": self.cv,
                "halves_ms": None if self.halves_ms is None else list(self.halves_ms), "table_sum_ms": self.table_sum_ms,
                "backbone_ms": self.backbone_ms, "size": None if self.size is None else list(self.size)}
        return {**{k: v for k, v in data.items() if v is not None}, **self.extra}

    @classmethod
    def from_dict(cls, data: Any) -> TimedArch:
        """Raises TypeError / KeyError on a garbled row (the profile's reader names the field)."""
        row = _mapping(data)

        def optional(name: str, parse: Callable[[Any], Any]) -> Any:
            return None if row.get(name) is None else parse(row[name])

        return cls(choices=_text(row["choices"]), hash=_text(row["hash"]), split=_text(row["split"]),
                   measured_ms=_number(row["measured_ms"]), predicted_ms=optional("predicted_ms", _number),
                   cv=optional("cv", _number), halves_ms=optional("halves_ms", lambda v: _pair(v, _number)),
                   table_sum_ms=optional("table_sum_ms", _number), backbone_ms=optional("backbone_ms", _number),
                   size=optional("size", lambda v: _pair(v, _whole)),
                   extra={k: v for k, v in row.items() if k not in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DeviceProfile:
    """A device profile: the space it was measured for (its JSON and digest), where (backend, fingerprint) and how
    (variant, precision, scope, detector, input shape, timing protocol) it was timed, the predictor, the archs it was
    fitted and judged on, and the judgements: on held-out archs spanning the space (`report`), on uniform random
    archs and those near a target (`random_report`, `near_report`, `near`), and at a network scope the backbone
    timed beside it (`backbone_report`, `shared_part`). A few-shot profile records its `transfer`."""

    space: dict[str, Any]  # the space's JSON as written (`SearchSpace.to_dict`); `space_digest` names its content
    space_digest: str
    backend: str
    fingerprint_hash: str
    fingerprint: Fingerprint | None = None  # what the hash is of, to name the differences from another machine
    variant: str | None = None
    precision: str | None = None
    scope: str | None = None
    detector: str | None = None  # None at the backbone scope
    input_shape: tuple[int, ...] | None = None
    protocol: dict[str, Any] | None = None  # warmup, runs, rounds, threads, device, clock
    fixed_ms: dict[str, float] | None = None
    blocks_cv: list[list[float]] | None = None
    predictor: dict[str, Any] | None = None  # LatencyPredictor's or ElasticPredictor's JSON (`load_predictor`)
    predictor_choice: dict[str, Any] | None = None
    archs: tuple[TimedArch, ...] | None = None  # one row per timed arch
    report: HeldOutReport | None = None
    near: NearBand | None = None  # written with random_report and near_report, each None when too few were judged
    random_report: HeldOutReport | None = None
    near_report: HeldOutReport | None = None
    backbone_report: HeldOutReport | None = None
    shared_part: SharedPart | None = None
    transfer: dict[str, Any] | None = None
    build_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="", compare=False)  # the file it was read from, for messages; not written

    @property
    def space_name(self) -> str:
        return str(self.space.get("name", "?"))

    @property
    def clock(self) -> str | None:
        return (self.protocol or {}).get("clock")

    @property
    def device(self) -> str:
        """The device it was timed on ('cpu', 'cuda:0'); cpu when unrecorded."""
        return str((self.protocol or {}).get("device", "cpu"))

    @property
    def threads(self) -> int:
        return int((self.protocol or {}).get("threads", 1))

    def judged_dict(self) -> dict[str, Any]:
        """The random and near-target judgements as written (absent from profiles that were not judged on them)."""
        if self.near is None:
            return {}
        return {"random_report": _written(self.random_report), "near_report": _written(self.near_report),
                "near": self.near.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        """The profile's JSON, as `detnas bench profile` writes it: how and where it was timed always (null where
        unrecorded), the other fields where it holds them."""
        data: dict[str, Any] = {
            "format": PROFILE_FORMAT, "space": self.space, "space_digest": self.space_digest, "backend": self.backend,
            "variant": self.variant, "precision": self.precision, "scope": self.scope, "detector": self.detector,
            "input_shape": None if self.input_shape is None else list(self.input_shape), "protocol": self.protocol,
            "fingerprint_hash": self.fingerprint_hash,
        }
        body = {"fingerprint": _written(self.fingerprint), "fixed_ms": self.fixed_ms, "blocks_cv": self.blocks_cv,
                "predictor": self.predictor, "predictor_choice": self.predictor_choice,
                "archs": None if self.archs is None else [a.to_dict() for a in self.archs],
                "report": _written(self.report), "backbone_report": _written(self.backbone_report),
                "shared_part": _written(self.shared_part), "transfer": self.transfer, "build_seconds": self.build_seconds}
        data.update({k: v for k, v in body.items() if v is not None})
        return {**data, **self.judged_dict(), **self.extra}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> DeviceProfile:
        """The record of a profile's fields; a missing or garbled field is a one-line DetnasError naming `source`
        (the profile file) and the field."""
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise DetnasError(f"{source}: not a detnas latency profile (field 'format' is not {PROFILE_FORMAT}); {_FIX}")

        def parsed(name: str, parse: Callable[[Any], Any], expected: str, required: bool = False) -> Any:
            if data.get(name) is None:
                if required:
                    raise DetnasError(f"{source}: latency profile field '{name}' is missing; {_FIX}")
                return None
            try:
                return parse(data[name])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DetnasError(f"{source}: latency profile field '{name}' is not {expected}; {_FIX}") from None

        report = (_report, "a held-out report")
        return cls(
            space=parsed("space", _mapping, "a search space", required=True),
            space_digest=parsed("space_digest", _text, "a digest", required=True),
            backend=parsed("backend", _text, "a backend name", required=True),
            fingerprint_hash=parsed("fingerprint_hash", _text, "a fingerprint hash", required=True),
            fingerprint=parsed("fingerprint", lambda v: Fingerprint.from_dict(_mapping(v)), "a device fingerprint"),
            variant=parsed("variant", _text, "a variant name"),
            precision=parsed("precision", _text, "a precision"),
            scope=parsed("scope", _text, "a scope"),
            detector=parsed("detector", _text, "a detector kind"),
            input_shape=parsed("input_shape", _shape, "an input shape (a list of sizes)"),
            protocol=parsed("protocol", _mapping, "a timing protocol"),
            fixed_ms=parsed("fixed_ms", lambda v: {str(k): _number(ms) for k, ms in _mapping(v).items()},
                            "a mapping of fixed parts to ms"),
            blocks_cv=parsed("blocks_cv", _rows, "a table of coefficients of variation"),
            predictor=parsed("predictor", _mapping, "a predictor"),
            predictor_choice=parsed("predictor_choice", _mapping, "a predictor choice"),
            archs=parsed("archs", _arch_rows, "a list of timed archs"),
            report=parsed("report", *report),
            near=parsed("near", lambda v: NearBand.from_dict(_mapping(v)), "a near-target band"),
            random_report=parsed("random_report", *report),
            near_report=parsed("near_report", *report),
            backbone_report=parsed("backbone_report", *report),
            shared_part=parsed("shared_part", lambda v: SharedPart.from_dict(_mapping(v)), "a shared part"),
            transfer=parsed("transfer", _mapping, "a few-shot transfer"),
            build_seconds=parsed("build_seconds", _number, "a number of seconds"),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
            source=str(source),
        )


#: every field a profile's JSON may hold that the record reads into an attribute
_KNOWN = {"format", *(name for name in DeviceProfile.__dataclass_fields__ if name not in ("extra", "source"))}


def _written(record: Any) -> dict[str, Any] | None:
    return None if record is None else record.to_dict()


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(value)
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(value)
    return value


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(value)
    return tuple(value)


def _rows(value: Any) -> list[list[float]]:
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise TypeError(value)
    return value


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _pair(value: Any, parse: Callable[[Any], Any]) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError(value)
    return parse(value[0]), parse(value[1])


def _arch_rows(value: Any) -> tuple[TimedArch, ...]:
    if not isinstance(value, list):
        raise TypeError(value)
    return tuple(TimedArch.from_dict(row) for row in value)


def _report(value: Any) -> HeldOutReport:
    return HeldOutReport.from_dict(_mapping(value))
