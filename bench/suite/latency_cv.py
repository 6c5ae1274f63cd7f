"""Benchmark: how repeatable a latency measurement is (goal: CV <= 3 % on CPU).

Measures the four released 300M backbones `--repeats` times each (fresh ORT session each time, interleaved so
load drift hits all alike) and reports two CVs per clock: the per-run CV inside one measurement and the CV of
the medians across repeated measurements (what decides whether two numbers can be compared).
Run: python -m detnas.bench.suite.latency_cv [--size 224] [--repeats 5] [--runs 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics

from detnas.arch import released_archs
from detnas.bench.oracle import TimingProtocol, measure_arch
from detnas.io import atomic_write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--clocks", default="wall,thread-cpu")
    parser.add_argument("--json", default="latency_cv.json")
    args = parser.parse_args()

    archs = {n: a for n, a in released_archs().items() if a.space.name == "detnas-300m"}
    rows = []
    for clock in args.clocks.split(","):
        protocol = TimingProtocol(warmup=args.warmup, runs=args.runs, threads=1, clock=clock)
        medians: dict[str, list[float]] = {n: [] for n in archs}
        run_cvs: dict[str, list[float]] = {n: [] for n in archs}
        for _ in range(args.repeats):
            for name, arch in archs.items():
                r = measure_arch(arch, size=(args.size, args.size), backend=args.backend, protocol=protocol)
                medians[name].append(r.stats.median_ms)
                run_cvs[name].append(r.stats.cv)
        for name in archs:
            m = medians[name]
            rows.append({"clock": clock, "arch": name, "median_ms": statistics.median(m),
                         "per_run_cv": statistics.median(run_cvs[name]),
                         "cv_of_medians": statistics.stdev(m) / statistics.mean(m), "medians_ms": m})
            print(f"{clock:>10}  {name:<20} median {statistics.median(m):7.3f} ms  per-run CV "
                  f"{100 * rows[-1]['per_run_cv']:5.2f}%  CV of {args.repeats} medians "
                  f"{100 * rows[-1]['cv_of_medians']:5.2f}%", flush=True)
    for clock in args.clocks.split(","):
        worst = max(r["cv_of_medians"] for r in rows if r["clock"] == clock)
        print(f"{clock}: worst CV of medians {100 * worst:.2f}% (goal <= 3 %)")
    atomic_write_json(args.json, {"backend": args.backend, "size": args.size, "repeats": args.repeats,
                                  "runs": args.runs, "rows": rows})


if __name__ == "__main__":
    main()
