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
# The largest input side any size option takes, 3x the paper's long side: at 4000x4000 the FPN's stride-4 level
# alone is 256 x 1000 x 1000 float32 values (1 GB) per image, and 99968x99968, once accepted, died allocating
# 30-120 GB; a larger size is refused when parsed, before anything is built.
MAX_SIDE = 4000


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
    """'320' or '320x480' -> (height, width); both sides in [32, MAX_SIDE] and, with `multiple`, divisible by it."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32 or any(p % multiple for p in parts):
        rule = f"multiples of {multiple}" if multiple > 1 else ">= 32"
        raise DetnasError(f"{flag} '{text}' must be N or HxW with both sides {rule}, e.g. 320x480")
    check_side(parts, f"{flag} '{text}'")
    return parts[0], parts[1]


def check_side(sides: list[int] | tuple[int, ...], what: str) -> None:
    """Refuse an input side above `MAX_SIDE` (see there) in one line."""
    if max(sides) > MAX_SIDE:
        raise DetnasError(f"{what}: sides above {MAX_SIDE} px are refused (a {max(sides)} px detector input needs far "
                          f"more memory than a machine has); detection models run at 320-1333 px, e.g. 800x1333")
