"""Terminal output with rich markup off: paths, messages and hints print exactly as given; and what a command
prints of the library's logging (`command_logging`, used by the CLI and the bench suites, never by the library).

A file name like `x[/b].json` or a hint like `pip install 'detnas[tensorrt]'` would otherwise be parsed as markup
(a crash, or text silently dropped). Styling is applied only where detnas writes it, with `labelled`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


class _ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        shown = labelled("warning:", "bold yellow", message) if record.levelno >= logging.WARNING else message
        plain_console().print(shown, highlight=False, soft_wrap=True)  # stdout as it is now (tests capture it)


class _QuantizerHints(logging.Filter):
    """ONNX Runtime's quantizer logs a pre-processing hint on the root logger at every call; detnas quantizes
    graphs it has prepared itself, so for a command's user the hint is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"onnxruntime{os.sep}quantization" not in record.pathname or record.levelno >= logging.ERROR


@contextmanager
def command_logging() -> Iterator[None]:
    """The library logs its progress to the `detnas.*` loggers and prints nothing itself; for the duration of one
    command their INFO lines print verbatim on stdout (a warning as one 'warning:' line), as the command's own
    output. Everything is restored after (the tests run many commands in one process); the root logger keeps its
    level and handlers."""
    library, root = logging.getLogger("detnas"), logging.getLogger()
    handler, hints = _ConsoleHandler(), _QuantizerHints()
    saved = library.level, library.propagate
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False  # printed once, here, not again by a handler on the root logger
    root.addFilter(hints)
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(saved[0])
        library.propagate = saved[1]
        root.removeFilter(hints)
