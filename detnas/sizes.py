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


#: the paper detector's input at the full scale (800 x 1333, the long side padded to the stride): the size the
#: elastic `input_size` gene is stated at
REFERENCE_HW = (800, 1344)
STRIDE = 32


def _to_stride(value: float) -> int:
    return max(STRIDE, STRIDE * round(value / STRIDE))


def path_hw(input_size: int, base: tuple[int, int] = REFERENCE_HW) -> tuple[int, int]:
    """The (height, width) a path with the `input_size` gene (a short side at the 800-pixel scale) runs at, for a
    run whose paper-detector size is `base`: both sides scale by input_size / 800 and round to the stride (32), so
    800 at the reference size is 800 x 1344 and 480 is 480 x 800; a square `base` stays square."""
    if input_size == REFERENCE_HW[0]:
        return base
    scale = input_size / REFERENCE_HW[0]
    return _to_stride(base[0] * scale), _to_stride(base[1] * scale)


def path_sizes(input_size: int, min_size: int | tuple[int, ...], max_size: int) -> tuple[int | tuple[int, ...], int]:
    """A detector's resize settings (short side(s), long-side cap) for a path with the `input_size` gene, in a
    run whose paper detector uses `min_size` / `max_size`: scaled by input_size / 800 (the short sides rounded to
    the stride); unchanged at 800, so the paper path resizes exactly as the paper's detector."""
    if input_size == REFERENCE_HW[0]:
        return min_size, max_size
    scale = input_size / REFERENCE_HW[0]
    shorts = tuple(_to_stride(s * scale) for s in (min_size if isinstance(min_size, tuple) else (min_size,)))
    return (shorts if isinstance(min_size, tuple) else shorts[0]), max(shorts[-1], round(max_size * scale))


def check_side(sides: list[int] | tuple[int, ...], what: str) -> None:
    """Refuse an input side above `MAX_SIDE` (see there) in one line."""
    if max(sides) > MAX_SIDE:
        raise DetnasError(f"{what}: sides above {MAX_SIDE} px are refused (a {max(sides)} px detector input needs far "
                          f"more memory than a machine has); detection models run at 320-1333 px, e.g. 800x1333")
