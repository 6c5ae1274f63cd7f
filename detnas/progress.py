"""Progress with an ETA for the steps that take more than a few seconds (search, evaluation, export, data
checks, device profiles, benchmark tables, latency timing).

Library code marks a long loop with `track` and a long single step with `task`; both report only inside
`progress_display`, which the CLI opens once per command (not under `--quiet`). On a terminal they draw bars on
stderr that vanish when their step ends, so printed results are never interleaved with them. When stderr is not a
terminal (a pipe, a log file, a batch job) they print plain lines instead, as training does: one per unit of work
with the count, the elapsed time and an ETA, at most one every `line_interval()` seconds per step (the last unit
always), and a step of unknown length says how long it took once it ends. A step shorter than the interval leaves
no line, so quick commands and their one-line errors stay as they were. Imported as a library, detnas is silent.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO, TypeVar

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


LINE_INTERVAL_ENV = "DETNAS_PROGRESS_INTERVAL"
LINE_INTERVAL_S = 5.0


def line_interval() -> float:
    """Seconds between two plain progress lines of one step ($DETNAS_PROGRESS_INTERVAL, default 5)."""
    try:
        return max(0.0, float(os.environ.get(LINE_INTERVAL_ENV, LINE_INTERVAL_S)))
    except ValueError:
        return LINE_INTERVAL_S


def wanted(quiet: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Bars are drawn unless --quiet, and only when both stdout and stderr are terminals (else `lines_wanted`)."""
    return not quiet and (stdout or sys.stdout).isatty() and (stderr or sys.stderr).isatty()


def lines_wanted(quiet: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Plain progress lines go to stderr unless --quiet or bars are drawn instead."""
    return not quiet and not wanted(quiet, stdout, stderr)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Line:
    """One step in line mode: its count, and when it last printed."""

    def __init__(self, description: str, total: float | None) -> None:
        self.description, self.total, self.done = description, total, 0.0
        self.start = self.last = time.perf_counter()


class _Lines:
    """Plain progress lines on `stream` for the steps open in it (see the module docstring)."""

    def __init__(self, stream: TextIO, interval: float | None = None) -> None:
        self.stream = stream
        self.interval = line_interval() if interval is None else interval
        self.steps: dict[int, _Line] = {}
        self.next_id = 0

    def add(self, description: str, total: float | None) -> int:
        self.next_id += 1
        self.steps[self.next_id] = _Line(description, total)
        return self.next_id

    def advance(self, task: int, amount: float) -> None:
        step = self.steps[task]
        step.done += amount
        now = time.perf_counter()
        finished = step.total is not None and step.done >= step.total
        if now - step.last < self.interval and not (finished and now - step.start >= self.interval):
            return
        step.last, elapsed = now, now - step.start
        if step.total:
            eta = elapsed / step.done * (step.total - step.done) if step.done else 0.0
            self._print(f"{step.description}: {step.done:g}/{step.total:g}  {_duration(elapsed)} elapsed  "
                        f"eta {_duration(eta)}")
        else:
            self._print(f"{step.description}: {step.done:g} done  {_duration(elapsed)} elapsed")

    def describe(self, task: int, description: str) -> None:
        self.steps[task].description = description

    def remove(self, task: int) -> None:
        step = self.steps.pop(task)
        elapsed = time.perf_counter() - step.start
        if step.total is None and elapsed >= self.interval:
            self._print(f"{step.description}: done in {_duration(elapsed)}")

    def stop(self) -> None:
        self.steps.clear()

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class _Display:
    """One rich Progress shared by nested steps; live only while at least one step is open."""

    def __init__(self, stream: TextIO) -> None:
        self.bar = new_bar(stream, transient=True)
        self.open = 0

    def advance(self, task: TaskID, amount: float) -> None:
        self.bar.advance(task, amount)

    def describe(self, task: TaskID, description: str) -> None:
        self.bar.update(task, description=description)

    def stop(self) -> None:
        if self.open:
            self.bar.stop()

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


_current: ContextVar[_Display | _Lines | None] = ContextVar("detnas_progress", default=None)


@contextmanager
def progress_display(enabled: bool, stream: TextIO | None = None, lines: bool = False) -> Iterator[None]:
    """Let `task` / `track` report (on `stream`, default stderr) for the duration of the block: bars when
    `enabled`, else plain lines when `lines`."""
    stream = stream or sys.stderr
    token = _current.set(_Display(stream) if enabled else _Lines(stream) if lines else None)
    try:
        yield
    finally:
        display = _current.get()
        if display is not None:
            display.stop()
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

    def __init__(self, display: _Display | _Lines | None, task: Any) -> None:
        self._display, self._task = display, task

    def advance(self, amount: float = 1) -> None:
        if self._display is not None and self._task is not None:
            self._display.advance(self._task, amount)

    def describe(self, description: str) -> None:
        if self._display is not None and self._task is not None:
            self._display.describe(self._task, description)


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
