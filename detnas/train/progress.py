"""Training progress: a rich bar (loss, lr, images/s, ETA) on a terminal, plain lines otherwise, and a JSONL log.

Only rank 0 reports; the JSONL file (`metrics.jsonl`) gets one object per logged iteration and per evaluation,
appended and flushed, so a crashed run keeps everything it logged. A resumed run first drops the lines after its
checkpoint (it replays those iterations) and a torn last line, so every iteration is logged once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from detnas.io import append_line, atomic_write_text


def _format(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


class ProgressReporter:
    def __init__(self, run_dir: Path, total: int, start: int, enabled: bool, label: str,
                 stream: TextIO | None = None) -> None:
        self.enabled, self.total, self.start, self.label = enabled, total, start, label
        self.stream = stream or sys.stderr
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self._t0 = time.perf_counter()
        self._bar = None
        if enabled:
            self._drop_replayed()
        if enabled and self.stream.isatty():
            from rich.progress import TextColumn

            from detnas.progress import new_bar, silenced

            self._bar = new_bar(self.stream, TextColumn("{task.fields[stats]}", markup=False))
            self._silenced = silenced()  # evaluations during training: no second live bar over this one
            self._silenced.__enter__()
            self._task = self._bar.add_task(label, total=total, completed=start, stats="")
            self._bar.start()

    def _drop_replayed(self) -> None:
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                iteration = json.loads(line).get("iteration", 0)
            except (json.JSONDecodeError, AttributeError):
                continue  # torn by a kill mid-write
            if 0 < self.start and iteration <= self.start:
                kept.append(line + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))

    def _append(self, record: dict[str, Any]) -> None:
        append_line(self.metrics_path, json.dumps(record) + "\n")

    def step(self, iteration: int, values: dict[str, Any], log: bool) -> None:
        """`iteration` is the number of finished iterations; `log` writes the JSONL line and the plain line."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=iteration, stats=_format(values))
        if log:
            self._append({"iteration": iteration, "time": round(time.perf_counter() - self._t0, 3), **values})
            if self._bar is None:
                done = iteration - self.start
                elapsed = time.perf_counter() - self._t0
                eta = elapsed / done * (self.total - iteration) if done else 0.0
                print(f"{self.label} {iteration}/{self.total}  {_format(values)}  eta {eta:.0f}s",
                      file=self.stream, flush=True)

    def event(self, iteration: int, kind: str, values: dict[str, Any]) -> None:
        """Evaluations and checkpoints: always a line (above the bar on a terminal) and a JSONL record."""
        if not self.enabled:
            return
        self._append({"iteration": iteration, "event": kind, **values})
        line = f"{self.label} {iteration}/{self.total}  {kind}  {_format(values)}"
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._silenced.__exit__(None, None, None)
