"""Benchmark: supernet forward on one path vs the materialised child, and analytic FLOPs throughput.

Goals: supernet/child median ratio <= 1.10 (CPU, batch 1, 224 and 320x320); >= 10,000 archs/s FLOPs counting.
Run: python -m detnas.bench.suite.supernet_vs_child [--space detnas-300m] [--runs 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from detnas.arch import resolve_arch, sample_arch
from detnas.flops import count_flops, flops_table
from detnas.io import atomic_write_json
from detnas.space import get_space
from detnas.supernet import Supernet, materialize


def _median_ms(fn, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def forward_ratio(arch_name: str, sizes: list[int], runs: int) -> list[dict]:
    """Interleave supernet and child rounds so machine noise hits both alike."""
    arch = resolve_arch(arch_name)
    supernet = Supernet(arch.space).eval()
    child = materialize(supernet, arch).eval()
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            sup, chi = [], []
            for _ in range(3):
                sup.append(_median_ms(lambda x=x: supernet(x, arch), runs // 3))
                chi.append(_median_ms(lambda x=x: child(x), runs // 3))
        s, c = statistics.median(sup), statistics.median(chi)
        rows.append({"size": size, "supernet_ms": round(s, 3), "child_ms": round(c, 3), "ratio": round(s / c, 3)})
    return rows


def flops_throughput(space_name: str, n: int = 20000) -> float:
    space = get_space(space_name)
    archs = [sample_arch(space, i) for i in range(n)]
    flops_table(space, (224, 224), 1000)  # the table is built once per (space, size); count it out of the loop
    start = time.perf_counter()
    for a in archs:
        count_flops(a, 224, 1000)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="COCO-FPN-300M")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = forward_ratio(args.arch, [224, 320], args.runs)
    space = resolve_arch(args.arch).space.name
    rate = flops_throughput(space)
    for row in rows:
        print(f"{args.arch} {row['size']}x{row['size']} batch 1, {args.threads} thread(s): supernet {row['supernet_ms']:.2f} ms, "
              f"child {row['child_ms']:.2f} ms, ratio {row['ratio']:.3f} (goal <= 1.10)")
    print(f"analytic FLOPs counting ({space}, 224, with head): {rate:,.0f} archs/s (goal >= 10,000)")
    if args.json:
        atomic_write_json(args.json, {"forward": rows, "flops_archs_per_s": rate, "threads": args.threads,
                                      "torch": torch.__version__})


if __name__ == "__main__":
    main()
