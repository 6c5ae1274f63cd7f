"""Terminal output with rich markup off: paths, messages and hints print exactly as given.

A file name like `x[/b].json` or a hint like `pip install 'detnas[tensorrt]'` would otherwise be parsed as markup
(a crash, or text silently dropped). Styling is applied only where detnas writes it, with `labelled`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text


def plain_console(stderr: bool = False, **options: Any) -> Console:
    """A rich console that never interprets `[...]` in what it prints (tables included)."""
    return Console(stderr=stderr, markup=False, **options)


def labelled(label: str, style: str, message: object) -> Text:
    """`label` in `style` (e.g. 'error:' in bold red), then the message verbatim."""
    return Text.assemble((label, style), " ", str(message))


def quiet_onnxruntime() -> None:
    """Keep only ONNX Runtime's fatal log lines: it logs a GPU provider that cannot load as several lines before
    detnas' one-line error says the same. For the CLI, which owns its process; the library leaves ORT's logging
    alone."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)
