"""`detnas eval`: COCO metrics of a detector (checkpoint or random init) on a COCO json + image folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from detnas.cli.options import DetectorName, option, writable_json
from detnas.console import plain_console, quiet_onnxruntime
from detnas.sizes import MAX_SIDE

if TYPE_CHECKING:
    from detnas.evaluation import EvalReport


def eval_cmd(
    ann: Annotated[Path, option("ann", "Ground truth to evaluate on.")],
    images: Annotated[Path, option("images", "The images of --ann.")],
    arch: Annotated[str | None, option("arch", "Selects the path of a supernet checkpoint; required with "
                                       "--random-init.")] = None,
    weights: Annotated[Path | None, option("weights")] = None,
    random_init: Annotated[bool, typer.Option(help="Evaluate a randomly initialised detector.")] = False,
    detector: Annotated[DetectorName, option("detector", "With --random-init (a checkpoint names its own).")] = "fpn",
    min_size: Annotated[int | None, typer.Option(min=32, max=MAX_SIDE, help="Detector short side; the long side is capped at "
                                                 "min-size*1333/800 (default: the checkpoint's training size, 800 "
                                                 "with --random-init).")] = None,
    proposals: Annotated[int, typer.Option(min=1, help="FPN: RPN proposals per image at test time (1000 as in "
                                           "Detectron; fewer makes the 4-conv box head cheaper on CPU).")] = 1000,
    max_images: Annotated[int | None, option("max-images")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per predictor call.")] = 4,
    device: Annotated[str, option("device")] = "cpu",
    out_json: Annotated[Path | None, typer.Option(callback=writable_json, help="Write the detections as a COCO results "
                                                  "json.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    model: Annotated[Path | None, option("model", "Evaluate the exported artifact itself (`detnas export`).")]
    = None,
    json_out: Annotated[Path | None, typer.Option("--json", callback=writable_json, help="Write the metrics as JSON (schema detnas.eval/1, "
                                                  "docs/json.md).")] = None,
) -> None:
    """Evaluate with pycocotools COCOeval and print AP / AR as a table."""
    import torch

    from detnas.arch import resolve_arch
    from detnas.data.coco import CocoDetection
    from detnas.detection import build_detector, load_detector
    from detnas.distributed import pick_device
    from detnas.errors import DetnasError
    from detnas.evaluation import EvalReport, detector_predictor, evaluate
    from detnas.io import check_outputs
    from detnas.sizes import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, max_size_for
    from detnas.supernet import ChildNet

    if max_images is not None and max_images < 1:
        raise DetnasError(f"--max-images {max_images}: evaluate at least 1 image (leave it out for all)")
    check_outputs(("--json", json_out), ("--out-json", out_json))
    if model is not None:
        from detnas.export.runtime import evaluate_exported

        quiet_onnxruntime()
        metrics, runner = evaluate_exported(model, ann, images, max_images, batch_size, out_json, device=device)
        spec = runner.meta.input
        return show_eval(EvalReport.from_metrics(str(model), runner.backend, ann,
                                                 f"{spec.height}x{spec.width} letterboxed", metrics, out_json), json_out)
    if (weights is None) == (not random_init):
        raise DetnasError("pass exactly one of --weights CKPT or --random-init")
    torch_device = pick_device(device)
    dataset = CocoDetection(ann, images)
    max_size = max_size_for(min_size) if min_size else None
    chosen = resolve_arch(arch) if arch else None
    if random_init:
        if chosen is None:
            raise DetnasError("--random-init needs --arch (e.g. COCO-FPN-300M)")
        torch.manual_seed(seed)
        network = build_detector(detector, ChildNet(chosen), dataset.num_classes + 1, min_size or DEFAULT_MIN_SIZE,
                                 max_size or DEFAULT_MAX_SIZE, proposals=proposals)
        source = f"random-init {detector}"
    else:
        network, meta = load_detector(weights, chosen, min_size, max_size, proposals)
        if list(meta.classes) != dataset.classes:
            raise DetnasError(f"{ann}: its classes differ from the checkpoint's ({len(meta.classes)} "
                              f"classes); evaluate on data with the same category list")
        source = str(weights)
    metrics = evaluate(detector_predictor(network.to(torch_device), str(torch_device)), dataset, out_json=out_json,
                       batch_size=batch_size, max_images=max_images)
    short, long = network.transform.min_size[0], network.transform.max_size
    show_eval(EvalReport.from_metrics(source, f"pytorch {device}", ann, f"short side {short}, long side <= {long}",
                                      metrics, out_json), json_out)


def show_eval(report: EvalReport, json_out: Path | None) -> None:
    """Print the report's table and lines; write it as JSON when asked."""
    from detnas.evaluation import metric_table
    from detnas.jsonout import write_document

    console = plain_console()
    console.print(f"COCO bbox metrics of {report.model} ({report.runtime}) on {report.data} ({report.images} images, "
                  f"{report.input})", highlight=False, soft_wrap=True)
    console.print(metric_table(report.metrics))
    per_image = 1000 * report.predict_seconds / max(1, report.images)
    console.print(f"{report.detections} detections, {per_image:.0f} ms/image inference, "
                  f"COCOeval {report.eval_seconds:.2f} s", highlight=False)
    if report.detections_json is not None:
        console.print(f"detections: {report.detections_json}", highlight=False, soft_wrap=True)
    if json_out is not None:
        write_document(json_out, report.SCHEMA, report.to_dict())
