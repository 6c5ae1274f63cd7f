"""Progress bars with an ETA for the steps that take more than a few seconds (search, evaluation, export, data
checks, device profiles, benchmark tables).

Library code marks a long loop with `track` and a long single step with `task`; both draw only inside
`progress_display`, which the CLI opens once per command (not under `--quiet`, and only when stdout and stderr are
terminals). Imported as a library, or with output piped to a file, detnas stays silent. Bars go to stderr and
vanish when their step ends, so printed results are never interleaved with them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from detnas.console import plain_console

T = TypeVar("T")


def bar_columns(*extra: ProgressColumn) -> tuple[ProgressColumn, ...]:
    """The one bar layout of detnas: what, bar, done/total, `extra`, elapsed, ETA."""
    return (SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), *extra,
            TimeElapsedColumn(), TimeRemainingColumn())


def new_bar(stream: TextIO, *extra: ProgressColumn, transient: bool = False) -> Progress:
    return Progress(*bar_columns(*extra), console=plain_console(file=stream), transient=transient)


def wanted(quiet: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Bars are drawn unless --quiet, and only when both stdout and stderr are terminals (nothing in logs/pipes)."""
    return not quiet and (stdout or sys.stdout).isatty() and (stderr or sys.stderr).isatty()


class _Display:
    """One rich Progress shared by nested steps; live only while at least one step is open."""

    def __init__(self, stream: TextIO) -> None:
        self.bar = new_bar(stream, transient=True)
        self.open = 0

    def add(self, description: str, total: float | None) -> TaskID:
        task = self.bar.add_task(description, total=total)
        if self.open == 0:
            self.bar.start()  # drawn at once, with the new step in it
        self.open += 1
        return task

    def remove(self, task: TaskID) -> None:
        self.bar.remove_task(task)
        self.open -= 1
        if self.open == 0:
            self.bar.stop()


_current: ContextVar[_Display | None] = ContextVar("detnas_progress", default=None)


@contextmanager
def progress_display(enabled: bool, stream: TextIO | None = None) -> Iterator[None]:
    """Let `task` / `track` draw (on `stream`, default stderr) for the duration of the block when `enabled`."""
    token = _current.set(_Display(stream or sys.stderr) if enabled else None)
    try:
        yield
    finally:
        display = _current.get()
        if display is not None and display.open:
            display.bar.stop()
        _current.reset(token)


@contextmanager
def silenced() -> Iterator[None]:
    """No bars from `task` / `track` inside: for code that draws its own live bar (training), since two live
    displays on one terminal overwrite each other."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


class Step:
    """Handle of one running step: `advance` the count, `describe` what it is doing now."""

    def __init__(self, display: _Display | None, task: TaskID | None) -> None:
        self._display, self._task = display, task

    def advance(self, amount: float = 1) -> None:
        if self._display is not None and self._task is not None:
            self._display.bar.advance(self._task, amount)

    def describe(self, description: str) -> None:
        if self._display is not None and self._task is not None:
            self._display.bar.update(self._task, description=description)


@contextmanager
def task(description: str, total: float | None = None) -> Iterator[Step]:
    """A step of `total` units (None: of unknown length, drawn as a pulsing bar with its elapsed time)."""
    display = _current.get()
    if display is None:
        yield Step(None, None)
        return
    task_id = display.add(description, total)
    try:
        yield Step(display, task_id)
    finally:
        display.remove(task_id)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield `items`, advancing a bar (total: `len(items)` when it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with task(description, total) as step:
        for item in items:
            yield item
            step.advance()
