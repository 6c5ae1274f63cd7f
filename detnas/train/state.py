"""Run checkpoints without pickle: model weights + sidecar, and a second file pair with the training state.

`checkpoints/iter_0000100.{safetensors,json}` hold the weights and what travels with them (the same format as
every detnas checkpoint); `iter_0000100.state.{safetensors,json}` hold optimizer buffers, RNG states, the path
sampler and the AMP scaler. The state sidecar is written last: a checkpoint without it is incomplete and ignored.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detnas.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint

_ITER_FILE = re.compile(r"iter_(\d+)\.state\.json")


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (momentum buffers) keyed `optimizer.<param index>.<name>`; everything else as JSON."""
    state = optimizer.state_dict()
    tensors, rest = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                rest.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "state": rest}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in meta["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state(prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, numpy and torch (CPU and CUDA) generator states of this process."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {f"{prefix}.torch": torch.get_rng_state(), f"{prefix}.numpy": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}.cuda.{i}"] = s
    meta = {"python": [version, list(internal), gauss], "numpy": [np_kind, int(np_pos), int(np_has_gauss),
                                                                  float(np_gauss)]}
    return tensors, meta


def set_rng_state(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors[f"{prefix}.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors[f"{prefix}.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith(f"{prefix}.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


class CheckpointDir:
    """`<run>/checkpoints`: writes iteration checkpoints, finds the latest complete one, keeps the last K."""

    def __init__(self, run_dir: str | Path, keep_last: int) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def base(self, iteration: int) -> Path:
        return self.root / f"iter_{iteration:07d}"

    def complete(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = (_ITER_FILE.fullmatch(p.name) for p in self.root.iterdir())
        return sorted(int(m[1]) for m in found if m)

    def latest(self) -> int | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, iteration: int, weights: dict[str, torch.Tensor], meta: dict[str, Any],
             state_tensors: dict[str, torch.Tensor], state_meta: dict[str, Any]) -> Path:
        base = self.base(iteration)
        path = save_checkpoint(base, weights, meta)
        save_checkpoint(base.with_name(base.name + ".state"), state_tensors, state_meta)
        self._prune()
        return path

    def load(self, iteration: int) -> tuple[dict[str, torch.Tensor], dict[str, Any],
                                            dict[str, torch.Tensor], dict[str, Any]]:
        base = self.base(iteration)
        weights, meta = load_checkpoint(base)
        state_tensors, state_meta = load_checkpoint(base.with_name(base.name + ".state"))
        return weights, meta, state_tensors, state_meta

    def _prune(self) -> None:
        for iteration in self.complete()[: -self.keep_last]:
            base = self.base(iteration)
            # the state sidecar goes first: from then on the checkpoint counts as incomplete
            for path in (*reversed(checkpoint_paths(base.with_name(base.name + ".state"))), *checkpoint_paths(base)):
                path.unlink(missing_ok=True)
