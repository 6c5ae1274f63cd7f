"""The small real artefacts the bad-input harness (`bad_input.py`) feeds its cases, built once per run.

Every case reads them and never writes them: a case that needs a file it may damage copies it into its own folder
first. All of them are tiny (a one-block-a-stage space, 64 px, a few generated demo images), so the whole set is
built in well under a minute on a loaded 2-core machine, and each case that runs real work runs it in seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detnas.space import SearchSpace, register_space

#: the one space every fixture lives on: four stages of one block, 8..64 channels, a 16-channel FPN and a 32-wide box
#: head (fixed detector genes): a whole FPN detector is ~0.2 MB and runs in milliseconds at 64 px on one CPU thread
TINY_SPEC = {"name": "bad-input-tiny", "stem_width": 8, "stage_widths": [16, 32, 48, 64], "stage_depths": [1, 1, 1, 1],
             "head_width": 32, "choices": [0, 1, 2, 3],
             "detector": {"fpn_widths": [16], "head_convs": [0], "head_fc": [32], "proposals": [20], "input_sizes": [800]}}
SIZE = 64


def tiny_space() -> SearchSpace:
    return register_space(SearchSpace.from_dict(TINY_SPEC))


def tiny_arch_json(choices: str = "0|3|1|2;fpn=16,convs=0,fc=32,proposals=20,size=800") -> str:
    """An inline arch on the tiny space that carries its spec, so a fresh process resolves it."""
    return json.dumps({"space": TINY_SPEC["name"], "choices": choices, "space_spec": TINY_SPEC})


@dataclass(frozen=True)
class Fixtures:
    """Paths of the shared artefacts under one root (see `build`)."""

    root: Path

    def __getattr__(self, name: str) -> Path:  # fixtures.child -> root/child (the names are listed in `build`)
        if name.startswith("__"):
            raise AttributeError(name)
        return self.root / _NAMES[name]


_NAMES = {
    "data": "demo", "train_ann": "demo/annotations/instances_train.json", "train_images": "demo/train",
    "val_ann": "demo/annotations/instances_val.json", "val_images": "demo/val", "cls_images": "cls/train",
    "child": "child", "retina": "retina", "supernet": "supernet", "space_file": "tiny.json",
    "onnx": "model.onnx", "retina_onnx": "retina.onnx", "int8": "model.int8.onnx",
    "lat_fp32": "lat_fp32.json", "lat_fp32b": "lat_fp32b.json", "lat_int8": "lat_int8.json",
    "lat_backbone": "lat_backbone.json", "search": "search", "journal": "search/journal.jsonl",
    "train_run": "train_run", "cache": "latency.sqlite",
}


def build(root: Path, log=print, cheap: bool = False) -> Fixtures:
    """Write every fixture under `root` (the demo data, checkpoints, exports, latency rows, a finished search and a
    training run); each step through the library or the CLI a user would run. `cheap`: the data, the space file
    and the checkpoints only (seconds; what the harness's own test needs). Returns the `Fixtures`."""
    import torch

    from detnas.cli.main import main
    from detnas.data.demo import make_demo_classification, make_demo_detection

    fx = Fixtures(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()

    def step(what: str, argv: list[str] | None = None) -> None:
        if argv is not None:
            code = main(argv)
            if code != 0:
                raise RuntimeError(f"fixture step '{what}' failed with exit code {code}: detnas {' '.join(argv)}")
        log(f"  fixture {what}: {time.perf_counter() - start:.1f} s")

    make_demo_detection(fx.data, num_train=8, num_val=4, seed=0)
    make_demo_classification(root / "cls", per_class_train=3, per_class_val=1, size=32)
    fx.space_file.write_text(json.dumps(TINY_SPEC))
    step("demo data")
    classes = [c["name"] for c in json.loads(fx.val_ann.read_text())["categories"]]
    _child_checkpoint(fx.child, "fpn", classes)
    _child_checkpoint(fx.retina, "retinanet", classes)
    _supernet_checkpoint(fx.supernet, classes)
    step("checkpoints")
    if cheap:
        return fx
    quick = ["--size", str(SIZE), "--no-parity", "--no-search-check"]
    step("fp32 export", ["export", "--weights", str(fx.child), "--out", str(fx.onnx), "--proposals", "20", *quick])
    step("retinanet export", ["export", "--weights", str(fx.retina), "--out", str(fx.retina_onnx), *quick])
    step("int8 export", ["export", "--weights", str(fx.child), "--out", str(fx.int8), "--proposals", "20",
                         "--precision", "int8", "--calib-images", str(fx.train_images), "--calib-count", "4", *quick])
    timing = ["--runs", "5", "--warmup", "1", "--no-cache"]
    step("latency rows", ["bench", "latency", "--model", str(fx.onnx), *timing, "--json", str(fx.lat_fp32)])
    step("latency rows", ["bench", "latency", "--model", str(fx.onnx), *timing, "--json", str(fx.lat_fp32b)])
    step("latency rows", ["bench", "latency", "--model", str(fx.int8), *timing, "--json", str(fx.lat_int8)])
    step("latency rows", ["bench", "latency", "--arch", tiny_arch_json(), "--size", str(SIZE), *timing,
                          "--json", str(fx.lat_backbone)])
    ref = lambda name: str(getattr(fx, name))  # noqa: E731
    step("search", search_argv(ref, str(fx.search), str(fx.cache)))
    step("training run", train_argv(ref, str(fx.train_run)))
    return fx


def search_argv(ref: Callable[[str], str], out: str, cache: str, *extra: str) -> list[str]:
    """`detnas search run` on the tiny supernet at the smallest budget (one generation of two candidates); `ref`
    names a fixture (its path, or a placeholder the harness expands)."""
    return ["search", "run", "--supernet", ref("supernet"), "--ann", ref("val_ann"), "--images", ref("val_images"),
            "--bn-ann", ref("train_ann"), "--bn-images", ref("train_images"), "--out", out, "--backend", "ort",
            "--latency-runs", "3", "--latency-cache", cache, "--population", "2", "--generations", "1",
            "--parents", "2", "--mutations", "1", "--crossovers", "1", "--randoms", "0", "--bn-count", "2",
            "--bn-batch", "2", "--max-images", "2", "--no-constraint", *extra]


def train_argv(ref: Callable[[str], str], out: str, *extra: str) -> list[str]:
    """`detnas train supernet-cls` on the tiny space for two iterations."""
    return ["train", "supernet-cls", "--images", ref("cls_images"), "--space", ref("space_file"), "--out", out,
            "-n", "2", "--set", "batch_size=4", "--set", "image_size=32", "--set", "checkpoint_every=1",
            "--set", "log_every=1", "--set", "eval_every=0", "--workers", "0", "--device", "cpu", *extra]


def _child_checkpoint(path: Path, kind: str, classes: list[str]) -> None:
    import torch

    from detnas.arch import sample_arch
    from detnas.checkpoint import save_checkpoint
    from detnas.detection import build_detector
    from detnas.pixels import DEFAULT_PIXELS
    from detnas.supernet import ChildNet

    space = tiny_space()
    torch.manual_seed(0)
    arch = sample_arch(space, 0)
    detector = build_detector(kind, ChildNet(arch), len(classes) + 1, SIZE, SIZE).eval()
    meta = {"kind": "child-det", "space": space.to_dict(), "arch": arch.to_dict(), "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": classes, "num_classes": len(classes), "detector": kind,
            "label_to_cat_id": {str(i): i for i in range(1, len(classes) + 1)},
            "recipe": {"name": "bad-input", "min_size": SIZE, "max_size": SIZE}}
    save_checkpoint(path, detector.state_dict(), meta)


def _supernet_checkpoint(path: Path, classes: list[str]) -> None:
    import torch

    from detnas.checkpoint import save_checkpoint
    from detnas.detection import build_detector
    from detnas.pixels import DEFAULT_PIXELS
    from detnas.supernet import Supernet

    space = tiny_space()
    torch.manual_seed(0)
    detector = build_detector("fpn", Supernet(space), len(classes) + 1, SIZE, SIZE, DEFAULT_PIXELS)
    meta = {"kind": "supernet-det", "space": space.to_dict(), "arch": None, "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": classes, "num_classes": len(classes), "recipe": {"min_size": SIZE, "max_size": SIZE},
            "detector": "fpn"}
    save_checkpoint(path, detector.state_dict(), meta)
