"""bench/suite: scripts that print figures and ratios and write JSON; `run_suite` is their shared entry point."""

from __future__ import annotations

import sys
from collections.abc import Callable

from detnas.errors import DetnasError
from detnas.space import DetectorGenes, SearchSpace, register_space

#: a demo-scale elastic whole-detector space for the latency-profile suites on a CPU: the 300m twin's genes (op,
#: width multiple 0.5-1.5, depth down to one block per stage, FPN width, box-head convs and FC, proposals, input
#: size 480-800 at the 800 scale, i.e. 96-160 px at --size 160) on a narrower, shallower backbone and a narrow
#: FPN / head, so one path runs in milliseconds on one core and a profile is built in minutes
ELASTIC_DEMO = register_space(SearchSpace(
    "bench-elastic-demo", 16, (48, 96, 192, 384), (2, 2, 3, 2), 512,
    description="demo-scale elastic whole-detector space of the latency-profile suites",
    width_multipliers=(0.5, 1.0, 1.5), min_depths=(1, 1, 1, 1),
    detector=DetectorGenes(fpn_widths=(32, 64), head_convs=(1, 2), head_fc=(64, 128), proposals=(25, 50, 100),
                           input_sizes=(480, 640, 800))))


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
