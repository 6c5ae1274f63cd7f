"""Where a search candidate's time goes, and evolution vs random search on the same budget.

On CPU with a small detection supernet and real COCO images (../shared/data/coco_mini): per evaluated
candidate, seconds of BN recalibration, COCO evaluation, latency (ORT-CPU oracle through its cache) and
everything else (materialising the path, planning, journal); the latency cache hit rate; then both
algorithms with the same population, generations and seeds, and their best AP on the search-validation split.

    python -m detnas.bench.suite.search_cost --supernet RUN/final [--seeds 0 1] [--json out.json]
    python -m detnas.bench.suite.search_cost --data shapes --out DIR --seeds 0 1 2   # EA vs random, trained supernet

Without --supernet a random-init supernet is built on coco_mini: the time split is still real, the APs are not
informative. `--data shapes` trains a supernet on the demo's generated shapes first (the main job's data and
recipes, sized by --shapes-*), which CPU training can fit, so the APs compare the two algorithms; the trained
checkpoint in --out is reused by a later run with the same sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from detnas.io import atomic_write_json
from detnas.search.evolution import EvolutionSettings
from detnas.search.latency import Timing
from detnas.search.objectives import Constraints
from detnas.search.runner import SearchOutcome, SearchRequest, run_search

SHARED = Path(os.environ.get("DETNAS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SMALL_SPACE = {"name": "bench-search-small", "stem_width": 16, "stage_widths": [32, 64, 128, 256],
               "stage_depths": [2, 2, 3, 2], "head_width": 256}


def random_supernet(path: Path, classes: list[str], min_size: int, max_size: int) -> Path:
    """A random-init detection supernet checkpoint of SMALL_SPACE (for the time split only)."""
    from detnas.checkpoint import CheckpointMeta, save_checkpoint
    from detnas.detection import build_detector
    from detnas.pixels import DEFAULT_PIXELS
    from detnas.space import SearchSpace, register_space
    from detnas.supernet import Supernet

    space = register_space(SearchSpace.from_dict(SMALL_SPACE))
    torch.manual_seed(0)
    detector = build_detector("fpn", Supernet(space), len(classes) + 1, min_size, max_size, DEFAULT_PIXELS)
    meta = CheckpointMeta("supernet-det", space, tuple(classes), DEFAULT_PIXELS, detector="fpn",
                          recipe={"min_size": min_size, "max_size": max_size}, extra={"num_classes": len(classes)})
    save_checkpoint(path, detector.state_dict(), meta.to_dict())
    return path


def coco_mini_split(out: Path, args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """(supernet, supernet-training json, search-validation json, images) on coco_mini's train2017."""
    from detnas.data import CocoDetection
    from detnas.data.split import split_coco

    root = SHARED / "coco_mini"
    train_json, val_json = split_coco(root / "annotations" / "instances_train2017.json", args.val_size, 0,
                                      out / "split")
    supernet = args.supernet or random_supernet(out / "random_supernet", list(
        CocoDetection(val_json, root / "train2017").classes), 128, 192)
    return supernet, train_json, val_json, root / "train2017"


def shapes_supernet(out: Path, args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """The main job's first half on a larger shapes set: a detection supernet that has learnt something."""
    from detnas.workflows.main_job import MainJobPlan, train_demo_supernet

    plan = MainJobPlan(train_images=args.shapes_train_images + args.val_size, search_val_images=args.val_size,
                       cls_iterations=120, det_iterations=args.shapes_det_iterations, proposals=args.proposals)
    record = out / "trained.json"
    earlier = json.loads(record.read_text()) if record.is_file() else {}
    if earlier.get("plan") == asdict(plan):  # trained by an earlier run with the same sizes
        return tuple(Path(earlier[k]) for k in ("checkpoint", "supernet_ann", "search_ann", "images"))  # type: ignore[return-value]

    def step(name: str):  # noqa: ANN202 - the pipeline's step protocol
        start = time.perf_counter()
        print(f"{name} ...", flush=True)
        return lambda: print(f"{name}: {time.perf_counter() - start:.0f}s", flush=True)

    trained = train_demo_supernet(out, plan, step)
    paths = {"checkpoint": trained.checkpoint, "supernet_ann": trained.supernet_ann,
             "search_ann": trained.search_ann, "images": trained.data.train_images}
    atomic_write_json(record, {"plan": asdict(plan), **{k: str(v) for k, v in paths.items()}})
    return trained.checkpoint, trained.supernet_ann, trained.search_ann, trained.data.train_images


def time_split(outcome: SearchOutcome) -> dict[str, float]:
    """Mean seconds per evaluated candidate (a fresh search evaluates all of them) and the latency cache hit rate."""
    records = outcome.run.candidates
    n = len(records)
    bn = sum(r.timing["bn_s"] for r in records)
    ev = sum(r.timing["eval_s"] for r in records)
    other = outcome.search_s - bn - ev - outcome.latency_s
    return {"candidates": n, "per_candidate_s": outcome.search_s / n, "bn_s": bn / n, "eval_s": ev / n,
            "latency_s": outcome.latency_s / n, "else_s": other / n, "else_share": other / outcome.search_s,
            "cache_hit_rate": outcome.cache_hits / outcome.cache_lookups if outcome.cache_lookups else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("coco_mini", "shapes"), default="coco_mini")
    parser.add_argument("--supernet", type=Path, help="trained supernet-det checkpoint (default: random init)")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--bn-images", type=int, default=8)
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--val-size", type=int, default=16, help="search-validation split size of coco_mini")
    parser.add_argument("--proposals", type=int, default=100)
    parser.add_argument("--latency-target", default=None,
                        help="ms, or 'auto': the median of 8 random archs timed as the search times them "
                             "(default: none, AP only)")
    parser.add_argument("--shapes-train-images", type=int, default=200, help="shapes: supernet training images")
    parser.add_argument("--shapes-det-iterations", type=int, default=300, help="shapes: detection fine-tuning iterations")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.data == "shapes" and args.supernet is not None:
        parser.error("--supernet goes with --data coco_mini; --data shapes trains its own supernet")
    torch.set_num_threads(1)

    out = args.out or Path(tempfile.mkdtemp(prefix="detnas-search-cost-"))
    if args.data == "shapes":
        supernet, train_json, val_json, images = shapes_supernet(out, args)
    else:
        supernet, train_json, val_json, images = coco_mini_split(out, args)
    timing = Timing(backend="ort", runs=10, warmup=3)
    pop = args.population
    mutations, crossovers = pop * 2 // 5, pop * 2 // 5

    def evolution(algorithm: str, seed: int) -> EvolutionSettings:
        return EvolutionSettings(algorithm=algorithm, population=pop, generations=args.generations,
                                 parents=max(2, pop // 5), mutations=mutations, crossovers=crossovers,
                                 randoms=pop - mutations - crossovers, seed=seed)

    target = args.latency_target
    if target == "auto":
        from detnas.workflows.main_job import median_random_target

        target = median_random_target(supernet, val_json, images, timing, out / "latency.sqlite", args.proposals,
                                      evolution("evolution", 0), Constraints())
        print(f"latency target: {target} ms (median of 8 random archs' latency bounds)", flush=True)
    target = float(target) if target is not None else None
    results: dict[str, list[dict[str, float]]] = {"evolution": [], "random": []}
    for seed in args.seeds:
        for algorithm in ("evolution", "random"):
            settings = evolution(algorithm, seed)
            request = SearchRequest(
                supernet=supernet, data=val_json, images=images, bn_data=train_json, out=out / f"{algorithm}-seed{seed}",
                settings=settings, constraints=Constraints(latency_ms=target), timing=timing,
                latency_cache=out / "latency.sqlite",
                bn_images=args.bn_images, bn_batch=4, val_images=args.val_images, proposals=args.proposals)
            outcome = run_search(request)
            best = outcome.run.best()
            row = {"seed": seed, "best_AP": best.metrics["AP"], "best_AP50": best.metrics["AP50"],
                   "best_hash": best.hash, **time_split(outcome)}
            results[algorithm].append(row)
            print(f"{algorithm:9s} seed {seed}: best AP {row['best_AP']:.4f} (AP50 {row['best_AP50']:.4f}) | per "
                  f"candidate {row['per_candidate_s']:.2f}s = BN {row['bn_s']:.2f} + eval {row['eval_s']:.2f} + "
                  f"latency {row['latency_s']:.2f} + else {row['else_s']:.2f} ({row['else_share']:.1%}) | "
                  f"latency cache hits {row['cache_hit_rate']:.0%}", flush=True)
    summary = {algorithm: {"mean_best_AP": statistics.mean(r["best_AP"] for r in rows),
                           "mean_else_share": statistics.mean(r["else_share"] for r in rows)}
               for algorithm, rows in results.items()}
    trained = args.supernet is not None or args.data == "shapes"
    print(f"evolution vs random, mean best AP over seeds {args.seeds}: "
          f"{summary['evolution']['mean_best_AP']:.4f} vs {summary['random']['mean_best_AP']:.4f} "
          f"({str(supernet) if trained else 'random-init supernet: not informative'})")
    report = {"supernet": str(supernet), "trained": trained, "latency_target_ms": target, "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "runs": results, "summary": summary}
    if args.json:
        atomic_write_json(args.json, report)


if __name__ == "__main__":
    main()
