"""Decoding image files, for every reader (data sets, predict, calibration and parity images, latency inputs):
uint8 CHW RGB, or one line naming the file, what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

import torch

from detnas.errors import DetnasError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_image(path: str | Path, context: str = "", fix: str = "pass JPEG or PNG files") -> torch.Tensor:
    """uint8 CHW RGB of an image file. A missing file, one that is no image ("cannot read") and one whose data are
    broken, e.g. truncated ("cannot decode"), are `DetnasError`s; `context` says where the path came from."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    where = f" ({context})" if context else ""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB")).copy()
    except FileNotFoundError:
        raise DetnasError(f"{path}: image file missing{where}; {fix}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        problem = "cannot read image" if isinstance(exc, UnidentifiedImageError) else "cannot decode image"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DetnasError(f"{path}: {problem}{where}: {reason}; {fix}") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name; none is a one-line error."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise DetnasError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found; pass a folder of images")
    return files


def shared_images(candidates: list[Path], reference: list[Path]) -> list[Path]:
    """The `candidates` that are `reference` images: the same file name, or the same content (sha256: a copy under
    another name or in another folder). Folders do not decide it: two disjoint splits may share one folder, and a
    copy of the evaluation images may sit in another."""
    from detnas.io import file_sha256

    names = {p.name for p in reference}
    digests = {file_sha256(p) for p in reference if p.is_file()}
    return [p for p in candidates if p.name in names or file_sha256(p) in digests]
