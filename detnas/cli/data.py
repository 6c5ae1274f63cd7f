"""`detnas data`: generate the embedded demo data, make the paper's split, check a dataset before training."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from detnas.cli.options import option
from detnas.console import plain_console
from detnas.errors import DetnasWarning

app = typer.Typer(help="Datasets: demo data, the supernet/search split, checks.", no_args_is_help=True)
console = plain_console()


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for detection/ (COCO json + PNGs) and classification/.")],
    seed: Annotated[int, typer.Option(help="Generator seed; the same seed writes the same files.")] = 0,
    train_images: Annotated[int, typer.Option("--train-count", min=1, help="Detection training images.")] = 48,
    val_images: Annotated[int, typer.Option("--val-count", min=1, help="Detection validation images.")] = 16,
) -> None:
    """Write the small generated shapes data sets (no download)."""
    from detnas.data.demo import make_demo_classification, make_demo_detection

    det = make_demo_detection(out / "detection", train_images, val_images, seed)
    cls = make_demo_classification(out / "classification", seed=seed)
    console.print(f"detection: --ann {det.train_ann} --images {det.train_images} "
                  f"(val: {det.val_ann} {det.val_images})", highlight=False, soft_wrap=True)
    console.print(f"classification: --images {cls / 'train'} --val-images {cls / 'val'}", highlight=False)


@app.command("split")
def split_cmd(
    ann: Annotated[Path, option("ann", "The detection training set.")],
    out: Annotated[Path, typer.Option(help="Folder for supernet_train.json and search_val.json.")],
    val_size: Annotated[int, typer.Option("--val-count", help="Images in the search-validation part (paper: 5000).")]
    = 5000,
    seed: Annotated[int, typer.Option(help="Sampling seed; the same seed gives the same split.")] = 0,
) -> None:
    """The paper's split: a random search-validation part; the rest fine-tunes the supernet (images disjoint)."""
    from detnas.data.split import split_coco

    train, val = split_coco(ann, val_size, seed, out)
    console.print(f"supernet training part: {train}\nsearch validation part: {val}", highlight=False)


@app.command("check")
def check_cmd(
    ann: Annotated[Path, option("ann")],
    images: Annotated[Path, option("images", "The images of --ann.")],
    strict: Annotated[bool, typer.Option(help="Fail on the first bad box instead of skipping it.")] = False,
) -> None:
    """Load every record and decode every image; report counts, skipped boxes and crowd regions left out."""
    from detnas.data.coco import CocoDetection
    from detnas.progress import track

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetnasWarning)  # the skip report is printed below, once
        dataset = CocoDetection(ann, images, strict=strict)
    dataset.require_boxes("training")
    for i in track(range(len(dataset)), f"decoding {len(dataset)} images"):
        dataset.load_image(i)
    boxes = sum(len(r.labels) for r in dataset.records)
    console.print(f"{ann}: {len(dataset)} images decoded, {boxes} training boxes, {dataset.num_classes} classes",
                  highlight=False, soft_wrap=True)
    console.print(dataset.skip_report(), highlight=False, soft_wrap=True)
    console.print(dataset.crowd_report(), highlight=False, soft_wrap=True)
