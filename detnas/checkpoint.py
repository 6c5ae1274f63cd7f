"""Checkpoints: weights in safetensors plus a JSON sidecar; never a pickle.

`NAME.safetensors` holds tensors, `NAME.json` holds what travels with them (space, arch, pixel convention,
classes, detector kind, recipe, ...). Both are written atomically; the sidecar is written last, so a checkpoint
without a readable sidecar is incomplete and refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from detnas.errors import DetnasError
from detnas.io import atomic_path, atomic_write_json

FORMAT_VERSION = 1


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """`run/ckpt` or `run/ckpt.safetensors` -> (weights file, sidecar file)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write weights then sidecar, each atomically; returns the weights path."""
    weights, sidecar = checkpoint_paths(path)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(weights) as tmp:
        save_file(contiguous, str(tmp))
    atomic_write_json(sidecar, {"format_version": FORMAT_VERSION, **meta})
    return weights


def load_meta(path: str | Path) -> dict[str, Any]:
    _, sidecar = checkpoint_paths(path)
    try:
        meta = json.loads(sidecar.read_text())
    except OSError:
        raise DetnasError(f"{sidecar}: checkpoint sidecar missing; pass a checkpoint written by detnas") from None
    except json.JSONDecodeError as exc:
        raise DetnasError(f"{sidecar}: corrupted sidecar JSON (line {exc.lineno}: {exc.msg})") from None
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
    return tensors, meta
