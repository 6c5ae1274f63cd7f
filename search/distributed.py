"""Who evaluates what under torchrun: rank 0 plans and owns the journal, every rank evaluates its share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from detnas.errors import DetnasError

T = TypeVar("T")


class Team:
    """The processes of one search; a team of one when torch.distributed is not initialised."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist if dist.is_available() and dist.is_initialized() else None
        self.rank = self._dist.get_rank() if self._dist else 0
        self.world = self._dist.get_world_size() if self._dist else 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def share(self, items: list[T]) -> list[T]:
        """This rank's items: a round-robin slice, so expensive neighbours land on different ranks."""
        return items[self.rank :: self.world]

    def _broadcast(self, obj: Any) -> Any:
        """Rank 0's object on every rank (plain dicts and lists only; they travel pickled in memory)."""
        if self._dist is None:
            return obj
        box = [obj]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def lead(self, make: Callable[[], T]) -> T:
        """`make()` run on rank 0 and its result shared with every rank. If it raises there, every rank raises:
        the others would otherwise wait in the broadcast for ever."""
        if self._dist is None:
            return make()
        outcome: tuple[str, Any] = ("ok", None)
        error: Exception | None = None
        if self.is_leader:
            try:
                outcome = ("ok", make())
            except Exception as exc:  # re-raised below, after the other ranks have been told
                error, outcome = exc, ("error", f"rank 0 stopped: {exc}")
        status, value = self._broadcast(outcome)
        if error is not None:
            raise error
        if status == "error":
            raise DetnasError(value)
        return value

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's items, concatenated, on every rank."""
        if self._dist is None:
            return list(items)
        boxes: list[Any] = [None] * self.world
        self._dist.all_gather_object(boxes, items)
        return [item for box in boxes for item in box]

