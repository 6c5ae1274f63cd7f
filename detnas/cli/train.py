"""`detnas train`: the three DetNAS training stages over `detnas.train` (supernet-cls, supernet-det, child).

Every stage takes a recipe preset (`detnas train recipes`), an optional config file and `--set key=value`
overrides; the resolved config is saved as `<out>/config.json`. Under torchrun every rank runs the same command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from detnas.cli.options import DetectorName, option

app = typer.Typer(help="Train supernets (classification, detection) and retrain a found architecture.",
                  no_args_is_help=True)

RecipeOpt = typer.Option(None, "--recipe", "-r", help="Preset to start from (see `detnas train recipes`).")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML/JSON file of config keys (may name `recipe`).")
SetOpt = typer.Option([], "--set", "-s", help="Override any config key, e.g. --set lr=0.05 (repeatable).")
OutOpt = typer.Option(None, "--out", "-o", help="Run folder (config.json, metrics.jsonl, checkpoints/, final.*).")
ImagesOpt = Annotated[Path | None, option("images", "Training images: the images of --ann or a VOC root (detection), "
                                         "an ImageFolder root with one folder per class (classification).")]
ValImagesOpt = Annotated[Path | None, option("images", "Validation images for periodic evaluation (same layout as "
                                            "--images).", prefix="val")]
AnnOpt = Annotated[Path | None, option("ann", "Of --images (VOC: leave it out, or --set ann=trainval for one image "
                                      "set).")]
ValAnnOpt = Annotated[Path | None, option("ann", "Of --val-images.", prefix="val")]
DetectorOpt = Annotated[DetectorName | None, option("detector", "Default: the recipe's.")]
SpaceOpt = Annotated[str | None, option("space", "Default: detnas-300m.")]
ResumeOpt = typer.Option(False, "--resume", help="Continue the latest checkpoint in --out (same recipe).")
DeviceOpt = Annotated[str | None, option("device", "Default: the recipe's (auto: cuda when visible); under torchrun "
                                         "one GPU per rank.")]
WorkersOpt = typer.Option(None, "--workers", help="Data-loading worker processes per rank.")
ItersOpt = typer.Option(None, "--iterations", "-n", help="Total iterations (part of the recipe).")


def _run(kind: str, default_recipe: str, recipe: str | None, config: str | None, overrides: list[str],
         **flags: Any) -> None:
    """Resolve the config (without --recipe or --config: `default_recipe`, said on stderr) and train the stage."""
    from detnas.console import plain_console
    from detnas.train import resolve_config, run_stage
    from detnas.train.recipes import parse_overrides, rescale_milestones

    stderr = plain_console(stderr=True) if os.environ.get("RANK", "0") == "0" else None
    if recipe is None and config is None:
        recipe = default_recipe
        if stderr:
            stderr.print(f"recipe: {recipe} (the default without --recipe: a small CPU run; `detnas train recipes` "
                         "lists the paper-* ones)", highlight=False, soft_wrap=True)
    explicit = {k: str(v) if isinstance(v, Path) else v  # config values are plain JSON
                for k, v in flags.items() if v is not None and v is not False}  # 0 is a value (-n 0)
    given = {**explicit, **parse_overrides(overrides)}
    if config is None:  # a config file's own milestones are the user's choice
        given, note = rescale_milestones(recipe, given)
        if note and stderr:
            stderr.print(note, highlight=False, soft_wrap=True)
    cfg = resolve_config(recipe, config, given)
    if stderr and cfg.task == "det" and not cfg.init and not cfg.resume:
        stderr.print(f"no --init: the backbone starts from scratch (DetNAS starts it from `detnas train "
                     f"{'child --stage cls' if kind.startswith('child') else 'supernet-cls'}`)", highlight=False,
                     soft_wrap=True)
    final = run_stage(kind, cfg)
    if stderr:
        stderr.print(f"weights: {final}", highlight=False, soft_wrap=True)


@app.command("recipes")
def recipes_cmd() -> None:
    """List the recipe presets (paper-* mirror DetNAS section 5; cpu-* are small CPU runs)."""
    from rich.console import Console

    from detnas.tables import Col, fitted_table
    from detnas.train import RECIPES, resolve_config

    columns = [Col("name", priority=9), Col("task", priority=3), Col("iterations", "right", 8),
               Col("batch", "right", 8), Col("lr", "right", 8), Col("schedule", priority=7), Col("size", priority=6),
               Col("detector", priority=5), Col("sampler", priority=2), Col("style", priority=4)]
    rows = []
    for name in RECIPES:  # resolved, so a user's preset that leaves fields at their defaults shows them too
        c = resolve_config(name)
        size = str(c.image_size) if c.task == "cls" else f"{c.min_size}/{c.max_size}"
        sched = c.schedule + (f" {', '.join(map(str, c.milestones))}" if c.milestones else "")
        style = c.detector_style if c.task == "det" else c.classifier_style
        rows.append([name, c.task, str(c.iterations), str(c.batch_size), str(c.lr), sched, size,
                     c.detector if c.task == "det" else "", c.sampler, f"{style}{'' if c.amp else ', fp32'}"])
    console = Console()
    console.print(fitted_table(columns, rows, console.width, title="training recipes", caption="paper-*: as the "
                               "official DetNAS code (FP32, its FLOPs bins, optimiser groups, detector and classifier "
                               "details); cpu-*: small, torchvision defaults, AMP on CUDA. Deviations from the official code: "
                               "docs/deviations.md."))


@app.command("supernet-cls")
def supernet_cls(
    data: ImagesOpt = None, val_data: ValImagesOpt = None, out: str = OutOpt, recipe: str = RecipeOpt,
    config: str = ConfigOpt, overrides: list[str] = SetOpt, space: SpaceOpt = None, iterations: int = ItersOpt,
    sampler: str = typer.Option(None, "--sampler", help="uniform, detnas-bins (the official 7 FLOPs bins, "
                                "300M space) or flops-bins (bins over the space's own FLOPs range)."),
    resume: bool = ResumeOpt, device: DeviceOpt = None, workers: int = WorkersOpt,
) -> None:
    """Pre-train the classification supernet on an ImageFolder, one random path per iteration."""
    _run("supernet-cls", "cpu-cls", recipe, config, overrides, data=data,
         val_data=val_data, out=out, space=space, iterations=iterations, sampler=sampler, resume=resume,
         device=device, workers=workers)


@app.command("supernet-det")
def supernet_det(
    data: ImagesOpt = None, ann: AnnOpt = None, val_data: ValImagesOpt = None, val_ann: ValAnnOpt = None,
    init: str = typer.Option(None, "--init", help="supernet-cls checkpoint whose backbone weights start training "
                             "(optional: without it the backbone starts from scratch)."),
    detector: DetectorOpt = None,
    out: str = OutOpt, recipe: str = RecipeOpt, config: str = ConfigOpt, overrides: list[str] = SetOpt,
    space: SpaceOpt = None, iterations: int = ItersOpt, resume: bool = ResumeOpt, device: DeviceOpt = None,
    workers: int = WorkersOpt,
) -> None:
    """Fine-tune the supernet as a detector (COCO json or VOC), one random path per iteration, BN trained."""
    _run("supernet-det", "cpu-det", recipe, config, overrides, data=data, ann=ann,
         val_data=val_data, val_ann=val_ann, init=init, detector=detector, out=out, space=space,
         iterations=iterations, resume=resume, device=device, workers=workers)


@app.command("child")
def child(
    arch: Annotated[str | None, option("arch", short="-a")] = None,
    stage: Annotated[Literal["cls", "det"], typer.Option(help="cls: classification from scratch; det: detection "
                                                         "from --init.")] = "cls",
    data: ImagesOpt = None, ann: AnnOpt = None, val_data: ValImagesOpt = None, val_ann: ValAnnOpt = None,
    init: str = typer.Option(None, "--init", help="det: the child-cls checkpoint of the same arch."),
    detector: DetectorOpt = None,
    out: str = OutOpt, recipe: str = RecipeOpt, config: str = ConfigOpt, overrides: list[str] = SetOpt,
    space: SpaceOpt = None, iterations: int = ItersOpt, resume: bool = ResumeOpt, device: DeviceOpt = None,
    workers: int = WorkersOpt,
) -> None:
    """Retrain one fixed architecture: classification from scratch, then detection initialised from it."""
    _run(f"child-{stage}", f"cpu-{stage}", recipe, config, overrides, arch=arch, data=data,
         ann=ann, val_data=val_data, val_ann=val_ann, init=init, detector=detector, out=out, space=space,
         iterations=iterations, resume=resume, device=device, workers=workers)
