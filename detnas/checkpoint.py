"""Checkpoints: weights in safetensors plus a JSON sidecar; never a pickle.

`NAME.safetensors` holds tensors, `NAME.json` holds what travels with them (space, arch, pixel convention,
classes, detector kind, recipe, ...). Both are written atomically; the sidecar is written last, so a checkpoint
without a readable sidecar is incomplete and refused. The sidecar's `digest` (sha256 of the tensors and of its
other fields) binds the pair: an edited sidecar or swapped weights are refused at load.

`save_checkpoint` / `load_checkpoint` move any JSON record (the training state beside a checkpoint has its own);
a model checkpoint's sidecar is read as a `CheckpointMeta` (`read_checkpoint`, `read_checkpoint_meta`), so its
fields are checked once, where it is read, and its readers use attributes rather than string keys.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from detnas.arch import Arch
from detnas.errors import DetnasError, DetnasWarning
from detnas.io import atomic_path, atomic_write_json, read_json_file
from detnas.pixels import PixelConvention
from detnas.sizes import checkpoint_sizes
from detnas.space import SearchSpace

FORMAT_VERSION = 1
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle (protocol >= 2)


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """`run/ckpt` or `run/ckpt.safetensors` -> (weights file, sidecar file)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (in name order)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{value.dtype}|{list(value.shape)};".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digest(tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> str:
    fields = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256((tensor_digest(tensors) + json.dumps(fields, sort_keys=True)).encode()).hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write weights then sidecar, each atomically; returns the weights path."""
    weights, sidecar = checkpoint_paths(path)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # the sidecar as it will read back (tuples as lists, keys as strings), so the digest can be recomputed at load
    record = json.loads(json.dumps({"format_version": FORMAT_VERSION, **meta}))
    record["digest"] = _digest(contiguous, record)
    with atomic_path(weights) as tmp:
        tmp.write_bytes(save(contiguous))  # serialized here: safetensors' own temp file would outlive a kill -9
    atomic_write_json(sidecar, record)
    return weights


def _refuse_pickle(path: Path, weights: Path) -> None:
    """A `.pt`/`.pth` file (or a pickle under the .safetensors name) is named as such: it is never unpickled."""
    candidate = path if path.suffix not in ("", ".safetensors", ".json") else weights
    try:
        with open(candidate, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return
    # safetensors: an 8-byte little-endian header length, then the JSON header; that length's first byte may be 0x80
    is_safetensors = head[8:9] == b"{"
    if head.startswith(_PICKLE_MAGIC) and not is_safetensors:
        raise DetnasError(f"{candidate}: not a safetensors file but a PyTorch pickle; detnas never unpickles, pass "
                          "a .safetensors checkpoint written by detnas")
    if candidate is path:
        raise DetnasError(f"{path}: not a safetensors file; pass the .safetensors checkpoint written by detnas "
                          "(its .json sidecar next to it)")


def load_meta(path: str | Path) -> dict[str, Any]:
    weights, sidecar = checkpoint_paths(path)
    _refuse_pickle(Path(path), weights)
    meta = read_json_file(sidecar, "sidecar", "pass a checkpoint written by detnas (its .json sidecar next to it)")
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise DetnasError(f"{sidecar}: not a detnas checkpoint sidecar (format_version {FORMAT_VERSION} expected)")
    return meta


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read tensors and sidecar; a truncated or foreign file is a one-line `DetnasError`."""
    weights, _ = checkpoint_paths(path)
    meta = load_meta(path)
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError:
        raise DetnasError(f"{weights}: checkpoint weights missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise DetnasError(f"{weights}: corrupted safetensors file ({str(exc).splitlines()[0]})") from None
    _, sidecar = checkpoint_paths(path)
    if "digest" not in meta:  # written before sidecars carried one: accepted, the binding is not checked
        warnings.warn(f"{sidecar}: no digest (an older detnas checkpoint); whether it belongs to {weights.name} "
                      "is not checked", DetnasWarning, stacklevel=2)
    elif meta["digest"] != _digest(tensors, meta):
        raise DetnasError(f"{sidecar}: does not match {weights.name} (digest differs): the sidecar or the weights "
                          "were changed after saving; use the pair detnas wrote")
    return tensors, meta


#: the sidecar fields `CheckpointMeta` reads into attributes; any other (num_classes, iteration, digest, ...) is
#: kept as it was in `extra`, so a sidecar round-trips unchanged
_TYPED = ("kind", "space", "arch", "pixels", "classes", "detector", "label_to_cat_id", "recipe")


@dataclass(frozen=True)
class CheckpointMeta:
    """What a model checkpoint's sidecar says: its kind (supernet-cls, child-cls, supernet-det, child-det), the
    space and (for a child) the arch, the pixel convention and class names, and for a detector its kind, the
    label -> dataset category map and the training recipe (sizes, detector style)."""

    kind: str
    space: SearchSpace
    classes: tuple[str, ...]
    pixels: PixelConvention
    arch: Arch | None = None
    detector: str | None = None  # a detection checkpoint's detector kind (fpn, retinanet, ...)
    label_to_cat_id: dict[int, int] | None = None  # contiguous label 1..K -> dataset category id
    recipe: dict[str, Any] | None = None  # the training recipe's fields (min_size, max_size, detector_style, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def detector_style(self) -> str:
        """The style the detector was built in (its recipe's `detector_style`; older checkpoints: torchvision)."""
        return str((self.recipe or {}).get("detector_style", "torchvision"))

    def sizes(self, min_size: int | None = None, max_size: int | None = None) -> tuple[int, int]:
        """(short side, long-side cap): the ones given, else the training recipe's, else 800 / 1333."""
        return checkpoint_sizes({"recipe": self.recipe}, min_size, max_size)

    def with_arch(self, kind: str, arch: Arch) -> CheckpointMeta:
        """The sidecar of a child cut from this checkpoint (`kind` child-det or child-cls); no stale digest."""
        extra = {k: v for k, v in self.extra.items() if k not in ("digest", "format_version")}
        return replace(self, kind=kind, arch=arch, extra=extra)

    def with_extra(self, **fields: Any) -> CheckpointMeta:
        """The record with untyped sidecar fields added or replaced (e.g. a saved checkpoint's `iteration`)."""
        return replace(self, extra={**self.extra, **fields})

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's JSON fields, as the training stages have always written them."""
        data: dict[str, Any] = {"kind": self.kind, "space": self.space.to_dict(),
                                "arch": self.arch.to_dict() if self.arch is not None else None,
                                "pixels": self.pixels.to_dict(), "classes": list(self.classes)}
        if self.detector is not None:
            data["detector"] = self.detector
        if self.label_to_cat_id is not None:
            data["label_to_cat_id"] = {str(k): v for k, v in self.label_to_cat_id.items()}
        if self.recipe is not None:
            data["recipe"] = self.recipe
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> CheckpointMeta:
        """The record of a sidecar's fields; a missing or garbled field is a one-line DetnasError naming `source`
        (the sidecar file) and the field. A detection kind needs its detector."""
        if not isinstance(data, dict):
            raise DetnasError(f"{source}: a checkpoint sidecar is a JSON object; pass a checkpoint written by detnas train")

        def parsed(name: str, parse: Callable[[Any], Any], expected: str, required: bool = True) -> Any:
            if data.get(name) is None:
                if required:
                    raise DetnasError(f"{source}: sidecar field '{name}' is missing; pass a checkpoint written by "
                                      "detnas train")
                return None
            try:
                return parse(data[name])
            except DetnasError:  # the space or arch parser's own line, which names the file and field
                raise
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DetnasError(f"{source}: sidecar field '{name}' is not {expected}; pass a checkpoint written by "
                                  "detnas train") from None

        kind = parsed("kind", _text, "a kind name")
        where = f"{source}: sidecar field"
        return cls(
            kind=kind,
            space=parsed("space", lambda v: SearchSpace.from_dict(v, source=f"{where} 'space'"), "a search space"),
            classes=parsed("classes", _names, "a list of class names"),
            pixels=parsed("pixels", PixelConvention.from_dict, "a pixel convention (channel_order, scale, mean, std)"),
            arch=parsed("arch", lambda v: Arch.from_dict(v, source=f"{where} 'arch'"), "an arch",
                        required=kind.startswith("child")),
            detector=parsed("detector", _text, "a detector kind name", required=kind.endswith("-det")),
            label_to_cat_id=parsed("label_to_cat_id", lambda v: {int(k): int(c) for k, c in v.items()},
                                   "a mapping of labels to category ids", required=False),
            recipe=parsed("recipe", _mapping, "a mapping of recipe fields", required=False),
            extra={k: v for k, v in data.items() if k not in _TYPED},
        )


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(value)
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(value)
    return tuple(value)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(value)
    return value


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The sidecar of the checkpoint at `path` (weights not read), as a record."""
    return CheckpointMeta.from_dict(load_meta(path), checkpoint_paths(path)[1])


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """`load_checkpoint` of a model checkpoint: its tensors and its sidecar as a record."""
    tensors, meta = load_checkpoint(path)
    return tensors, CheckpointMeta.from_dict(meta, checkpoint_paths(path)[1])
