"""Tables that keep every number whole at any width: text wraps between words, and when even that does not fit,
the least important columns are left out (and the caption says which), never a figure cut to "0.0…".

rich shrinks a too-wide table by eliding cells; a latency of "11.…" or an AP of "0.0…" is worse than no column.
`fitted_table` lays the columns out itself: each column is at least as wide as its longest word, wider ones give
up width first, and the table's edges and padding are counted as rich draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.table import Table


@dataclass(frozen=True)
class Col:
    """A column: its header, how it is justified, and its priority (columns of the lowest go first). A `fold`
    column holds long codes without spaces (an arch's choices) that may break anywhere, down to `FOLD_WIDTH`."""

    name: str
    justify: Literal["left", "right", "center"] = "left"
    priority: int = 1
    fold: bool = False


FOLD_WIDTH = 12


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(word) for text in texts for line in text.splitlines() for word in line.split()), default=1)


def _longest_line(texts: Sequence[str]) -> int:
    return max((len(line) for text in texts for line in text.splitlines()), default=1)


def fitted_table(columns: Sequence[Col], rows: Sequence[Sequence[str]], width: int, caption: str | None = None,
                 **options: Any) -> Table:
    """A rich Table of `rows` (cells as text) that fits `width` characters without cutting a word or number."""
    cells = [[col.name, *(row[i] for row in rows)] for i, col in enumerate(columns)]
    least = [max(_longest_word([col.name]), min(FOLD_WIDTH, _longest_word(texts))) if col.fold else
             _longest_word(texts) for col, texts in zip(columns, cells)]
    most = [max(_longest_line(texts), low) for texts, low in zip(cells, least)]
    kept = list(range(len(columns)))

    def overhead(count: int) -> int:
        return 3 * count + 1  # one space of padding on each side of every cell and a rule between and around them

    while len(kept) > 1 and sum(least[i] for i in kept) + overhead(len(kept)) > width:
        kept.remove(min(kept, key=lambda i: (columns[i].priority, -i)))  # the least important, rightmost first
    widths = {i: most[i] for i in kept}
    excess = sum(widths.values()) + overhead(len(kept)) - width
    while excess > 0:
        shrinkable = [i for i in kept if widths[i] > least[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: (widths[i] - least[i], i))
        widths[widest] -= 1
        excess -= 1
    left_out = [columns[i].name for i in range(len(columns)) if i not in kept]
    if left_out:
        note = f"left out at {width} columns: {', '.join(left_out)} (a wider terminal or COLUMNS=N shows them)"
        caption = f"{caption}\n{note}" if caption else note
    table = Table(caption=caption, **options)
    for i in kept:
        table.add_column(columns[i].name, justify=columns[i].justify, width=widths[i], overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    return table
