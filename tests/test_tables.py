"""Tables at 80 columns keep every number whole: text wraps between words, the least important columns go first
(the caption names them), never a figure cut to '0.0…'."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from test_search_journal_compat import OLD_JOURNAL

from detnas.search.report import SearchRun, summary_table
from detnas.tables import Col, fitted_table


def render(table, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, markup=False).print(table)
    return out.getvalue()


def test_numbers_stay_whole_and_low_priority_columns_go_first() -> None:
    columns = [Col("name", priority=9), Col("note", priority=1), Col("latency ms", "right", 8),
               Col("AP", "right", 8), Col("origin", priority=2)]
    rows = [[f"candidate-{i}", "a long free text that can wrap between its words " * 2, f"{1234.5678 + i:.4f}",
             f"{0.000123 * i:.6f}", "mutation"] for i in range(5)]
    for width in (80, 60, 40):
        text = render(fitted_table(columns, rows, width), width)
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
        for row in rows:
            assert row[0] in text and row[2] in text and row[3] in text, (width, text)
    narrow = render(fitted_table(columns, rows, 40), 40)
    assert "left out at 40 columns: note, origin" in " ".join(narrow.split()), narrow
    assert "left out" not in render(fitted_table(columns, rows, 200), 200)


def test_search_table_at_80_columns(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_text("\n".join(OLD_JOURNAL) + "\n")
    run = SearchRun.load(journal)
    text = render(summary_table(run, 10, 80))
    assert "…" not in text, text
    for candidate in run.candidates:
        for figure in (f"{candidate.metrics['AP']:.4f}", f"{candidate.latency.median_ms:.3f}", candidate.hash):
            assert figure in text, (figure, text)


def _cli(*args: str, width: int = 80) -> str:
    done = subprocess.run([sys.executable, "-m", "detnas", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": str(width)})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow  # three CLI commands in subprocesses (each imports torch): 61 s on 2 loaded cores
def test_cli_tables_at_80_columns(tmp_path: Path) -> None:
    """`train recipes`, `search report` and `arch list` in a subprocess with COLUMNS=80: no figure elided."""
    from detnas.train import RECIPES

    recipes = _cli("train", "recipes")
    assert "…" not in recipes and max(len(line) for line in recipes.splitlines()) <= 80, recipes
    for preset in map(RECIPES.get, RECIPES):
        for figure in (str(preset["iterations"]), str(preset["batch_size"]), str(preset["lr"])):
            assert re.search(rf"(?<![\d.]){re.escape(figure)}(?![\d.])", recipes), (figure, recipes)
    journal = tmp_path / "journal.jsonl"
    journal.write_text("\n".join(OLD_JOURNAL) + "\n")
    report = _cli("search", "report", str(journal))
    assert "…" not in report and "0.6239" in report and "12.519" in report, report
    spaces = _cli("arch", "list")
    assert "…" not in spaces and "1318.4M" in spaces, spaces
