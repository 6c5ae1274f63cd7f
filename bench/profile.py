"""Device profiles: block latencies of a search space measured on the deployment target, plus a predictor.

The search usually runs elsewhere, so `build_profile` measures on the target: every choice at every position
on its real input shape, the fixed parts, and then a set of full archs chosen from that table to span the
space (its fastest and slowest archs, the rest stratified by table sum). A predictor is fitted on part of the
archs and judged on the held-out rest against the best constant and the measurements' own agreement
(`HeldOutReport`); the JSON carries the fingerprint and the space digest so it is never applied to another
space, backend or machine by accident.

An elastic space (block widths and depths, detector genes) is profiled by `build_elastic_profile`: its block
table by (position, op, width multiple), its paths each at its own input size, and a part model
(`detnas.bench.elastic_predictor`) instead of the op-choice table.

Timing is interleaved: the runners of a phase are prepared first, then timed in rounds (each round gives every
runner a slice of its runs), so slow phases from other processes spread over all entries instead of biasing a few.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detnas.arch import Arch, sample_arch
from detnas.bench.backends import Prepared, latency_backend
from detnas.bench.elastic_predictor import ElasticPredictor, columns
from detnas.bench.fingerprint import Fingerprint, collect_fingerprint
from detnas.bench.models import timed_module
from detnas.bench.oracle import (
    DEFAULT_OPTIONS,
    DEFAULT_PROTOCOL,
    BackendOptions,
    TimingProtocol,
    prepare_module,
    time_interleaved,
    torch_threads,
)
from detnas.bench.predictor import LatencyPredictor
from detnas.bench.profile_record import PROFILE_FORMAT, DeviceProfile
from detnas.bench.result import PRECISIONS, Scope, check_choice
from detnas.bench.stats import HeldOutReport, judge_predictor, percentile, shared_part, summarize
from detnas.blocks import Stem, make_block
from detnas.errors import DetnasError
from detnas.io import atomic_write_json, read_json_file
from detnas.space import SearchSpace


def block_inputs(space: SearchSpace, size: tuple[int, int]) -> list[tuple[int, int, int, tuple[int, int]]]:
    """(cin, cout, stride, input HxW) of every choice block; each stride-2 conv (pad k//2) gives ceil(H / 2)."""
    h, w = (size[0] + 1) // 2, (size[1] + 1) // 2  # after the stride-2 stem
    out, cin = [], space.stem_width
    for width, depth in zip(space.stage_widths, space.stage_depths):
        for b in range(depth):
            out.append((cin, width, 2 if b == 0 else 1, (h, w)))
            if b == 0:
                h, w = (h + 1) // 2, (w + 1) // 2
            cin = width
    return out


def half_medians(samples: list[float], rounds: int) -> tuple[float, float]:
    """Medians of the even and the odd rounds (of the even and odd runs with one round): rounds are minutes
    apart, so the two halves differ by the machine's drift as well as by run-to-run jitter."""
    if rounds < 2:
        return percentile(samples[0::2], 50), percentile(samples[1::2], 50)
    per_round = len(samples) // rounds
    parity = [(i // per_round) % 2 for i in range(len(samples))]
    return (percentile([s for s, p in zip(samples, parity) if p == 0], 50),
            percentile([s for s, p in zip(samples, parity) if p == 1], 50))


POOL_PER_ARCH = 100  # candidate archs drawn per arch to choose, for the stratification by table sum


def choose_archs(space: SearchSpace, table: Sequence[dict[int, float]], n_train: int, n_test: int,
                 rng: random.Random) -> tuple[list[Arch], list[Arch]]:
    """Distinct training and held-out archs that span the space's latency range by the block table.

    The held-out set holds the fastest and the slowest arch (per position the fastest / slowest choice: the
    table decides which really are, not the kernel size) and the rest stratified: the table-sum range is cut
    into equal bins and one arch drawn from each. The training set is stratified the same way. Uniform random
    archs would crowd the middle of the range, where a constant already looks accurate.
    """
    if n_test < 2:
        raise DetnasError(f"--n-test {n_test}: the held-out set needs at least 2 archs (the fastest and the slowest)")
    order = [sorted(space.choices, key=lambda c: t[c]) for t in table]
    cost = {}  # choices -> table sum

    def add(choices: tuple[int, ...]) -> None:
        cost.setdefault(choices, sum(t[c] for t, c in zip(table, choices)))

    if len(space.choices) ** space.num_blocks <= POOL_PER_ARCH * (n_train + n_test):
        for choices in itertools.product(space.choices, repeat=space.num_blocks):
            add(choices)
    else:  # archs leaning towards the fast or slow end by a random amount, so every part of the range is drawn
        for _ in range(POOL_PER_ARCH * (n_train + n_test)):
            lean = rng.random() * 2 - 1
            add(tuple(o[0 if lean < 0 else -1] if rng.random() < abs(lean) else rng.choice(space.choices)
                      for o in order))
    fastest, slowest = tuple(o[0] for o in order), tuple(o[-1] for o in order)
    add(fastest)
    add(slowest)
    taken = {fastest, slowest}
    test = [fastest, slowest, *_stratified(cost, cost[fastest], cost[slowest], taken, n_test - 2, rng)]
    train = _stratified(cost, cost[fastest], cost[slowest], taken, n_train, rng)
    return [Arch(space, a) for a in train], [Arch(space, a) for a in test]


def _stratified(cost: dict[Any, float], lo: float, hi: float, taken: set[Any], count: int,
                rng: random.Random) -> list[Any]:
    """`count` keys of `cost` not yet `taken` (added to it), one per equal bin of [lo, hi]: a random one inside
    the bin, else the one nearest its middle."""
    picked = []
    for i in range(count):
        left, right = lo + (hi - lo) * i / count, lo + (hi - lo) * (i + 1) / count
        free = [a for a in cost if a not in taken]
        inside = [a for a in free if left <= cost[a] < right]
        arch = rng.choice(inside) if inside else min(free, key=lambda a: abs(cost[a] - (left + right) / 2))
        taken.add(arch)
        picked.append(arch)
    return picked


def choose_elastic_archs(space: SearchSpace, cost: Callable[[Arch], float], n_train: int, n_test: int,
                         rng: random.Random) -> tuple[list[Arch], list[Arch]]:
    """`choose_archs` for an elastic space, stratified by `cost` (a path's MACs, or a reference's prediction):
    the held-out set holds the narrowest path on the cheapest ops and the widest on the costliest, and archs are
    drawn leaning towards the small or the large end of every width, depth and detector gene by a random amount
    (uniform paths crowd the middle of the cost range)."""
    from detnas.arch import extreme_arch, gene_options
    from detnas.flops import width_table

    if n_test < 2:
        raise DetnasError(f"--n-test {n_test}: the held-out set needs at least 2 archs (the fastest and the slowest)")
    table = width_table(space, (224, 224))
    one = 1.0 if 1.0 in space.width_choices else space.width_choices[0]
    cheapest = tuple(min(space.choices, key=lambda c: t[c, one]) for t in table)
    costliest = tuple(max(space.choices, key=lambda c: t[c, one]) for t in table)
    fastest, slowest = extreme_arch(space, cheapest, widest=False), extreme_arch(space, costliest, widest=True)
    options, n = gene_options(space), space.num_blocks
    pool = {fastest.hash: fastest, slowest.hash: slowest}
    for _ in range(POOL_PER_ARCH * (n_train + n_test)):
        lean = rng.random() * 2 - 1
        genes = tuple(rng.choice(allowed) if k < n or rng.random() >= abs(lean) else
                      (min(allowed) if lean < 0 else max(allowed)) for k, allowed in enumerate(options))
        arch = Arch.from_genes(space, genes)
        pool.setdefault(arch.hash, arch)
    if len(pool) < n_train + n_test:
        raise DetnasError(f"space '{space.name}' gave only {len(pool)} distinct paths; lower --n-train/--n-test "
                          f"(asked {n_train} + {n_test})")
    costs = {h: cost(a) for h, a in pool.items()}
    taken = {fastest.hash, slowest.hash}
    lo, hi = costs[fastest.hash], costs[slowest.hash]
    test = [fastest.hash, slowest.hash, *_stratified(costs, lo, hi, taken, n_test - 2, rng)]
    train = _stratified(costs, lo, hi, taken, n_train, rng)
    return [pool[h] for h in train], [pool[h] for h in test]


NEAR_BAND = 0.15  # archs within +-15 % of a target: where the search's feasibility decisions fall


def random_archs(space: SearchSpace, count: int, exclude: set[str], rng: random.Random) -> list[Arch]:
    """Up to `count` distinct uniform random archs (as the search draws them), none of them in `exclude` (the
    training archs): the set a predictor is used on, whose spread is far narrower than a stratified set's."""
    drawn: dict[str, Arch] = {}
    for _ in range(POOL_PER_ARCH * max(1, count)):
        if len(drawn) == count:
            break
        arch = sample_arch(space, rng)
        if arch.hash not in exclude:
            drawn.setdefault(arch.hash, arch)
    return list(drawn.values())


def build_profile(
    space: SearchSpace, *, backend: str = "ort", size: tuple[int, int] = (224, 224), batch: int = 1,
    precision: str = "fp32", protocol: TimingProtocol = DEFAULT_PROTOCOL, options: BackendOptions = DEFAULT_OPTIONS,
    n_train: int = 20, n_test: int = 30, rounds: int = 10, seed: int = 0, scope: Scope = Scope.BACKBONE,
    detector: str = "fpn", progress: Callable[[str], None] = lambda message: None, n_random: int = 30,
    near_ms: float | None = None,
) -> DeviceProfile:
    """Measure the block table and the fixed parts, then `n_train + n_test` archs chosen from the table at
    `scope`; fit the predictor and judge it on the held-out archs. Beyond the backbone, every arch's backbone is
    timed too, in the same rounds: the detector's FPN / head / NMS cost depends on the stage widths only, so the
    correction's intercept carries it, and network minus backbone per arch measures it (the fixed part 'detector',
    their median) and how far it really is arch-independent ('shared_part'); the backbone's own predictor is
    judged on the same archs ('backbone_report'), so one build reports both scopes.

    The stratified held-out set spans the space, and a predictor looks better there than where it is used: its
    spread is several times that of the archs the search draws. So `n_random` uniform random archs are timed in
    the same rounds and the predictor is judged on them too ('random_report'), and on those of them within
    +-15 % of `near_ms` (default: their median), where a target's decisions fall ('near_report')."""
    latency_backend(backend)  # refuses an unregistered name, listing the registered ones
    check_choice("precision", precision, PRECISIONS)
    if precision == "int8":
        raise DetnasError("profiles are measured in fp32 or fp16; INT8 per-block calibration is not supported")
    if n_train + n_test > len(space.choices) ** space.num_blocks:
        raise DetnasError(f"space '{space.name}' has only {len(space.choices) ** space.num_blocks} archs; lower "
                          f"--n-train/--n-test (asked {n_train} + {n_test})")
    if space.elastic:
        return build_elastic_profile(space, backend=backend, size=size, batch=batch, precision=precision,
                                     protocol=protocol, options=options, n_train=n_train, n_test=n_test,
                                     rounds=rounds, seed=seed, scope=scope, detector=detector, progress=progress,
                                     n_random=n_random, near_ms=near_ms)
    started = time.perf_counter()
    fingerprint = collect_fingerprint(protocol.device, protocol.threads)
    positions = block_inputs(space, size)

    def prepare(module: nn.Module, shape: tuple[int, ...]) -> Prepared:
        inputs = [torch.rand(shape, generator=torch.Generator().manual_seed(seed))]
        return prepare_module(module.eval(), inputs, backend=backend, precision=precision, protocol=protocol,
                              options=options)

    k = len(space.choices)
    with torch_threads(protocol.threads):
        torch.manual_seed(seed)
        progress(f"preparing {len(positions) * k} blocks and the stem")
        stem = prepare(Stem(space.stem_width), (batch, 3, *size))
        blocks = [prepare(make_block(c, cin, cout, stride), (batch, cin, *hw))
                  for cin, cout, stride, hw in positions for c in space.choices]
        block_stats = [summarize(s) for s in time_interleaved([stem, *blocks], protocol, rounds, progress, "blocks", seed)]
        table = [{c: block_stats[1 + p * k + j].median_ms for j, c in enumerate(space.choices)}
                 for p in range(len(positions))]
        rng = random.Random(seed)
        train, test = choose_archs(space, table, n_train, n_test, rng)
        archs = train + test
        drawn = random_archs(space, n_random, {a.hash for a in train}, rng)
        progress(f"preparing {len(archs)} + {len(drawn)} random archs at scope {scope.value}"
                 + ("" if scope is Scope.BACKBONE else " and the first ones' backbones"))
        nets = [prepare(timed_module(a, scope, detector), (batch, 3, *size)) for a in archs + drawn]
        if scope is not Scope.BACKBONE:
            nets += [prepare(timed_module(a, Scope.BACKBONE), (batch, 3, *size)) for a in archs]
        samples = time_interleaved(nets, protocol, rounds, progress, "archs", seed)
        random_samples = samples[len(archs):len(archs) + len(drawn)]
        del samples[len(archs):len(archs) + len(drawn)]
    stage_of = [s for s, depth in enumerate(space.stage_depths) for _ in range(depth)]
    fixed = {"stem": block_stats[0].median_ms}
    n = len(archs)
    backbone = None if scope is Scope.BACKBONE else _Fitted.of(table, stage_of, fixed["stem"], train, test,
                                                              samples[n:], rounds)
    if backbone is not None:
        # the detector's cost is the same for every arch when it depends on the stage widths only: network minus
        # backbone per arch measures it and says how far that holds
        split = [half_medians(s, rounds) for s in samples]
        shared = shared_part([percentile(s, 50) for s in samples[:n]], backbone.measured,
                             ([h[0] for h in split[:n]], [h[1] for h in split[:n]]),
                             ([h[0] for h in split[n:]], [h[1] for h in split[n:]]))
        fixed["detector"] = shared.median_ms
    fitted = _Fitted.of(table, stage_of, sum(fixed.values()), train, test, samples[:n], rounds)
    report = fitted.report
    judged = judge_sets(fitted.predictor, drawn, random_samples, rounds, near_ms)
    return DeviceProfile.from_dict({
        **profile_header(space, backend, protocol, options, precision, scope, detector, (batch, 3, *size), rounds, fingerprint),
        "fixed_ms": fixed,
        "blocks_cv": [[block_stats[1 + p * k + j].cv for j in range(k)] for p in range(len(positions))],
        "predictor": fitted.predictor.to_dict(),
        "archs": [{"choices": a.compact(), "hash": a.hash, "split": "train" if i < n_train else "test",
                   "measured_ms": fitted.measured[i], "cv": fitted.cv[i], "predicted_ms": fitted.predicted[i],
                   "table_sum_ms": fitted.table_sum[i],
                   **({} if backbone is None else {"backbone_ms": backbone.measured[i]})} for i, a in enumerate(archs)]
                 + judged.arch_rows(),
        "report": report.to_dict(),
        **judged.to_dict(),
        **({} if backbone is None else {"backbone_report": backbone.report.to_dict(), "shared_part": shared.to_dict()}),
        "build_seconds": time.perf_counter() - started,
    }, "detnas bench profile")


TIMED_CLASSES = 81  # the random-init detector `timed_module` builds (COCO's 80 classes + background)


def build_elastic_profile(
    space: SearchSpace, *, backend: str, size: tuple[int, int], batch: int, precision: str, protocol: TimingProtocol,
    options: BackendOptions, n_train: int, n_test: int, rounds: int, seed: int, scope: Scope, detector: str,
    progress: Callable[[str], None], n_random: int, near_ms: float | None,
) -> DeviceProfile:
    """`build_profile` of an elastic space (`detnas.bench.elastic_predictor`): every (position, op, width multiple)
    block and the stem timed alone at `size` (the table), then training, held-out and random paths each at its own
    input size (its `input_size` gene's share of `size`, as the search times it); the predictor is the candidate
    (MACs or table features, and how many scales) with the lowest leave-one-out error on the training paths, and
    every candidate is judged on the held-out random paths too ('alternatives')."""
    from detnas.detection.cost import path_size
    from detnas.space import middle_width

    started = time.perf_counter()
    fingerprint = collect_fingerprint(protocol.device, protocol.threads)
    positions = block_inputs(space, size)
    keys = [(c, w) for c in space.choices for w in space.width_choices]

    def prepare(module: nn.Module, shape: tuple[int, ...]) -> Prepared:
        inputs = [torch.rand(shape, generator=torch.Generator().manual_seed(seed))]
        return prepare_module(module.eval(), inputs, backend=backend, precision=precision, protocol=protocol,
                              options=options)

    with torch_threads(protocol.threads):
        torch.manual_seed(seed)
        progress(f"preparing {len(positions) * len(keys)} blocks (op x width) and the stem")
        stem = prepare(Stem(space.stem_width), (batch, 3, *size))
        blocks = [prepare(make_block(c, cin, cout, stride, middle_width(cout, w)), (batch, cin, *hw))
                  for cin, cout, stride, hw in positions for c, w in keys]
        block_stats = [summarize(s) for s in time_interleaved([stem, *blocks], protocol, rounds, progress, "blocks", seed)]
        lut = [{k: block_stats[1 + p * len(keys) + j].median_ms for j, k in enumerate(keys)} for p in range(len(positions))]
        names = columns(space, scope.value, detector)
        macs = ElasticPredictor(space.digest, scope.value, detector, TIMED_CLASSES, size, "macs", "full",
                                tuple(0.0 if n in ("blocks", "pixels", "rois", "const") else 1.0 for n in names))
        rng = random.Random(seed)
        # half the training paths stratified by MACs, half uniform random (as the search draws them, crowding the
        # middle of the range where the fit is used most; see the few-shot paths in detnas.bench.fewshot)
        spread = n_train - n_train // 2
        train, test = choose_elastic_archs(space, macs.predict, spread, n_test, rng)
        train += random_archs(space, n_train - spread, {a.hash for a in train + test}, rng)
        archs = train + test
        drawn = random_archs(space, n_random, {a.hash for a in train}, rng)
        progress(f"preparing {len(archs)} + {len(drawn)} random paths at scope {scope.value}, each at its input size")
        nets = [prepare(timed_module(a, scope, detector, TIMED_CLASSES), (batch, 3, *path_size(a, size)))
                for a in archs + drawn]
        samples = time_interleaved(nets, protocol, rounds, progress, "archs", seed)
    n = len(archs)
    stats = [summarize(s) for s in samples[:n]]
    measured = [s.median_ms for s in stats]
    fits = ElasticPredictor.fit_candidates(space, train, measured[:len(train)], scope=scope.value, detector=detector,
                                           num_classes=TIMED_CLASSES, base=size, lut=lut)
    chosen = min(fits, key=lambda name: fits[name][0])
    predictor = fits[chosen][1]
    predicted = [predictor.predict(a) for a in archs]
    split = [half_medians(s, rounds) for s in samples[len(train):n]]
    report = judge_predictor(predicted[len(train):], measured[len(train):], ([h[0] for h in split],
                             [h[1] for h in split]))
    judged = judge_sets(predictor, drawn, samples[n:], rounds, near_ms)
    alternatives = {}
    for name, (loo, fitted) in fits.items():
        other = judge_sets(fitted, drawn, samples[n:], rounds, judged.near_ms)
        alternatives[name] = {"loo_mape": loo, **{key: None if r is None else r.to_dict()["predictor"] for key, r in
                                                   (("random", other.random), ("near", other.near))}}
    return DeviceProfile.from_dict({
        **profile_header(space, backend, protocol, options, precision, scope, detector, (batch, 3, *size), rounds, fingerprint),
        "fixed_ms": {"stem": block_stats[0].median_ms},
        "blocks_cv": [[block_stats[1 + p * len(keys) + j].cv for j in range(len(keys))] for p in range(len(positions))],
        "predictor": predictor.to_dict(),
        "predictor_choice": {"chosen": chosen, "by": "leave-one-out MAPE on the training paths", "alternatives":
                             alternatives},
        "archs": [{"choices": a.compact(), "hash": a.hash, "split": "train" if i < len(train) else "test",
                   "size": list(path_size(a, size)), "measured_ms": measured[i], "cv": stats[i].cv,
                   "predicted_ms": predicted[i]} for i, a in enumerate(archs)] + judged.arch_rows(),
        "report": report.to_dict(),
        **judged.to_dict(),
        "build_seconds": time.perf_counter() - started,
    }, "detnas bench profile")


@dataclass(frozen=True)
class _Fitted:
    """A predictor fitted on the training archs' measurements at one scope and judged on the held-out rest."""

    predictor: LatencyPredictor
    measured: list[float]
    cv: list[float]
    predicted: list[float]
    table_sum: list[float]
    report: HeldOutReport

    @classmethod
    def of(cls, table: Sequence[dict[int, float]], stage_of: Sequence[int], fixed_ms: float, train: Sequence[Arch],
           test: Sequence[Arch], samples: Sequence[list[float]], rounds: int) -> _Fitted:
        stats = [summarize(s) for s in samples]
        measured = [s.median_ms for s in stats]
        archs = [*train, *test]
        predictor = LatencyPredictor.fit(table, stage_of, fixed_ms, [a.choices for a in train], measured[:len(train)])
        predicted = [predictor.predict(a.choices) for a in archs]
        raw = [predictor.table_sum(a.choices) for a in archs]
        split = [half_medians(s, rounds) for s in samples[len(train):]]
        report = judge_predictor(predicted[len(train):], measured[len(train):], ([h[0] for h in split],
                                 [h[1] for h in split]), table_sum=raw[len(train):])
        return cls(predictor, measured, [s.cv for s in stats], predicted, raw, report)


@dataclass(frozen=True)
class JudgedSets:
    """The predictor on uniform random archs and on those of them near a target (`near_ms` +- `NEAR_BAND`)."""

    archs: list[Arch]
    measured: list[float]
    predicted: list[float]
    near_ms: float | None
    random: HeldOutReport | None
    near: HeldOutReport | None

    halves: list[tuple[float, float]]

    def arch_rows(self) -> list[dict[str, Any]]:
        return [{"choices": a.compact(), "hash": a.hash, "split": "random", "measured_ms": m, "predicted_ms": p,
                 "halves_ms": list(h)} for a, m, p, h in zip(self.archs, self.measured, self.predicted, self.halves)]

    def to_dict(self) -> dict[str, Any]:
        near = sum(abs(m / self.near_ms - 1) <= NEAR_BAND for m in self.measured) if self.near_ms else 0
        return {"random_report": None if self.random is None else self.random.to_dict(),
                "near_report": None if self.near is None else self.near.to_dict(),
                "near": {"target_ms": self.near_ms, "band": NEAR_BAND, "n": near}}


MIN_JUDGED = 5  # archs below which a set is not judged (its tau and R² would be noise)


def judge_sets(predictor: LatencyPredictor | ElasticPredictor, archs: Sequence[Arch], samples: Sequence[list[float]], rounds: int,
               near_ms: float | None = None) -> JudgedSets:
    """Judge `predictor` on measured random archs, and on those within +-15 % of `near_ms` (default: their median
    measured latency, the target a user picking a typical arch would set)."""
    measured = [percentile(s, 50) for s in samples]
    predicted = [_predict(predictor, a) for a in archs]
    halves = [half_medians(s, rounds) for s in samples]
    target = near_ms if near_ms is not None else (percentile(measured, 50) if measured else None)

    def judge(keep: list[int]) -> HeldOutReport | None:
        if len(keep) < MIN_JUDGED:
            return None
        return judge_predictor([predicted[i] for i in keep], [measured[i] for i in keep],
                               ([halves[i][0] for i in keep], [halves[i][1] for i in keep]),
                               table_sum=None if isinstance(predictor, ElasticPredictor)
                               else [predictor.table_sum(archs[i].choices) for i in keep])

    near = [i for i, m in enumerate(measured) if target and abs(m / target - 1) <= NEAR_BAND]
    return JudgedSets(list(archs), measured, predicted, target, judge(list(range(len(archs)))), judge(near), halves)


def save_profile(profile: DeviceProfile, path: str | Path) -> None:
    atomic_write_json(path, profile.to_dict())


def read_profile(path: str | Path) -> DeviceProfile:
    """A profile file as a record, whatever it was measured for (`load_profile` checks that it fits)."""
    return DeviceProfile.from_dict(read_json_file(path, "latency profile", "build one with `detnas bench profile`"),
                                   path)


def load_profile(
    path: str | Path, space: SearchSpace, backend: str, force: bool = False,
    fingerprint: Fingerprint | str | None = None,
) -> DeviceProfile:
    """Read a profile and check it fits: same space content and backend, and `fingerprint` (a Fingerprint or
    hash the caller expects, e.g. this machine's) when given. `force` turns the mismatches into no error."""
    profile = read_profile(path)
    if force:
        return profile
    if profile.space_digest != space.digest:
        raise DetnasError(f"{path}: profile is for space '{profile.space_name}' ({profile.space_digest}) "
                          f"but the search uses '{space.name}' ({space.digest}); build a profile for this space "
                          "or pass --force")
    if profile.backend != backend:
        raise DetnasError(f"{path}: profile was measured with backend '{profile.backend}', not '{backend}'; "
                          "build one with this backend or pass --force")
    expected = fingerprint.hash if isinstance(fingerprint, Fingerprint) else fingerprint
    if expected is not None and profile.fingerprint_hash != expected:
        theirs = profile.fingerprint
        diff = "; ".join(theirs.differences(fingerprint)) if isinstance(fingerprint, Fingerprint) and theirs else (
            f"fingerprint {profile.fingerprint_hash} != {expected}")
        raise DetnasError(f"{path}: profile was measured on another device/environment ({diff}); "
                          "re-profile on this target or pass --force")
    return profile


def load_predictor(profile: DeviceProfile) -> LatencyPredictor | ElasticPredictor:
    """A loaded profile's predictor: the op-choice table of a paper space, or an elastic space's part model."""
    data = profile.predictor
    if data is None:
        raise DetnasError(f"{profile.source or 'latency profile'}: latency profile field 'predictor' is missing; "
                          "build one with `detnas bench profile`")
    if data.get("kind") == ElasticPredictor.KIND:
        return ElasticPredictor.from_dict(data)
    predictor = LatencyPredictor.from_dict(data)
    if {"width_multipliers", "min_depths", "detector"} & set(profile.space):
        raise DetnasError(f"latency profile of elastic space '{profile.space_name}' predicts op choices only (an "
                          "older detnas built it), not widths, depths or detector genes; rebuild it with "
                          "`detnas bench profile`")
    return predictor


def _predict(predictor: LatencyPredictor | ElasticPredictor, arch: Arch) -> float:
    return predictor.predict(arch) if isinstance(predictor, ElasticPredictor) else predictor.predict(arch.choices)


def predict_latency(profile: DeviceProfile, arch: Arch | Sequence[int]) -> float:
    """Predicted latency in ms of an arch (or, in a paper space, its flat choices) from a loaded profile."""
    predictor = load_predictor(profile)
    if isinstance(predictor, ElasticPredictor):
        if not isinstance(arch, Arch):
            raise DetnasError("an elastic space's profile predicts a path with its genes (an Arch), not op choices")
        return predictor.predict(arch)
    return predictor.predict(arch.choices if isinstance(arch, Arch) else tuple(arch))


def profile_header(space: SearchSpace, backend: str, protocol: TimingProtocol, options: BackendOptions, precision: str,
            scope: Scope, detector: str, input_shape: tuple[int, ...], rounds: int,
            fingerprint: Fingerprint) -> dict[str, Any]:
    """What every profile (op-choice or elastic) states about how and where it was measured: the fields a search
    compares with its own timing before it trusts the profile."""
    return {
        "format": PROFILE_FORMAT,
        "space": space.to_dict(),
        "space_digest": space.digest,
        "backend": backend,
        "variant": protocol.variant(options, backend),
        "precision": precision,
        "scope": scope.value,
        "detector": None if scope is Scope.BACKBONE else detector,
        "input_shape": list(input_shape),
        "protocol": {"warmup": protocol.warmup, "runs": protocol.runs, "rounds": rounds, "threads": protocol.threads,
                     "device": protocol.device, "clock": protocol.clock},
        "fingerprint": fingerprint.to_dict(),
        "fingerprint_hash": fingerprint.hash,
    }
