"""Benchmark: device-profile predictor accuracy on held-out archs that span the space, on uniform random archs (what
the search draws) and on random archs within +-15 % of a target, judged against what each set allows, for every
space and scope in one run.

Goals (ORT CPU, each set): R² >= 0.9, Kendall tau >= 0.9 x the tau a perfect predictor reaches against the same
noisy measurements (from the split-half noise), MAPE below a third of the best constant's
(`HeldOutReport.accurate`). Where the held-out spread is within the measurement
noise the set is reported as noise-limited: no predictor can rank it. A set at the network scope also times
every arch's backbone in the same rounds, so it reports the backbone scope too, and how much of the network's
spread is not the backbone's (network minus backbone varies across archs beyond the noise).

Run (one command, writes latency_profile.json; about 10 minutes on a quiet machine, one core busy: the CPU time
of these sets at these sizes, measured on a loaded one, was ~230 s for detnas-300m and ~370 s for detnas-1.3g):
    python -m detnas.bench.suite.latency_profile --sets detnas-300m:network,detnas-1.3g:network --clock thread-cpu
--clock thread-cpu times the one ORT thread's CPU time: on a quiet machine it is the wall-clock latency, and on a
loaded one it stays the network's cost, while wall clock measures the scheduler: at the 300m FPN network scope on
2 cores under load ~7, the noise of an arch's median was 0.09 % of it (thread-cpu) against 3.5-15 % (wall, for
the median, median of round medians, p25, p10 and min of round medians alike), with a held-out spread of 0.6 %.
On a GPU: --backend torch --device cuda --cuda-graphs --clock wall.

An elastic whole-detector space is profiled by its part model (`detnas.bench.elastic_predictor`); the demo-scale
`bench-elastic-demo` (registered by `detnas.bench.suite`: the 300m twin's genes on a narrow backbone and FPN/head,
input 96-160 px at --size 160) fits this CPU:
    python -m detnas.bench.suite.latency_profile --sets bench-elastic-demo:network+nms --size 160 --n-train 30 \
        --n-test 10 --n-random 40 --runs 80 --rounds 20 --warmup 2
Measured (2 shared cores, 321 s; training paths half stratified by MACs, half uniform random): random paths (40)
R² 0.990 (a perfect predictor 0.999), MAPE 2.93 % vs the constant's 29.72 %, within +-10 % 100 % (5 %: 82 %), tau
0.915 vs a perfect predictor's 0.984; within +-15 % of their median 11.89 ms (13) R² 0.788, MAPE 3.37 % vs 8.17 %,
within +-10 % 100 %, tau 0.641 vs 0.949 (not 'accurate': in a band whose spread is 10 % of the mean, a 3 % error
misorders paths that 0.8 % noise would not); MACs and measured-table features equal within the noise (random
MAPE 3.04-3.13 % vs 2.93-3.09 %). All 30 training paths stratified (279 s, other random paths): R² 0.988, MAPE
3.47 %, within +-10 % 95 %; band R² 0.671, tau 0.802 vs 0.951. With 20 stratified training paths and 20 runs the
noise of a median was 7 % and random R² 0.908.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from detnas.bench.oracle import BackendOptions, TimingProtocol
from detnas.bench.profile import build_profile, save_profile
from detnas.bench.result import Scope
from detnas.bench.stats import HeldOutReport
from detnas.bench.suite import run_suite
from detnas.errors import DetnasError
from detnas.io import atomic_write_json
from detnas.space import get_space


def parse_sets(text: str) -> list[tuple[str, Scope]]:
    """'detnas-300m:network,detnas-1.3g:backbone' -> [(space, scope), ...]."""
    sets = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        space, _, scope = item.partition(":")
        if scope == Scope.END_TO_END.value:
            raise DetnasError(f"--sets '{item}': end-to-end is not profiled; use backbone, network or network+nms")
        sets.append((space, Scope.parse(scope or "backbone")))
    if not sets:
        raise DetnasError("--sets is empty; give SPACE:SCOPE entries such as detnas-300m:network")
    return sets


def goals(report: HeldOutReport) -> dict[str, bool]:
    return {"r2_ge_0.9": report.predictor.r2 >= 0.9,
            "tau_ge_0.9_reference": report.predictor.kendall_tau >= 0.9 * report.reference_tau,
            "mape_lt_third_of_constant": report.predictor.mape < report.constant.mape / 3,
            "accurate": report.accurate, "noise_limited": report.noise_limited}


def print_report(title: str, report: HeldOutReport) -> None:
    print(f"{title}: {report.n} held-out archs")
    for name, acc in report.rows():
        print(f"  {name:<34} within 5% {100 * acc.within_5:3.0f}%  within 10% {100 * acc.within_10:3.0f}%  "
              f"MAPE {acc.mape:6.2f}%  Kendall tau {acc.kendall_tau:6.3f}  R² {acc.r2:7.3f}")
    print(f"  {'a perfect predictor, given the noise':<34} Kendall tau {report.reference_tau:.3f}  R² "
          f"{report.r2_ceiling:.3f}   (split halves vs each other: tau {report.ceiling_tau:.3f})")
    for line in report.verdict():
        print(f"  {line}")


def measure_set(space: str, scope: Scope, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One profile build; the rows of its scope and, beyond the backbone, of the backbone timed beside it."""
    protocol = TimingProtocol(warmup=args.warmup, runs=args.runs, threads=1, device=args.device, clock=args.clock)
    profile = build_profile(get_space(space), backend=args.backend, size=(args.size, args.size), protocol=protocol,
                            options=BackendOptions(cuda_graphs=args.cuda_graphs), n_train=args.n_train,
                            n_test=args.n_test, rounds=args.rounds, seed=args.seed, scope=scope,
                            detector=args.detector, progress=lambda m: print(f"  {m}", flush=True),
                            n_random=args.n_random, near_ms=args.near_ms)
    if args.profile_dir:
        save_profile(profile, f"{args.profile_dir}/{space}-{scope.value}.json")
    where = f"{space} @ {args.size}, {profile.variant}, clock {args.clock}"
    near = f"random within +-15 % of {(profile.near.target_ms if profile.near else None) or 0:.3f} ms"
    reports = [(scope.value, "stratified", profile.report), (scope.value, "random", profile.random_report),
               (scope.value, near, profile.near_report)]
    if profile.backbone_report is not None:
        reports.insert(0, ("backbone", "stratified", profile.backbone_report))
    rows = []
    for name, archs, report in reports:
        label = name if name == "backbone" else f"{name} ({args.detector})"
        if report is None:
            print(f"{where}, {label}, {archs} archs: fewer than 5, not judged")
            continue
        print_report(f"{where}, {label}, {archs} archs", report)
        rows.append({"space": space, "scope": name, "archs": archs,
                     "detector": None if name == "backbone" else args.detector,
                     "report": report.to_dict(), "goals": goals(report), "build_seconds": profile.build_seconds,
                     "timed_with": scope.value, "fixed_ms": profile.fixed_ms,
                     "fingerprint": profile.fingerprint.to_dict()})
    if profile.predictor_choice is not None:  # an elastic space: which features and scales, every candidate's figures
        choice = profile.predictor_choice
        print(f"  predictor {choice['chosen']} (chosen by {choice['by']}); every candidate on the random paths:")
        for name, alt in choice["alternatives"].items():
            r = alt["random"]
            print(f"    {name:<14} LOO MAPE {alt['loo_mape']:5.2f}%" + ("" if r is None else
                  f"  random: MAPE {r['mape']:5.2f}%  within 10% {100 * r['within_10']:3.0f}%  R² {r['r2']:.3f}"))
        rows[-1]["predictor_choice"] = choice
    if profile.shared_part is not None:
        print(f"  {profile.shared_part.line()}")
        rows[-1]["shared_part"] = profile.shared_part.to_dict()
    print(f"  built in {profile.build_seconds:.0f}s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="detnas-300m:network,detnas-1.3g:network",
                        help="SPACE:SCOPE entries; a network scope reports its backbone too")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--detector", default="fpn", choices=("fpn", "retinanet"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=40, help="timed runs per block and arch, spread over --rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-test", type=int, default=18)
    parser.add_argument("--n-random", type=int, default=30, help="uniform random archs judged apart")
    parser.add_argument("--near-ms", type=float, default=None, help="target of the +-15 %% band (default: median)")
    parser.add_argument("--clock", default="thread-cpu", choices=("wall", "thread-cpu"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch backend on a GPU: replay CUDA graphs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arch draws and the timing order")
    parser.add_argument("--profile-dir", default=None, help="also write each device profile into this folder")
    parser.add_argument("--json", default="latency_profile.json")
    args = parser.parse_args()
    if args.clock == "thread-cpu" and args.device != "cpu":
        args.clock = "wall"  # a GPU's time is not the host thread's CPU time; CUDA events time it

    started, rows = time.perf_counter(), []
    for space, scope in parse_sets(args.sets):
        rows += measure_set(space, scope, args)
    total = time.perf_counter() - started
    print("goals met (R² >= 0.9, tau >= 0.9 x a perfect predictor's, MAPE < 1/3 of the constant's):")
    for row in rows:
        report = HeldOutReport.from_dict(row["report"])
        print(f"  {row['space']:<12} {row['scope']:<9} {row['archs'][:10]:<10} "
              f"{'yes' if row['goals']['accurate'] else 'NO ':<4} "
              f"R² {report.predictor.r2:.3f} (at best {report.r2_ceiling:.3f})  tau {report.predictor.kendall_tau:.3f}"
              f" / {report.reference_tau:.3f}  MAPE {report.predictor.mape:.2f}% vs {report.constant.mape:.2f}%  "
              f"within 5/10% {100 * report.predictor.within_5:.0f}/{100 * report.predictor.within_10:.0f}%"
              + ("  NOISE-LIMITED" if report.noise_limited else ""))
    print(f"total {total:.0f}s")
    settings = {k: getattr(args, k) for k in ("sets", "backend", "detector", "size", "runs", "rounds", "warmup",
                                              "n_train", "n_test", "n_random", "near_ms", "clock", "device",
                                              "cuda_graphs", "seed")}
    atomic_write_json(args.json, {"settings": settings, "total_seconds": total, "rows": rows})


if __name__ == "__main__":
    run_suite(main)
