"""Few-shot device profile against a full one: two "devices" on this CPU (PyTorch eager and ONNX Runtime, one
thread each, thread-CPU clock), the reference profiled fully on the first, the second profiled fully and few-shot
(`--archs` whole archs timed there, the reference's table carried by per-stage scales + intercept).

Both profiles of the second device are judged on the same uniform random archs of its full profile, none of which
the few-shot transfer was fitted on. Goal: the few-shot profile within +-10 % on >= 95 % of them, R² >= 0.9.

    python -m detnas.bench.suite.fewshot_profile [--space detnas-300m] [--size 224] [--json fewshot_profile.json]
    (--reference A.json / --full B.json reuse profiles built before, e.g. with --profile-dir)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from detnas.bench.fewshot import build_fewshot_profile, judge_fewshot
from detnas.bench.oracle import TimingProtocol
from detnas.bench.profile import build_profile, save_profile
from detnas.bench.stats import HeldOutReport
from detnas.bench.suite import run_suite
from detnas.io import atomic_write_json, read_json_file
from detnas.space import get_space


def _full(space: str, backend: str, args: argparse.Namespace, n_random: int) -> dict[str, Any]:
    protocol = TimingProtocol(warmup=args.warmup, runs=args.runs, threads=1, clock="thread-cpu")
    return build_profile(get_space(space), backend=backend, size=(args.size, args.size), protocol=protocol,
                         n_train=args.n_train, n_test=args.n_test, rounds=args.rounds, seed=args.seed,
                         n_random=n_random, progress=lambda m: print(f"  {backend}: {m}", flush=True))


def _line(name: str, report: HeldOutReport) -> str:
    p = report.predictor
    return (f"{name:<34} {report.n} random archs: within 5% {100 * p.within_5:3.0f}%  within 10% "
            f"{100 * p.within_10:3.0f}%  MAPE {p.mape:5.2f}% (constant {report.constant.mape:5.2f}%)  R² {p.r2:6.3f} "
            f"(at best {report.r2_ceiling:.3f})  tau {p.kendall_tau:.3f} / perfect {report.reference_tau:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="detnas-300m")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reference-backend", default="torch")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--n-random", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=Path, default=None, help="reuse this full profile of the first device")
    parser.add_argument("--full", type=Path, default=None, help="reuse this full profile of the second device")
    parser.add_argument("--profile-dir", type=Path, default=None, help="write the three profiles here")
    parser.add_argument("--json", default="fewshot_profile.json")
    args = parser.parse_args()

    started = time.perf_counter()
    reference = (read_json_file(args.reference, "latency profile") if args.reference
                 else _full(args.space, args.reference_backend, args, 0))
    full = read_json_file(args.full, "latency profile") if args.full else _full(args.space, args.backend, args, args.n_random)
    protocol = TimingProtocol(warmup=args.warmup, runs=args.runs, threads=1, clock="thread-cpu")
    fewshot = build_fewshot_profile(reference, get_space(args.space), n_archs=args.archs, backend=args.backend,
                                    protocol=protocol, rounds=args.rounds, seed=args.seed + 1,
                                    reference_path=f"{args.reference_backend} full profile",
                                    progress=lambda m: print(f"  few-shot: {m}", flush=True))
    if args.profile_dir:
        for name, profile in (("reference", reference), ("full", full), ("fewshot", fewshot)):
            save_profile(profile, args.profile_dir / f"{name}.json")
    judged = judge_fewshot(fewshot, full)
    own = HeldOutReport.from_dict(full["random_report"])
    print(f"{args.space} @ {args.size}, backbone, {args.reference_backend} -> {args.backend}, thread-cpu clock")
    print(_line(f"few-shot ({fewshot['transfer']['archs']} archs here)", judged))
    print(_line(f"full profile of {args.backend}", own))
    print(f"  (full profile's random set: {own.n} archs; the few-shot judgement leaves out those it was fitted on)")
    goal = judged.predictor.within_10 >= 0.95 and judged.predictor.r2 >= 0.9
    print(f"goal (>= 95 % within +-10 %, R² >= 0.9): {'met' if goal else 'MISSED'}; stage scales "
          f"{', '.join(f'{v:.3f}' for v in fewshot['transfer']['stage_scales'])}, intercept "
          f"{fewshot['transfer']['intercept_ms']:.3f} ms; few-shot build {fewshot['build_seconds']:.0f}s vs full "
          f"{full.get('build_seconds', 0):.0f}s; total {time.perf_counter() - started:.0f}s")
    atomic_write_json(args.json, {"settings": {k: str(v) for k, v in vars(args).items()}, "goal_met": goal,
                                  "fewshot": judged.to_dict(), "full": own.to_dict(), "transfer": fewshot["transfer"],
                                  "fewshot_build_seconds": fewshot["build_seconds"],
                                  "full_build_seconds": full.get("build_seconds")})


if __name__ == "__main__":
    run_suite(main)
