"""Benchmark: what single-path training costs, and how fast each training stage runs on this machine.

(1) One classification training step (forward, backward, SGD with off-path gradients dropped) of the supernet on
    an arch vs the same step of the materialised child: median step times and their ratio (goal <= 1.15).
(2) images/s of each `detnas train` stage run end to end (real loop: data, sampling, logging, checkpoints) at
    the CPU recipes on real data: supernet-cls and child-cls on the cifar10 ImageFolder, supernet-det and
    child-det (FPN) on coco128, each detection stage initialised from its classification run.
Run: python -m detnas.bench.suite.train_step [--arch COCO-FPN-300M] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from detnas.arch import resolve_arch
from detnas.io import atomic_write_json
from detnas.supernet import Supernet, materialize
from detnas.train import Classifier, resolve_config, run_stage
from detnas.train.loop import optimizer_step
from detnas.train.optim import OffPath, build_optimizer

SHARED = Path(os.environ.get("DETNAS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def step_times(arch_name: str, batch: int, size: int, steps: int) -> dict:
    """Interleaved supernet / child steps on identical inputs so load changes hit both alike."""
    torch.manual_seed(0)
    arch = resolve_arch(arch_name)
    cfg = resolve_config("cpu-cls")
    supernet = Classifier(Supernet(arch.space, num_classes=10))
    supernet.set_arch(arch)
    child = Classifier(materialize(supernet.net, arch))
    off_path = OffPath(supernet.net)
    runs = {"supernet": (supernet, build_optimizer(supernet, cfg), lambda: off_path(arch)),
            "child": (child, build_optimizer(child, cfg), lambda: ())}
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, 10, (batch,))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    times: dict[str, list[float]] = {"supernet": [], "child": []}
    for i in range(steps + 2):
        for name, (model, optimizer, off) in runs.items():
            start = time.perf_counter()
            optimizer_step(criterion(model(x), y), optimizer, scaler, off())
            if i >= 2:  # the first steps allocate momentum buffers
                times[name].append(time.perf_counter() - start)
    sup, chi = statistics.median(times["supernet"]), statistics.median(times["child"])
    return {"arch": arch_name, "batch": batch, "size": size, "steps": steps, "supernet_step_s": round(sup, 4),
            "child_step_s": round(chi, 4), "ratio": round(sup / chi, 3)}


def stage_rate(kind: str, cfg_overrides: dict, preset: str) -> dict:
    """Run a stage for real and take the median images/s of its logged windows after the first."""
    cfg = resolve_config(preset, overrides={**cfg_overrides, "log_every": 1, "device": "cpu"})
    start = time.perf_counter()
    final = run_stage(kind, cfg)
    wall = time.perf_counter() - start
    logged = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["img_s"] for r in logged if "img_s" in r][1:]
    return {"stage": kind, "recipe": preset, "iterations": cfg.iterations, "batch_size": cfg.batch_size,
            "size": cfg.image_size if cfg.task == "cls" else f"{cfg.min_size}/{cfg.max_size}",
            "images_per_s": round(statistics.median(rates), 2), "wall_s": round(wall, 1), "final": str(final)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="COCO-FPN-300M")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--cls-iterations", type=int, default=12)
    parser.add_argument("--det-iterations", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-stages", action="store_true", help="only the supernet / child step ratio")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} torch thread(s), {os.cpu_count()} CPU cores, torch {torch.__version__}")
    ratio = step_times(args.arch, args.batch, args.size, args.steps)
    print(f"training step, {args.arch}, batch {args.batch} at {args.size}px: supernet {ratio['supernet_step_s']:.4f}"
          f" s, materialised child {ratio['child_step_s']:.4f} s, ratio {ratio['ratio']:.3f} (goal <= 1.15)")
    stages = []
    if not args.skip_stages:
        arch = resolve_arch(args.arch)
        coco = SHARED / "coco128"
        with tempfile.TemporaryDirectory() as tmp:
            cls = {"data": str(SHARED / "cifar10" / "train"), "iterations": args.cls_iterations,
                   "space": arch.space.name, "checkpoint_every": 10_000}
            det = {"data": str(coco / "train2017"), "ann": str(coco / "annotations" / "instances_train2017.json"),
                   "iterations": args.det_iterations, "space": arch.space.name, "checkpoint_every": 10_000}
            arch_json = arch.to_json()
            plan = [("supernet-cls", "cpu-cls", {**cls, "out": f"{tmp}/scls"}),
                    ("child-cls", "cpu-cls", {**cls, "arch": arch_json, "out": f"{tmp}/ccls"}),
                    ("supernet-det", "cpu-det", {**det, "init": f"{tmp}/scls/final", "out": f"{tmp}/sdet"}),
                    ("child-det", "cpu-det", {**det, "arch": arch_json, "init": f"{tmp}/ccls/final",
                                              "out": f"{tmp}/cdet"})]
            for kind, preset, overrides in plan:
                row = stage_rate(kind, overrides, preset)
                stages.append(row)
                print(f"{kind:13s} ({preset}, batch {row['batch_size']}, size {row['size']}): "
                      f"{row['images_per_s']:.2f} images/s, {row['iterations']} iterations in {row['wall_s']:.1f} s")
    if args.json:
        atomic_write_json(args.json, {"threads": args.threads, "cpu_count": os.cpu_count(),
                                      "torch": torch.__version__, "step": ratio, "stages": stages})


if __name__ == "__main__":
    main()
