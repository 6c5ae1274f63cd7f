"""`detnas train`: the three DetNAS training stages over `detnas.train` (supernet-cls, supernet-det, child).

Every stage takes a recipe preset (`detnas train recipes`), an optional config file and `--set key=value`
overrides; the resolved config is saved as `<out>/config.json`. Under torchrun every rank runs the same command.
"""

from __future__ import annotations

import os
from typing import Any

import typer

app = typer.Typer(help="Train supernets (classification, detection) and retrain a found architecture.",
                  no_args_is_help=True)

RecipeOpt = typer.Option(None, "--recipe", "-r", help="Preset to start from (see `detnas train recipes`).")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML/JSON file of config keys (may name `recipe`).")
SetOpt = typer.Option([], "--set", "-s", help="Override any config key, e.g. --set lr=0.05 (repeatable).")
OutOpt = typer.Option(None, "--out", "-o", help="Run folder (config.json, metrics.jsonl, checkpoints/, final.*).")
DataOpt = typer.Option(None, "--data", help="Training data: ImageFolder root (cls) or image folder / VOC root (det).")
ValOpt = typer.Option(None, "--val-data", help="Validation data for periodic evaluation (same layout as --data).")
SpaceOpt = typer.Option(None, "--space", help="Search space name or .json/.yaml file (default: detnas-300m).")
ResumeOpt = typer.Option(False, "--resume", help="Continue the latest checkpoint in --out (same recipe).")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (torchrun: one GPU per rank).")
WorkersOpt = typer.Option(None, "--workers", help="Data-loading worker processes per rank.")
ItersOpt = typer.Option(None, "--iterations", "-n", help="Total iterations (part of the recipe).")


def _run(kind: str, recipe: str | None, config: str | None, overrides: list[str], **flags: Any) -> None:
    from detnas.console import plain_console
    from detnas.train import resolve_config, run_stage
    from detnas.train.recipes import parse_overrides

    explicit = {k: v for k, v in flags.items() if v is not None and v is not False}  # 0 is a value (-n 0)
    cfg = resolve_config(recipe, config, {**explicit, **parse_overrides(overrides)})
    final = run_stage(kind, cfg)
    if os.environ.get("RANK", "0") == "0":
        plain_console(stderr=True).print(f"weights: {final}", highlight=False, soft_wrap=True)


@app.command("recipes")
def recipes_cmd() -> None:
    """List the recipe presets (paper-* mirror DetNAS section 5; cpu-* are small CPU runs)."""
    from rich.console import Console
    from rich.table import Table

    from detnas.train import PRESETS

    table = Table(title="training recipes", caption="paper-*: as the official DetNAS code (FP32, its FLOPs bins, "
                  "optimiser groups, detector and classifier details); cpu-*: small, torchvision defaults, AMP on "
                  "CUDA. README: 'Deviations from the official code'.")
    for col in ("name", "task", "iterations", "batch", "lr", "schedule", "size", "detector", "sampler", "style"):
        table.add_column(col, no_wrap=col == "name")
    for name, p in PRESETS.items():
        size = str(p.get("image_size", "")) if p["task"] == "cls" else f"{p['min_size']}/{p['max_size']}"
        sched = p["schedule"] + (f" {','.join(map(str, p['milestones']))}" if p.get("milestones") else "")
        style = p.get("detector_style" if p["task"] == "det" else "classifier_style", "torchvision")
        table.add_row(name, p["task"], str(p["iterations"]), str(p["batch_size"]), str(p["lr"]), sched, size,
                      p.get("detector", "") if p["task"] == "det" else "", p.get("sampler", "uniform"),
                      f"{style}{'' if p.get('amp', True) else ', fp32'}")
    Console().print(table)


@app.command("supernet-cls")
def supernet_cls(
    data: str = DataOpt, val_data: str = ValOpt, out: str = OutOpt, recipe: str = RecipeOpt,
    config: str = ConfigOpt, overrides: list[str] = SetOpt, space: str = SpaceOpt, iterations: int = ItersOpt,
    sampler: str = typer.Option(None, "--sampler", help="uniform, detnas-bins (the official 7 FLOPs bins, "
                                "300M space) or flops-bins (bins over the space's own FLOPs range)."),
    resume: bool = ResumeOpt, device: str = DeviceOpt, workers: int = WorkersOpt,
) -> None:
    """Pre-train the classification supernet on an ImageFolder, one random path per iteration."""
    _run("supernet-cls", recipe or (None if config else "cpu-cls"), config, overrides, data=data,
         val_data=val_data, out=out, space=space, iterations=iterations, sampler=sampler, resume=resume,
         device=device, workers=workers)


@app.command("supernet-det")
def supernet_det(
    data: str = DataOpt, ann: str = typer.Option(None, "--ann", help="COCO JSON for --data, or VOC image set."),
    val_data: str = ValOpt, val_ann: str = typer.Option(None, "--val-ann", help="COCO JSON for --val-data."),
    init: str = typer.Option(None, "--init", help="supernet-cls checkpoint; its backbone weights start training."),
    detector: str = typer.Option(None, "--detector", help="fpn (Faster R-CNN + FPN) or retinanet."),
    out: str = OutOpt, recipe: str = RecipeOpt, config: str = ConfigOpt, overrides: list[str] = SetOpt,
    space: str = SpaceOpt, iterations: int = ItersOpt, resume: bool = ResumeOpt, device: str = DeviceOpt,
    workers: int = WorkersOpt,
) -> None:
    """Fine-tune the supernet as a detector (COCO json or VOC), one random path per iteration, BN trained."""
    _run("supernet-det", recipe or (None if config else "cpu-det"), config, overrides, data=data, ann=ann,
         val_data=val_data, val_ann=val_ann, init=init, detector=detector, out=out, space=space,
         iterations=iterations, resume=resume, device=device, workers=workers)


@app.command("child")
def child(
    arch: str = typer.Option(None, "--arch", "-a", help="Released name, arch JSON file or inline JSON."),
    stage: str = typer.Option("cls", "--stage", help="cls: classification from scratch; det: detection from --init."),
    data: str = DataOpt, ann: str = typer.Option(None, "--ann", help="det: COCO JSON, or VOC image set name."),
    val_data: str = ValOpt, val_ann: str = typer.Option(None, "--val-ann", help="COCO JSON for --val-data (det)."),
    init: str = typer.Option(None, "--init", help="det: the child-cls checkpoint of the same arch."),
    detector: str = typer.Option(None, "--detector", help="fpn or retinanet (det)."),
    out: str = OutOpt, recipe: str = RecipeOpt, config: str = ConfigOpt, overrides: list[str] = SetOpt,
    space: str = SpaceOpt, iterations: int = ItersOpt, resume: bool = ResumeOpt, device: str = DeviceOpt,
    workers: int = WorkersOpt,
) -> None:
    """Retrain one fixed architecture: classification from scratch, then detection initialised from it."""
    from detnas.errors import DetnasError

    if stage not in ("cls", "det"):
        raise DetnasError(f"--stage '{stage}' must be cls or det")
    _run(f"child-{stage}", recipe or (None if config else f"cpu-{stage}"), config, overrides, arch=arch, data=data,
         ann=ann, val_data=val_data, val_ann=val_ann, init=init, detector=detector, out=out, space=space,
         iterations=iterations, resume=resume, device=device, workers=workers)
