"""Detection input sizes: the paper's 800 / 1333 defaults, a checkpoint's sizes, and HxW parsing of size options.

One home, so the short side, the long-side cap and the rule tying them (long <= short * 1333 / 800) are not
re-typed where a detector is built, loaded, evaluated or exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detnas.errors import DetnasError

DEFAULT_MIN_SIZE = 800  # short side (DetNAS, Detectron's 1x schedule)
DEFAULT_MAX_SIZE = 1333  # long-side cap


def max_size_for(min_size: int) -> int:
    """The long-side cap that keeps the paper's ratio for another short side (e.g. 320 -> 533)."""
    return round(min_size * DEFAULT_MAX_SIZE / DEFAULT_MIN_SIZE)


def checkpoint_sizes(meta: Mapping[str, Any], min_size: int | None = None,
                     max_size: int | None = None) -> tuple[int, int]:
    """(short side, long-side cap) for a checkpoint: the ones given, else its training recipe's, else 800 / 1333."""
    recipe = meta.get("recipe") or {}
    return (int(min_size or recipe.get("min_size", DEFAULT_MIN_SIZE)),
            int(max_size or recipe.get("max_size", DEFAULT_MAX_SIZE)))


def parse_hw(text: str, flag: str = "--size", multiple: int = 1) -> tuple[int, int]:
    """'320' or '320x480' -> (height, width); both sides >= 32 and, with `multiple`, divisible by it."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32 or any(p % multiple for p in parts):
        rule = f"multiples of {multiple}" if multiple > 1 else ">= 32"
        raise DetnasError(f"{flag} '{text}' must be N or HxW with both sides {rule}, e.g. 320x480")
    return parts[0], parts[1]
