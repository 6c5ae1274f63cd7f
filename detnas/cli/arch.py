"""`detnas arch`: list, show and sample architectures."""

from __future__ import annotations

import typer
from rich.table import Table

from detnas.arch import released_archs, resolve_arch, sample_arch
from detnas.console import plain_console
from detnas.sizes import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, parse_hw
from detnas.space import CHOICE_NAMES, get_space, list_spaces

app = typer.Typer(help="Inspect search spaces and architectures.", no_args_is_help=True)
console = plain_console()


@app.command("list")
def list_cmd() -> None:
    """List the registered search spaces and the released DetNAS architectures."""
    from detnas.flops import count_flops, count_params

    spaces = Table(title="search spaces")
    for col in ("name", "stem", "stage widths", "depths", "head", "choices", "description"):
        spaces.add_column(col)
    for s in list_spaces():
        spaces.add_row(s.name, str(s.stem_width), str(list(s.stage_widths)), str(list(s.stage_depths)),
                       str(s.head_width), ",".join(CHOICE_NAMES[c] for c in s.choices), s.description)
    console.print(spaces)
    archs = Table(title="released architectures")
    for col in ("name", "space", "hash", "FLOPs@224 (cls)", "params (cls)"):
        archs.add_column(col, no_wrap=True)
    archs.add_column("choices", overflow="fold")
    for name, a in released_archs().items():
        archs.add_row(name, a.space.name, a.hash, f"{count_flops(a, 224, 1000) / 1e6:.1f}M",
                      f"{count_params(a, 1000) / 1e6:.2f}M", a.compact())
    console.print(archs)


@app.command("show")
def show_cmd(
    arch: str = typer.Argument(..., help="Released name (see `detnas arch list`), arch JSON file, or inline JSON."),
    size: str = typer.Option(f"{DEFAULT_MIN_SIZE}x{DEFAULT_MAX_SIZE}", help="Detection input size HxW for the backbone FLOPs."),
    num_classes: int = typer.Option(1000, help="Classes of the classification head counted at 224."),
) -> None:
    """Stage table, FLOPs at 224 (classification network) and at a detection size (backbone), params."""
    from detnas.flops import count_flops, count_params, flops_table

    a = resolve_arch(arch)
    det_size = parse_hw(size)
    _, per_block, _ = flops_table(a.space, (224, 224), 0)
    table = Table(title=f"{arch}  [{a.space.name}, hash {a.hash}]")
    for col in ("stage", "width", "blocks", "choices", "MFLOPs@224"):
        table.add_column(col)
    start = 0
    for s, stage in enumerate(a.per_stage()):
        macs = sum(per_block[start + i][c] for i, c in enumerate(stage))
        table.add_row(str(s + 1), str(a.space.stage_widths[s]), str(len(stage)),
                      " ".join(CHOICE_NAMES[c] for c in stage), f"{macs / 1e6:.1f}")
        start += len(stage)
    console.print(table)
    console.print(f"FLOPs (multiply-adds) at 224x224, classification network: {count_flops(a, 224, num_classes) / 1e6:.1f}M")
    console.print(f"FLOPs (multiply-adds) at 224x224, backbone only:          {count_flops(a, 224) / 1e6:.1f}M")
    console.print(f"FLOPs (multiply-adds) at {det_size[0]}x{det_size[1]}, backbone only:      "
                  f"{count_flops(a, det_size) / 1e9:.2f}G")
    console.print(f"params: classification network {count_params(a, num_classes) / 1e6:.3f}M, "
                  f"backbone {count_params(a) / 1e6:.3f}M")
    console.print(f"choices: {a.compact()}")


@app.command("sample")
def sample_cmd(
    space: str = typer.Option("detnas-300m", help="Space name or .json/.yaml space file."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same arch."),
) -> None:
    """Print a uniformly sampled architecture as arch JSON."""
    typer.echo(sample_arch(get_space(space), seed).to_json())
