"""torchrun support for training and the search: join the process group from the environment (gloo on CPU, NCCL on
GPU) with this rank's device, leave it, and gather small values."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from detnas.errors import DetnasError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    launched: bool = False  # started by torchrun, whatever the world size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """In a process group: DDP, SyncBN and collectives. Every torchrun launch is, one process too, so a
        one-GPU torchrun run takes the multi-GPU code path (NCCL, SyncBN) rather than a different one."""
        return self.world > 1 or self.launched

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DetnasError(f"device '{name}' requested but no CUDA GPU is visible; use --device cpu")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    if name != "cpu":
        raise DetnasError(f"device '{name}' is unknown; use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def pick_device(name: str) -> torch.device:
    """A single process's `--device` (auto, cpu, cuda, cuda:N); a GPU that is not there is one line, not torch's
    'Found no NVIDIA driver' traceback at the first `.to(device)`."""
    return _pick_device(name, 0)


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by torchrun (it sets TORCHELASTIC_RUN_ID) or when WORLD_SIZE > 1;
    otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    context = DistContext(rank, world, local_rank, chosen, launched="TORCHELASTIC_RUN_ID" in os.environ)
    if context.active and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return context


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Small JSON-like values from every rank (in-memory between our own processes; nothing is read from disk)."""
    if not ctx.active:
        return [obj]
    out: list[object] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out
