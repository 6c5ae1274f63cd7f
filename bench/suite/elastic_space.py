"""Benchmark: does the search space move the detector's cost? A paper space beside its elastic twin.

For each space: the analytic MACs of the whole FPN detector over `--macs-paths` uniform random paths at the
paper's 800x1344 (an elastic path's `input_size` gene scales it), their spread (max / min) and the analytic
count's speed (paths per second, vectorised `CostModel`); then the measured ORT-CPU latency at the network+nms
scope (the deployable graph, NMS inside, random weights) over `--timed-paths` random paths at a small base size
(`--size`, the paper detector's input; an elastic path runs at its gene's share of it), and its spread.

Goal: the elastic space's measured latency spread >= 3x (the paper space is printed beside it: ~1.0x).

Run (one command, writes elastic_space.json):
    python -m detnas.bench.suite.elastic_space --pairs detnas-300m:detnas-300m-det --size 320x544
--clock thread-cpu times the one ORT thread's CPU time, the network's cost on a loaded machine (see latency_profile).
A paper path runs its box head on 1,000 proposals whatever the input size (~128 GMACs), seconds per run on one
core: on a shared machine use fewer --timed-paths / --runs and say so.

Measured (2 shared cores, load ~24, --timed-paths 6 --runs 3 --warmup 1 --size 256x416 --clock thread-cpu, 39 min):
detnas-300m MACs 242.6-244.1 G (1.01x), latency 3446-4172 ms (1.21x, measurement noise); detnas-300m-det MACs
12.9-242.4 G (18.8x), latency 263-2699 ms (10.3x, goal >= 3x met); analytic count 75k (paper) / 278k (elastic)
paths/s vectorised.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from detnas.arch import sample_arch
from detnas.bench.oracle import TimingProtocol, measure_arch
from detnas.bench.result import Scope
from detnas.bench.suite import run_suite
from detnas.detection.cost import CostModel, path_size
from detnas.errors import DetnasError
from detnas.io import atomic_write_json
from detnas.sizes import REFERENCE_HW, parse_hw
from detnas.space import get_space

GOAL_LATENCY_SPREAD = 3.0
KIND, CLASSES = "fpn", 81


def macs_spread(space_name: str, paths: int, seed: int) -> dict[str, Any]:
    """Analytic MACs of `paths` uniform paths at 800x1344, and how fast the vectorised count runs."""
    model = CostModel(get_space(space_name), KIND, CLASSES, REFERENCE_HW)
    macs = model.macs(model.sample_genes(paths, np.random.default_rng(seed)))
    many = model.sample_genes(200_000, np.random.default_rng(seed + 1))
    start = time.perf_counter()
    model.macs(many)
    rate = len(many) / (time.perf_counter() - start)
    return {"paths": paths, "gmacs_min": float(macs.min()) / 1e9, "gmacs_median": float(np.median(macs)) / 1e9,
            "gmacs_max": float(macs.max()) / 1e9, "spread": float(macs.max() / macs.min()), "count_per_s": rate}


def latency_spread(space_name: str, paths: int, seed: int, base: tuple[int, int], protocol: TimingProtocol) -> dict[str, Any]:
    """Measured ORT-CPU median latency (network+nms) of `paths` random paths, each at its own input size."""
    space = get_space(space_name)
    rows = []
    for k in range(paths):
        arch = sample_arch(space, seed * 1000 + k)
        size = path_size(arch, base)
        result = measure_arch(arch, size=size, backend="ort", scope=Scope.NETWORK_NMS, protocol=protocol, detector=KIND)
        rows.append({"arch": arch.compact(), "hash": arch.hash, "size": list(size), "median_ms": result.median_ms})
        print(f"  {space_name} {k + 1}/{paths}: {result.median_ms:8.2f} ms at {size[0]}x{size[1]}", flush=True)
    ms = [r["median_ms"] for r in rows]
    return {"paths": paths, "ms_min": min(ms), "ms_median": statistics.median(ms), "ms_max": max(ms),
            "spread": max(ms) / min(ms), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="detnas-300m:detnas-300m-det", help="PAPER:ELASTIC space pairs, comma-separated")
    parser.add_argument("--macs-paths", type=int, default=500)
    parser.add_argument("--timed-paths", type=int, default=20)
    parser.add_argument("--size", default="320x544", help="the paper detector's input for the timed paths (HxW)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", default="thread-cpu", choices=("wall", "thread-cpu"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="elastic_space.json")
    args = parser.parse_args()
    base = parse_hw(args.size, "--size", 32)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise DetnasError(f"--pairs '{args.pairs}': give PAPER:ELASTIC pairs, e.g. detnas-300m:detnas-300m-det")
    protocol = TimingProtocol(warmup=args.warmup, runs=args.runs, threads=1, clock=args.clock)
    start, results = time.perf_counter(), []
    for pair in pairs:
        for role, name in zip(("paper", "elastic"), pair):
            print(f"{name} ({role}):", flush=True)
            results.append({"space": name, "role": role, "macs": macs_spread(name, args.macs_paths, args.seed),
                            "latency": latency_spread(name, args.timed_paths, args.seed, base, protocol)})
    print(f"\n{'space':<18} {'role':<8} {'GMACs min':>10} {'max':>8} {'spread':>7} {'count/s':>10} "
          f"{'ms min':>8} {'ms max':>8} {'spread':>7}  goal (elastic: latency spread >= {GOAL_LATENCY_SPREAD:g}x)")
    goals = {}
    for r in results:
        m, lat = r["macs"], r["latency"]
        met = lat["spread"] >= GOAL_LATENCY_SPREAD if r["role"] == "elastic" else None
        goals[r["space"]] = met
        print(f"{r['space']:<18} {r['role']:<8} {m['gmacs_min']:10.1f} {m['gmacs_max']:8.1f} {m['spread']:6.2f}x "
              f"{m['count_per_s']:10.0f} {lat['ms_min']:8.1f} {lat['ms_max']:8.1f} {lat['spread']:6.2f}x  "
              f"{'-' if met is None else 'met' if met else 'MISSED'}")
    settings = {"base_size": list(base), "macs_size": list(REFERENCE_HW), "detector": KIND, "num_classes": CLASSES,
                "backend": "ort", "scope": Scope.NETWORK_NMS.value, "runs": args.runs, "warmup": args.warmup,
                "clock": args.clock, "timed_paths": args.timed_paths,
                "seed": args.seed}
    atomic_write_json(args.json, {"settings": settings, "total_seconds": time.perf_counter() - start,
                                  "goal_latency_spread": GOAL_LATENCY_SPREAD, "goals_met": goals, "results": results})
    print(f"wrote {args.json} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    run_suite(main)
