"""`detnas arch`: list, show and sample architectures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from detnas.arch import released_archs, resolve_arch, sample_arch
from detnas.cli.options import SizeHW, option, writable_json
from detnas.console import plain_console
from detnas.sizes import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE
from detnas.space import CHOICE_NAMES, get_space, list_spaces

app = typer.Typer(help="Inspect search spaces and architectures.", no_args_is_help=True)
console = plain_console()


@app.command("list")
def list_cmd() -> None:
    """List the registered search spaces and the released DetNAS architectures."""
    from detnas.flops import count_flops, count_params
    from detnas.tables import Col, fitted_table

    spaces = [[s.name, str(s.stem_width), str(list(s.stage_widths)), str(list(s.stage_depths)), str(s.head_width),
               ", ".join(CHOICE_NAMES[c] for c in s.choices), s.description] for s in list_spaces()]
    console.print(fitted_table([Col("name", priority=9), Col("stem", "right", 5), Col("stage widths", priority=7),
                                Col("depths", priority=6), Col("head", "right", 5), Col("choices", priority=3),
                                Col("description", priority=2)], spaces, console.width, title="search spaces"))
    archs = [[name, a.space.name, a.hash, f"{count_flops(a, 224, 1000) / 1e6:.1f}M",
              f"{count_params(a, 1000) / 1e6:.2f}M", a.compact()] for name, a in released_archs().items()]
    console.print(fitted_table([Col("name", priority=9), Col("space", priority=6), Col("hash", priority=4),
                                Col("FLOPs@224 (cls)", "right", 8), Col("params (cls)", "right", 7),
                                Col("choices", priority=5, fold=True)], archs, console.width,
                               title="released architectures"))


@app.command("show")
def show_cmd(
    arch: str = typer.Argument(..., help="Released name (see `detnas arch list`), arch JSON file, or inline JSON."),
    size: Annotated[SizeHW, option("size", "The detection input the backbone FLOPs are counted at.")]
    = f"{DEFAULT_MIN_SIZE}x{DEFAULT_MAX_SIZE}",
    num_classes: int = typer.Option(1000, min=1, help="Classes of the classification head counted at 224."),
    json_out: Annotated[Path | None, typer.Option("--json", callback=writable_json, help="Write the stage table and totals as JSON (schema "
                                                  "detnas.arch/1, docs/json.md).")] = None,
) -> None:
    """Stage table, FLOPs at 224 (classification network) and at a detection size (backbone), params."""
    from detnas.flops import arch_cost
    from detnas.jsonout import write_document

    cost = arch_cost(arch, resolve_arch(arch), size, num_classes)
    table = Table(title=f"{arch}  [{cost.space}, hash {cost.hash}]")
    for col in ("stage", "width", "blocks", "choices", "MFLOPs@224"):
        table.add_column(col)
    for stage in cost.stages:
        table.add_row(str(stage.stage), str(stage.width), str(stage.blocks), " ".join(stage.choices),
                      f"{stage.mflops_224:.1f}")
    console.print(table)
    det_h, det_w = cost.detection_size
    console.print(f"FLOPs (multiply-adds) at 224x224, classification network: {cost.flops_224_classification / 1e6:.1f}M")
    console.print(f"FLOPs (multiply-adds) at 224x224, backbone only:          {cost.flops_224_backbone / 1e6:.1f}M")
    console.print(f"FLOPs (multiply-adds) at {det_h}x{det_w}, backbone only:      "
                  f"{cost.flops_detection_backbone / 1e9:.2f}G")
    console.print(f"params: classification network {cost.params_classification / 1e6:.3f}M, "
                  f"backbone {cost.params_backbone / 1e6:.3f}M")
    console.print(f"choices: {cost.choices}")
    if json_out is not None:
        write_document(json_out, cost.SCHEMA, cost.to_dict())


@app.command("sample")
def sample_cmd(
    space: Annotated[str, option("space")] = "detnas-300m",
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same arch."),
) -> None:
    """Print a uniformly sampled architecture as arch JSON."""
    typer.echo(sample_arch(get_space(space), seed).to_json())
