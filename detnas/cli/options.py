"""The CLI's one vocabulary: every option that several commands take is declared here once, so a name has one
meaning, one format and one parser everywhere (`--ann` a COCO annotation file, `--images` an image folder,
`--model` a model file, `--size` HxW or N, `--device` cpu|cuda|cuda:N, validated choices).

A command adds what it does with an option as a note after the shared sentence; a prefixed variant
(`--gate-ann`, `--parity-images`) keeps the format of its stem. tests/test_cli_options.py walks every command's
help to hold this. Only light modules are imported here: `detnas --help` must not load torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from detnas.bench.result import CLOCKS, PRECISIONS, Scope
from detnas.errors import DetnasError
from detnas.io import check_writable
from detnas.sizes import parse_hw

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")

# choice types: typer lists a Literal's values in the help and refuses others (exit 2, naming the option)
BackendName = str  # a registry name (detnas.bench.backends.LATENCY_BACKENDS), checked there: plug-ins may add more
PrecisionName = Literal[PRECISIONS]
ScopeName = Literal[tuple(s.value for s in Scope)]
ClockName = Literal[CLOCKS]
DetectorName = str  # a registry name (detnas.detection.DETECTOR_KINDS), checked there: plug-ins may add more
SizeHW = Any  # (height, width) from parse_size; a tuple annotation would make typer read two arguments


def parse_size(text: str) -> tuple[int, int]:
    """`N` or `HxW` -> (height, width) through detnas.sizes.parse_hw, the one size parser."""
    try:
        return parse_hw(text, "")
    except DetnasError as exc:
        raise typer.BadParameter(str(exc).strip()) from None


def writable_json(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Typer callback of every `--json PATH` (and of the other file outputs: `--csv`, `--markdown`, `--out-json`): a
    directory or an unwritable path is refused when the options are read, before the command's work (it used to fail
    after it, or with a traceback)."""
    if value is not None:
        check_writable(value, param.opts[0] if param.opts else "--json")
    return value


def number_in(low: float | None = None, high: float | None = None, *,
              above: bool = False) -> Callable[[typer.CallbackParam, float | None], float | None]:
    """Typer callback of a float option: NaN, an infinity, or a value outside [low, high] (`above`: low excluded) is
    refused when the options are read, naming the option. click's own ranges let NaN through (it compares false with
    every bound), so `--box-tol nan` used to turn a check off without a word."""
    rule = " and ".join(([f"{'>' if above else '>='} {low:g}"] if low is not None else [])
                        + ([f"<= {high:g}"] if high is not None else []))

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is None:
            return value
        inside = math.isfinite(value) and (low is None or (value > low if above else value >= low)) and \
            (high is None or value <= high)
        if not inside:
            raise typer.BadParameter(f"{value} must be a finite number{' ' + rule if rule else ''}", param=param)
        return value

    return check


def parse_device(text: str) -> str:
    """cpu, cuda or cuda:N, checked when parsed (whether that GPU exists is checked where it is used)."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise typer.BadParameter(f"'{text}' is not a device; use cpu, cuda or cuda:N (e.g. cuda:1)")
    return text


@dataclass(frozen=True)
class Word:
    """One entry of the vocabulary: the sentence every command's help starts with, and the format."""

    help: str
    metavar: str | None = None
    parser: Any = None


VOCABULARY: dict[str, Word] = {
    "ann": Word("COCO annotation file (instances JSON).", "JSON"),
    "images": Word("Image folder.", "DIR"),
    "model": Word("Exported model file: .onnx, or a TensorRT engine (.engine/.plan/.trt) with its sidecar.", "FILE"),
    "weights": Word("Detection checkpoint (child-det or supernet-det) written by `detnas train`.", "CKPT"),
    "arch": Word("Architecture: released name (`detnas arch list`), arch JSON file or inline JSON.", "ARCH"),
    "space": Word("Search space: name (`detnas arch list`) or .json/.yaml space file.", "SPACE"),
    "size": Word("Input size HxW, or N for NxN.", "HxW", parse_size),
    "device": Word("Device: cpu, cuda or cuda:N.", "DEVICE", parse_device),
    "backend": Word("Inference backend: torch (PyTorch eager), ort (ONNX Runtime), trt (TensorRT) or a registered one."),
    "precision": Word("Numeric precision of the model run."),
    "scope": Word("What is timed: the backbone, the network (no NMS), the network with NMS, or end-to-end (with "
                  "host pre- and post-processing)."),
    "detector": Word("Detector: fpn (Faster R-CNN + FPN), retinanet or a registered one."),
    "max-images": Word("Use only the first N images (default: all).", "N"),
}


def option(word: str, note: str = "", *, prefix: str = "", short: str | None = None, **kwargs: Any) -> Any:
    """The typer option of vocabulary entry `word` (as `--PREFIX-WORD` with a prefix); `note` says what this
    command does with it and follows the shared sentence."""
    entry = VOCABULARY[word]
    names = [f"--{prefix}-{word}" if prefix else f"--{word}", *([short] if short else [])]
    return typer.Option(*names, help=f"{entry.help} {note}".strip(), metavar=entry.metavar,
                        parser=entry.parser, **kwargs)


Clock = Annotated[ClockName, typer.Option(help="wall (latency), or thread-cpu: CPU time of the one timing thread, "
                                          "stable on a shared oversubscribed CPU (needs one thread).")]
