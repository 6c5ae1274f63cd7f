"""Decode every training image once before the first iteration, so a corrupt file is refused at the start with
its name instead of killing the run when a batch first reads it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from detnas.errors import DetnasError


def decode_error(path: Path) -> str | None:
    """Why `path` does not decode, or None. JPEGs decode at 1/8 scale (the whole stream is still read), so a
    truncated file is caught at a fraction of a full decode's cost."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def require_decodable(paths: Sequence[Path], source: str) -> None:
    """Refuse the data set if any image does not decode, naming the first and counting the rest."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        failures = [(p, e) for p, e in zip(paths, pool.map(decode_error, paths)) if e is not None]
    if failures:
        path, reason = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise DetnasError(f"{path}: cannot decode image ({reason}){more} in the training data {source}; replace or "
                          "remove the file before training")
