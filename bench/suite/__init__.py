"""bench/suite: scripts that print figures and ratios and write JSON; `run_suite` is their shared entry point."""

from __future__ import annotations

import sys
from collections.abc import Callable

from detnas.errors import DetnasError


def run_suite(main: Callable[[], None]) -> None:
    """Run a suite's `main`: a `DetnasError` (bad input, a check refusing to judge) prints one line and exits 2, as
    the `detnas` CLI does, instead of a traceback; the library's log lines print as the CLI prints them."""
    from detnas.console import command_logging

    try:
        with command_logging():
            main()
    except DetnasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
