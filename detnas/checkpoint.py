"""Checkpoints: weights in safetensors plus a JSON sidecar; never a pickle.

`NAME.safetensors` holds tensors, `NAME.json` holds what travels with them (space, arch, pixel convention,
classes, detector kind, recipe, ...). Both are written atomically; the sidecar is written last, so a checkpoint
without a readable sidecar is incomplete and refused. The sidecar's `digest` (sha256 of the tensors and of its
other fields) binds the pair: an edited sidecar or swapped weights are refused at load.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from detnas.errors import DetnasError, DetnasWarning
from detnas.io import atomic_path, atomic_write_json, read_json_file

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
