"""The one reader of the detnas metadata an ONNX file carries.

`detnas export` writes `detnas.<key>` metadata_props whose values are JSON; `detnas.format` = `FORMAT` marks a
detector (NMS inside, the classes, input spec and pixel convention beside it). The bench needs a few keys of it
without the export layer (the precision a file says it carries, a detector's input size), and the export layer
turns all of them into its typed `ModelMeta`: both read the file and decode the keys here, so the format, the
prefix and the one-line errors for an unreadable file or corrupted metadata have one home.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError

PREFIX = "detnas."
FORMAT = "detnas-detector/1"
PRECISION_KEY = PREFIX + "precision"


def load_onnx_header(path: str | Path) -> Any:
    """The ONNX model without its external weights (graph and metadata only), or a one-line DetnasError naming the
    file: missing, or not ONNX (truncated or interrupted write)."""
    import onnx

    if not Path(path).is_file():
        raise DetnasError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises protobuf's DecodeError, OSError, ValueError...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DetnasError(f"{path}: not a readable ONNX file ({reason}); truncated or interrupted? export it again "
                          "with `detnas export`") from None
    if not model.graph.node:  # a 0-byte file parses as an empty model
        raise DetnasError(f"{path}: not an ONNX model (it holds no graph: {Path(path).stat().st_size} bytes); "
                          "truncated or interrupted? export it again with `detnas export`")
    return model


@dataclass(frozen=True)
class OnnxMetadata:
    """The `detnas.*` metadata of one file: `raw` maps each key without its prefix to its stored (JSON) text;
    `source` names the file in errors. Values are decoded when asked for, so a reader of one key is not refused
    over another it never reads."""

    raw: dict[str, str]
    source: str

    @classmethod
    def from_props(cls, props: dict[str, str], source: str) -> OnnxMetadata:
        """From flat key -> value pairs (ONNX metadata_props, or an engine sidecar's "metadata")."""
        return cls({k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}, source)

    @classmethod
    def of_model(cls, model: Any, source: str | Path) -> OnnxMetadata:
        return cls.from_props({p.key: p.value for p in model.metadata_props}, str(source))

    @classmethod
    def read(cls, path: str | Path) -> OnnxMetadata:
        return cls.of_model(load_onnx_header(path), path)

    def values(self) -> dict[str, Any]:
        """Every key decoded; corrupted JSON in any of them is a one-line DetnasError."""
        return {key: self.value(key) for key in self.raw}

    def value(self, key: str, default: Any = None) -> Any:
        if key not in self.raw:
            return default
        try:
            return json.loads(self.raw[key])
        except json.JSONDecodeError as exc:
            raise DetnasError(f"{self.source}: corrupted detnas metadata ({exc.msg}); re-export the model") from None

    @property
    def is_detector(self) -> bool:
        """Written by `detnas export` as a detector (`detnas.format` = FORMAT)."""
        return self.value("format") == FORMAT

    def stated_precision(self, known: tuple[str, ...]) -> str | None:
        """The precision `detnas.precision` states (None when absent): the record's `precision` field, or a bare
        name (also accepted unquoted); a name outside `known` is refused."""
        if "precision" not in self.raw:
            return None
        text = self.raw["precision"]
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        value = value.get("precision") if isinstance(value, dict) else value
        if value not in known:
            raise DetnasError(f"{self.source}: metadata {PRECISION_KEY} is {text!r}, not one of {', '.join(known)}; "
                              "re-export the file")
        return value
