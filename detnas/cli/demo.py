"""`detnas demo`: the main job end to end on the embedded demo data (see detnas.workflows.main_job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from detnas.console import plain_console

console = plain_console()


def demo_cmd(
    out: Annotated[Path, typer.Option(help="Results folder (created; a rerun into it continues that run and repeats "
                                      "no finished step).")] = Path("results/demo"),
    plan: Annotated[str, typer.Option(help="full: the README run (410-461 s measured on 2 idle CPU cores); smoke: a quick check.")]
    = "full",
    latency_target: Annotated[str | None, typer.Option(help="Latency target such as 25ms (default: the median "
                                                       "latency of 8 random architectures, measured here).")] = None,
) -> None:
    """Pre-train a small supernet, fine-tune it for detection, search under a latency target on ONNX Runtime CPU,
    export the winner to ONNX, benchmark it and predict on an image."""
    import time

    from detnas.search.latency import parse_latency_ms
    from detnas.workflows.main_job import MainJobPlan, run_main_job

    start = time.perf_counter()
    target = parse_latency_ms(latency_target) if latency_target else None
    result = run_main_job(out, MainJobPlan.named(plan), target)
    console.print(f"\n[bold]done in {time.perf_counter() - start:.0f} s[/]; winner {result.arch.compact()} "
                  f"(hash {result.arch.hash})", markup=True)
    for line in result.summary.highlights():
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    for name, path in result.files.items():
        console.print(f"  {name:<17} {path}", highlight=False, soft_wrap=True)
