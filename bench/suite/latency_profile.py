"""Issues 5 and 19 benchmark: device-profile predictor accuracy on held-out archs that span the space, judged
against what the set allows, and the profile build time.

Goals (ORT CPU, each space and scope): R² >= 0.9, Kendall tau >= 0.9 x the measurements' own split-half tau,
MAPE below a third of the best constant's (`HeldOutReport.accurate`); a profile cheap enough to build in a few
minutes on 2 cores. Where the held-out spread is within the measurement noise the set is reported as
noise-limited: no predictor can rank it.
Run: python -m detnas.bench.suite.latency_profile [--space detnas-300m] [--scope backbone|network] [--size 224]
     [--clock wall|thread-cpu] [--backend torch --device cuda --cuda-graphs] [--seed 0] [--json out.json]
On a shared machine (other processes on the cores) use --clock thread-cpu: wall-clock latency then measures the
scheduler as much as the network, see latency_cv.
"""

from __future__ import annotations

import argparse

from detnas.bench.oracle import BackendOptions, TimingProtocol
from detnas.bench.profile import build_profile, profile_report, save_profile
from detnas.bench.result import Scope
from detnas.io import atomic_write_json
from detnas.space import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="detnas-300m")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--scope", default="backbone", choices=[s.value for s in Scope if s is not Scope.END_TO_END])
    parser.add_argument("--detector", default="fpn", choices=("fpn", "retinanet"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=20)
    parser.add_argument("--n-test", type=int, default=30)
    parser.add_argument("--clock", default="wall", choices=("wall", "thread-cpu"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch backend on a GPU: replay CUDA graphs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arch draws")
    parser.add_argument("--profile-out", default=None, help="also write the device profile here")
    parser.add_argument("--json", default="latency_profile.json")
    args = parser.parse_args()

    protocol = TimingProtocol(warmup=args.warmup, runs=args.runs, threads=1, device=args.device, clock=args.clock)
    profile = build_profile(get_space(args.space), backend=args.backend, size=(args.size, args.size),
                            protocol=protocol, options=BackendOptions(cuda_graphs=args.cuda_graphs),
                            n_train=args.n_train, n_test=args.n_test, rounds=args.rounds, seed=args.seed,
                            scope=Scope(args.scope), detector=args.detector,
                            progress=lambda m: print(f"  {m}", flush=True))
    if args.profile_out:
        save_profile(profile, args.profile_out)
    report = profile_report(profile)
    test = [a for a in profile["archs"] if a["split"] == "test"]
    figures = {
        "space": args.space, "backend": profile["variant"], "device": args.device, "scope": args.scope,
        "detector": None if args.scope == "backbone" else args.detector, "size": args.size, "clock": args.clock,
        "runs": args.runs, "rounds": args.rounds, "n_train": args.n_train, "n_test": args.n_test, "seed": args.seed,
        "report": profile["report"], "build_seconds": profile["build_seconds"],
        "median_arch_cv": sorted(a["cv"] for a in test)[len(test) // 2],
        "fixed_ms": profile["fixed_ms"], "fingerprint": profile["fingerprint"],
        "goals": {"r2_ge_0.9": report.predictor.r2 >= 0.9,
                  "tau_ge_0.9_ceiling": report.predictor.kendall_tau >= 0.9 * report.ceiling_tau,
                  "mape_lt_third_of_constant": report.predictor.mape < report.constant.mape / 3,
                  "accurate": report.accurate, "noise_limited": report.noise_limited},
    }
    where = args.scope if args.scope == "backbone" else f"{args.scope} ({args.detector})"
    print(f"{args.space} @ {args.size}, {profile['variant']}, {where}, clock {args.clock}: {report.n} held-out archs")
    for name, acc in report.rows():
        print(f"  {name:<34} within 5% {100 * acc.within_5:3.0f}%  within 10% {100 * acc.within_10:3.0f}%  "
              f"MAPE {acc.mape:6.2f}%  Kendall tau {acc.kendall_tau:6.3f}  R² {acc.r2:7.3f}")
    print(f"  {'measurements vs themselves':<34} Kendall tau {report.ceiling_tau:.3f} (even vs odd rounds)")
    for line in report.verdict():
        print(f"  {line}")
    print(f"  median per-run CV of an arch {100 * figures['median_arch_cv']:.1f}%; profile built in "
          f"{profile['build_seconds']:.0f}s")
    atomic_write_json(args.json, figures)


if __name__ == "__main__":
    main()
