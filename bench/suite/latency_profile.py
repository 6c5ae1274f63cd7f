"""Issue 5 benchmark: device-profile predictor accuracy on held-out random archs, and the profile build time.

Goals (ORT CPU): >= 95 % of >= 30 held-out detnas-300m archs predicted within +-10 %, Kendall tau >= 0.9; a
profile cheap enough to build in a few minutes on 2 cores.
Run: python -m detnas.bench.suite.latency_profile [--size 224] [--clock wall|thread-cpu] [--seed 0] [--json out.json]
On a shared machine (other processes on the cores) use --clock thread-cpu: wall-clock latency then measures the
scheduler as much as the network, see latency_cv.
"""

from __future__ import annotations

import argparse

from detnas.bench.oracle import BackendOptions, Protocol
from detnas.bench.profile import build_profile, save_profile
from detnas.io import atomic_write_json
from detnas.space import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="detnas-300m")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=20)
    parser.add_argument("--n-test", type=int, default=30)
    parser.add_argument("--clock", default="wall", choices=("wall", "thread-cpu"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the random archs")
    parser.add_argument("--profile-out", default=None, help="also write the device profile here")
    parser.add_argument("--json", default="latency_profile.json")
    args = parser.parse_args()

    protocol = Protocol(warmup=args.warmup, runs=args.runs, threads=1, clock=args.clock)
    profile = build_profile(get_space(args.space), backend=args.backend, size=(args.size, args.size),
                            protocol=protocol, options=BackendOptions(), n_train=args.n_train, n_test=args.n_test,
                            rounds=args.rounds, seed=args.seed, progress=lambda m: print(f"  {m}", flush=True))
    if args.profile_out:
        save_profile(profile, args.profile_out)
    acc, raw = profile["accuracy"], profile["accuracy_uncorrected"]
    test = [a for a in profile["archs"] if a["split"] == "test"]
    spread = max(a["measured_ms"] for a in test) / min(a["measured_ms"] for a in test)
    figures = {
        "space": args.space, "backend": args.backend, "size": args.size, "clock": args.clock,
        "runs": args.runs, "rounds": args.rounds, "n_train": args.n_train, "n_test": args.n_test, "seed": args.seed,
        "accuracy": acc, "accuracy_table_sum_only": raw, "build_seconds": profile["build_seconds"],
        "held_out_latency_spread": spread,
        "measurement_split_half_tau": profile["measurement_split_half_tau"],
        "median_arch_cv": sorted(a["cv"] for a in test)[len(test) // 2],
        "fingerprint": profile["fingerprint"],
        "goals": {"within_10_ge_0.95": acc["within_10"] >= 0.95, "kendall_tau_ge_0.9": acc["kendall_tau"] >= 0.9},
    }
    print(f"{args.space} @ {args.size}, {args.backend}, clock {args.clock}: {args.n_test} held-out archs")
    print(f"  corrected:  within 5% {100 * acc['within_5']:.0f}%  within 10% {100 * acc['within_10']:.0f}%  "
          f"MAPE {acc['mape']:.2f}%  Kendall tau {acc['kendall_tau']:.3f}")
    print(f"  table sum:  within 5% {100 * raw['within_5']:.0f}%  within 10% {100 * raw['within_10']:.0f}%  "
          f"MAPE {raw['mape']:.2f}%  Kendall tau {raw['kendall_tau']:.3f}")
    print(f"  measurements vs themselves (odd vs even runs): Kendall tau {profile['measurement_split_half_tau']:.3f}")
    print(f"  held-out latency spread max/min {spread:.3f}; median per-run CV of an arch "
          f"{100 * figures['median_arch_cv']:.1f}%; profile built in {profile['build_seconds']:.0f}s")
    atomic_write_json(args.json, figures)


if __name__ == "__main__":
    main()
