"""The main job end to end on one machine: demo data -> supernet pre-training -> detection fine-tuning ->
latency-constrained search -> winner's detector -> ONNX export with parity -> benchmark -> predict -> report.

It lives in the workflows room, above export and search, because it calls every room below it; each step is the
same Python API the individual commands use, so the demo exercises the product, not a shortcut.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detnas.arch import Arch
from detnas.checkpoint import read_checkpoint_meta, save_checkpoint
from detnas.data.demo import ShapeLayout
from detnas.errors import DetnasError
from detnas.export.parity import MIN_DETECTIONS
from detnas.export.scored import SHIPPED_AP_TOL  # the export's own check of a search winner uses it too
from detnas.io import atomic_write_json, atomic_write_text, make_dir, read_json_file
from detnas.lock import RUN_MARKERS, output_lock
from detnas.workflows.main_job_summary import (
    SHIPPED_TARGET,
    BenchmarkSummary,
    ExportSummary,
    FrontSpan,
    LatencySpread,
    MainJobSummary,
    ReleasedRow,
    ShippedAccuracy,
    TargetRow,
    ValidationMetrics,
    Versus,
)

if TYPE_CHECKING:
    from detnas.data import DemoDetection
    from detnas.search.algorithms import EvolutionSettings
    from detnas.search.evaluators import DetectionAP
    from detnas.search.latency import Timing
    from detnas.search.objectives import Constraints
    from detnas.search.report import SearchRun
    from detnas.search.targets import Target
    from detnas.space import SearchSpace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MainJobPlan:
    """Sizes of each step; `full` fits the project's 15-minute CPU budget (docs/demo.md), `smoke` is the CI-sized run.

    The space is elastic (`detnas-300m-demo`: the paper's op choices, box-head convs, test-time proposals and input
    size), so candidates differ in what costs and the search trades latency against AP. Both supernet
    stages draw their paths with the sandwich rule (widest, narrowest, two random), so the extremes the front spans
    are trained as often as any path. Candidates are timed at `latency_scope` network+nms, the deployed graph: at
    'network' an FPN detector is backbone + FPN + RPN head only, so the box head's convs and FC and the proposal
    count (most of a path's cost at 128 px) would not show, and at 'backbone' none of the detector genes would."""

    space: str = "detnas-300m-demo"
    sampler: str = "sandwich"  # both supernet stages (an elastic space's widest and narrowest paths every cycle)
    latency_scope: str = "network+nms"
    train_images: int = 48
    val_images: int = 16
    search_val_images: int = 12
    layout: ShapeLayout = ShapeLayout(sizes=(128, 128), objects=(1, 4), object_fraction=(0.16, 0.5), square=True)
    cls_per_class: int = 40
    cls_iterations: int = 40
    cls_lr: float = 0.02  # the cpu-cls recipe's 0.1 diverges on the 4-class shapes set at batch 32
    # Most of the budget goes here: the winner ships the supernet's inherited weights; fewer iterations or a higher
    # lr left random paths' AP50 lower (docs/measurements.md, "The demo's plan").
    det_iterations: int = 360
    det_lr: float = 0.007
    det_batch: int = 2
    det_size: int = 128  # min_size = max_size: the paper detector's square input (an elastic path's input-size gene
    # scales it: 96 or 128 px in the demo space); the winner exports at its own, as the search timed and scored it
    roi_batch: int = 16  # FPN: RoIs per image for the 4-conv box head; the head dominates a CPU step
    proposals: int = 50  # FPN: test-time RPN proposals per image (search, export); an elastic path's gene decides
    population: int = 6
    generations: int = 3
    bn_images: int = 12
    bn_batch: int = 4
    parity_images: int = 8
    min_parity_detections: int = MIN_DETECTIONS
    # timed runs per candidate: the search's bound at its budget of 18 needs >= 9 (`min_runs_for_bound`); each
    # whole-detector candidate costs an export plus runs of 35-340 ms, so 20 runs made the search 257 of a 610 s demo
    latency_runs: int = 10
    bench_runs: int = 50
    seed: int = 0

    @classmethod
    def named(cls, name: str) -> MainJobPlan:
        # smoke: 200 detection iterations, as fewer shipped a winner of AP50 0.0 in CI (docs/measurements.md,
        # "The demo's plan")
        plans = {"full": cls(), "smoke": cls(train_images=32, val_images=12, search_val_images=8, cls_per_class=8,
                                             cls_iterations=6, det_iterations=200, population=4, generations=2,
                                             bn_images=8, parity_images=16, latency_runs=8, bench_runs=10)}
        if name not in plans:
            raise DetnasError(f"--plan '{name}': choose one of {', '.join(plans)}")
        return plans[name]

    @classmethod
    def recorded(cls, out: Path) -> MainJobPlan:
        """The plan the run in `out` was made with (its run record), e.g. to draw more data like its own."""
        saved = read_json_file(out / RUN_RECORD, "main job's run record", f"run `detnas demo --out {out}` first")
        return cls.from_dict(saved["plan"])

    @classmethod
    def from_dict(cls, plan: dict[str, Any]) -> MainJobPlan:
        """The plan as `asdict` wrote it (the run record's and summary.json's `plan`)."""
        layout = ShapeLayout(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan["layout"].items()})
        return cls(**{**plan, "layout": layout})


@dataclass
class MainJobResult:
    out: Path
    arch: Arch
    files: dict[str, Path]
    seconds: dict[str, float]
    summary: MainJobSummary


RUN_RECORD = RUN_MARKERS["demo"]  # the plan a results folder was made with, so a rerun there continues that run


def _train_stage(stage: Callable[[Any], Path], preset: str, overrides: dict[str, Any]) -> Path:
    """Train one stage into `overrides['out']`, continuing the checkpoints a previous run of the main job left
    there (a finished stage only rewrites its final weights), so a rerun into the same folder repeats nothing.
    It keeps only the newest checkpoint, all a rerun needs (the recipes' three cost the demo folder 400 MB more)."""
    from detnas.train import resolve_config
    from detnas.train.state import CheckpointDir

    resume = CheckpointDir(overrides["out"], keep_last=1).latest() is not None
    return stage(resolve_config(preset, overrides={**overrides, "resume": resume, "keep_last": 1}))


def continue_run(out: Path, plan: MainJobPlan, latency_target_ms: float | None) -> float | None:
    """Record the plan in `out`, or check it against the one recorded there by an earlier run; returns the latency
    target that run resolved (a rerun without --latency-target keeps it instead of re-measuring a slightly different
    one, which its search journal would refuse). A folder made with another plan is refused, never mixed."""
    record = out / RUN_RECORD
    wanted = json.loads(json.dumps(asdict(plan)))
    if not record.exists():
        make_dir(out)
        atomic_write_json(record, {"plan": wanted, "latency_target_ms": latency_target_ms})
        return latency_target_ms
    saved = read_json_file(record, "main job's run record", f"remove {out} or choose another --out")
    changed = sorted(k for k in wanted if saved.get("plan", {}).get(k) != wanted[k])
    if changed:
        raise DetnasError(f"{record}: {out} holds a main-job run with another plan (fields {', '.join(changed)}); "
                          "rerun with that run's --plan or choose another --out")
    if latency_target_ms is not None and saved.get("latency_target_ms") not in (None, latency_target_ms):
        raise DetnasError(f"{record}: {out} holds a run searched under {saved['latency_target_ms']} ms; rerun with "
                          "that --latency-target (or none) or choose another --out")
    return saved.get("latency_target_ms") if latency_target_ms is None else latency_target_ms


def _winner_checkpoint(accuracy: DetectionAP, arch: Arch, supernet_ckpt: Path, out: Path) -> Path:
    """The winner as a standalone detector, exactly as the search scored it (`DetectionAP.calibrated`: the same
    BN images, batches and mode), saved as a `child-det` checkpoint. Retraining (`detnas train child`) is the
    paper's final step and improves accuracy further; the demo ships the inherited weights."""
    detector = accuracy.calibrated(arch)
    meta = read_checkpoint_meta(supernet_ckpt).with_arch("child-det", arch)
    return save_checkpoint(out, detector.state_dict(), meta.to_dict())


def median_random_target(supernet_ckpt: Path, search_ann: Path, images: Path, timing: Timing, cache: Path,
                         proposals: int, settings: EvolutionSettings, constraints: Constraints, count: int = 8) -> float:
    """The median latency bound of a few uniformly sampled archs, each timed as the search times it (at `timing`'s
    scope; beyond the backbone, its detector cut from the supernet on search-validation images): a target that rules
    out about half of the space, so the constraint matters without the search spending its budget on rejected ones.

    The archs are the search's own first uniform draws (`generation_rng`'s generation 0 under `settings.seed`), timed
    into the cache the search reads: its first generation finds them there instead of timing each again (a
    whole-detector export and its runs, ~5 s a candidate on the demo's 2 cores).

    The bound, not the median: the search holds each candidate's figure under `constraints`' feasibility rule (its
    upper bound at the confidence `settings`' budget asks, under ucb95) against the target, so
    a target at the median of medians made about half of the random archs infeasible by the bound and, at a higher
    load than when it was measured (noisier runs, wider bounds), every candidate (a test run on 2 cores shared with
    four other jobs: "no architecture under 3.444 ms" while candidates timed 3.3-4.6 ms).

    It is never below 1.1 x the fastest probe the search checks the target against (timed here into the same
    cache, so the search reads the same figure): on a busy machine the spread of random archs can be smaller than
    the noise, and a target under the fastest arch would stop the search."""
    from detnas.arch import sample_arch
    from detnas.data import CocoDetection
    from detnas.detection.supernet_path import SupernetDetector
    from detnas.search.evolution import generation_rng
    from detnas.search.latency import fastest_probe
    from detnas.search.objectives import bound_confidence
    from detnas.search.runner import SearchRequest, measured_latency

    supernet = SupernetDetector.load(supernet_ckpt, proposals=proposals)
    _, oracle = measured_latency(supernet, CocoDetection(search_ann, images), timing, cache,
                                 confidence=bound_confidence(settings.budget))
    first = generation_rng(settings.seed, 0)
    timed = sorted(constraints.held_latency(oracle.latency(sample_arch(supernet.space, first))) for _ in range(count))
    cost_size = (SearchRequest.flops_size, SearchRequest.flops_size)
    fastest = min(oracle.latency(arch).median_ms for arch in fastest_probe(supernet.space, cost_size))
    return round(max(timed[count // 2], 1.1 * fastest), 3)


@dataclass
class DemoSupernet:
    """The generated detection data, its split and the detection supernet trained on the training part."""

    data: DemoDetection
    supernet_ann: Path
    search_ann: Path
    checkpoint: Path


def train_demo_supernet(out: Path, plan: MainJobPlan,
                        step: Callable[[str], Callable[[], None]] = lambda name: lambda: None) -> DemoSupernet:
    """The road's first half on generated shapes: data, split, supernet pre-training, detection fine-tuning.
    `step(name)` starts a named step and returns the call that ends it (the main job times its steps so)."""
    from detnas.data import make_demo_classification, make_demo_detection, split_coco
    from detnas.train import train_supernet_cls, train_supernet_det

    done = step("demo data")
    det = make_demo_detection(out / "data" / "det", plan.train_images, plan.val_images, plan.seed, plan.layout)
    cls_root = make_demo_classification(out / "data" / "cls", plan.cls_per_class, max(2, plan.cls_per_class // 4),
                                        seed=plan.seed)
    supernet_ann, search_ann = split_coco(det.train_ann, plan.search_val_images, plan.seed, out / "data" / "split")
    done()

    done = step("supernet pre-training (classification)")
    cls_ckpt = _train_stage(train_supernet_cls, "cpu-cls", {
        "space": plan.space, "iterations": plan.cls_iterations, "lr": plan.cls_lr, "data": str(cls_root / "train"),
        "val_data": str(cls_root / "val"), "out": str(out / "runs" / "supernet-cls"), "seed": plan.seed,
        "sampler": plan.sampler})
    done()

    done = step("supernet detection fine-tuning")
    det_ckpt = _train_stage(train_supernet_det, "cpu-det", {
        "space": plan.space, "iterations": plan.det_iterations, "lr": plan.det_lr, "batch_size": plan.det_batch,
        "data": str(det.train_images), "ann": str(supernet_ann), "init": str(cls_ckpt),
        "out": str(out / "runs" / "supernet-det"), "min_size": plan.det_size, "max_size": plan.det_size,
        "roi_batch": plan.roi_batch,
        "proposals": plan.proposals,
        "milestones": [int(plan.det_iterations * 0.7), int(plan.det_iterations * 0.9)],
        "warmup_iters": max(1, plan.det_iterations // 10), "seed": plan.seed, "sampler": plan.sampler})
    done()
    return DemoSupernet(det, supernet_ann, search_ann, det_ckpt)


def run_main_job(out: str | Path, plan: MainJobPlan = MainJobPlan(),
                 latency_target_ms: float | None = None) -> MainJobResult:
    """Run every step into `out`, holding it against a second run (`output_lock`); returns where everything is, its
    steps logged to this module's logger (the CLI prints them). `latency_target_ms=None` picks a target measured on
    this machine (`median_random_target`), so the constraint bites whatever the machine's speed."""
    with output_lock(out, kind="demo", log=logger.info):
        return _run_main_job(Path(out), plan, latency_target_ms)


def _run_main_job(out: Path, plan: MainJobPlan, latency_target_ms: float | None) -> MainJobResult:
    from detnas.arch import released_archs
    from detnas.bench.inputs import image_batches
    from detnas.bench.oracle import TimingProtocol, measure_onnx
    from detnas.bench.result import Scope
    from detnas.data import CocoDetection
    from detnas.detection.cost import path_size
    from detnas.detection.supernet_path import SupernetDetector
    from detnas.export.api import ExportRequest, GraphOptions, ParityOptions, SourceOptions, run_export
    from detnas.search.evaluators import DetectionAP
    from detnas.search.evolution import EvolutionSettings
    from detnas.search.latency import Timing
    from detnas.search.objectives import Constraints
    from detnas.search.report import Mark, plot_pareto
    from detnas.search.runner import JOURNAL_NAME, SearchRequest, measured_latency, run_search

    continued = (out / RUN_RECORD).exists()
    latency_target_ms = continue_run(out, plan, latency_target_ms)
    if continued:
        logger.info(f"continuing the run in {out}: finished steps are read back, unfinished ones resume")
    seconds: dict[str, float] = {}
    files: dict[str, Path] = {}

    def step(name: str) -> Callable[[], None]:
        start = time.perf_counter()
        logger.info(f"[{len(seconds) + 1}] {name} ...")
        return lambda: seconds.__setitem__(name, round(time.perf_counter() - start, 1))

    trained = train_demo_supernet(out, plan, step)
    det, supernet_ann, search_ann, det_ckpt = (trained.data, trained.supernet_ann, trained.search_ann,
                                               trained.checkpoint)
    size = (plan.det_size, plan.det_size)

    done = step("latency-constrained evolutionary search (ONNX Runtime, CPU)")
    # At network+nms (the plan's latency_scope, see MainJobPlan): every gene of the elastic space costs there; each
    # candidate's own detector is cut from the supernet and timed at its input-size gene's share of `size`
    timing = Timing(size=size, backend="ort", scope=plan.latency_scope, runs=plan.latency_runs,
                    clock="thread-cpu")
    parents = max(2, plan.population // 3)
    settings = EvolutionSettings(population=plan.population, generations=plan.generations, parents=parents,
                                 mutations=plan.population // 2 - plan.population // 5,
                                 crossovers=plan.population // 2 - plan.population // 5,
                                 randoms=plan.population - 2 * (plan.population // 2 - plan.population // 5),
                                 seed=plan.seed)
    rule = Constraints(objective="hard")  # the search's feasibility rule; its targets follow below
    cache = out / "latency_cache.sqlite"
    if latency_target_ms is None:
        latency_target_ms = median_random_target(det_ckpt, search_ann, det.train_images, timing, cache, plan.proposals,
                                                 settings, rule)
        logger.info(f"    latency target: {latency_target_ms} ms (the median of 8 random architectures' {timing.scope} "
                    f"latency bounds, the search's first draws, measured here on the {timing.clock} clock)")
        saved = read_json_file(out / RUN_RECORD, "main job's run record")
        atomic_write_json(out / RUN_RECORD, {**saved, "latency_target_ms": latency_target_ms})
    search_dir = out / "search"
    targets = demo_targets(latency_target_ms)
    logger.info(f"two targets in one search: {', '.join(f'{t.name} {t.latency_ms:g} ms' for t in targets)} (the demo ships "
        f"the {SHIPPED_TARGET} winner)")
    outcome = run_search(SearchRequest(
        supernet=det_ckpt, data=search_ann, images=det.train_images, bn_data=supernet_ann, out=search_dir,
        settings=settings, timing=timing, targets=targets,
        constraints=replace(rule, targets=tuple((t.name, t.latency_ms) for t in targets)),
        latency_cache=cache, bn_images=plan.bn_images, bn_batch=plan.bn_batch, proposals=plan.proposals,
        resume=(search_dir / JOURNAL_NAME).exists()))
    best = outcome.run.best(SHIPPED_TARGET) if outcome.run else None
    if outcome.run is None or best is None:
        raise DetnasError(f"the search found no architecture under {latency_target_ms} ms; raise --latency-target")
    arch = best.arch
    files.update(arch=search_dir / f"best_arch.{SHIPPED_TARGET}.json", pareto_plot=search_dir / f"pareto.{SHIPPED_TARGET}.png",
                 **{f"arch_{t.name}": search_dir / f"best_arch.{t.name}.json" for t in targets[1:]},
                 **{f"pareto_plot_{t.name}": search_dir / f"pareto.{t.name}.png" for t in targets[1:]},
                 convergence_plot=search_dir / "convergence.png", journal=search_dir / "journal.jsonl")
    done()

    done = step("winner: the search's BN recalibration, ONNX export with parity check")
    size = path_size(arch, size)  # an elastic winner ships at its input-size gene's size, as it was timed and scored
    supernet = SupernetDetector.load(det_ckpt, proposals=plan.proposals)
    search_val = CocoDetection(search_ann, det.train_images)
    accuracy = DetectionAP(supernet, CocoDetection(supernet_ann, det.train_images), search_val, plan.bn_images,
                           plan.bn_batch)  # the search's evaluator, built from the same request fields
    child_ckpt = _winner_checkpoint(accuracy, arch, det_ckpt, out / "model" / "winner")
    val_files = sorted(det.val_images.glob("*.png"))
    parity_files = (val_files + sorted(det.train_images.glob("*.png")))[:plan.parity_images]  # validation first
    onnx_path = out / "model" / "detector.onnx"
    report = run_export(ExportRequest(
        out=onnx_path, source=SourceOptions(weights=child_ckpt, proposals=plan.proposals), graph=GraphOptions(size=size),
        parity=ParityOptions(images=tuple(parity_files), count=plan.parity_images,
                             min_detections=plan.min_parity_detections))).onnx
    files.update(checkpoint=child_ckpt, onnx=onnx_path)
    done()

    done = step("accuracy: shipped weights and ONNX file vs the journal; winner vs random and released archs")
    shipped = shipped_accuracy(best.metrics, child_ckpt, onnx_path, search_val, plan.proposals)
    val_metrics = onnx_metrics(onnx_path, CocoDetection(det.val_ann, det.val_images))
    released_name, released = _released_for(supernet.detector_kind, arch.space, released_archs())
    _, oracle = measured_latency(supernet, search_val, timing, cache)
    released_row = None
    if released is not None:
        released_ms = oracle.latency(released).median_ms
        released_row = ReleasedRow(released_name, released.compact(), accuracy.evaluate(released)["AP"], released_ms,
                                   released_ms <= latency_target_ms)
        plot_pareto(outcome.run, files["pareto_plot"], target=SHIPPED_TARGET, marks=(Mark(
            f"{released_name} (released)", released_row.latency_ms, released_row.ap),))
    done()

    done = step("benchmark the exported detector (ONNX Runtime, CPU)")
    inputs = image_batches(det.val_images, 1, size, limit=4)
    bench = measure_onnx(onnx_path, inputs, backend="ort", scope=Scope.NETWORK_NMS,
                         protocol=TimingProtocol(runs=plan.bench_runs), input_kind="images")
    files["benchmark"] = out / "benchmark.json"
    atomic_write_json(files["benchmark"], bench.to_dict())
    done()

    done = step("predict on validation images")
    drawn = draw_predictions(onnx_path, val_files[:6], out / "predict")
    files.update(drawn=drawn, results=out / "predict" / "results.json")
    done()

    files["report"] = out / "report.md"
    searched_ms = (outcome.run.finals.get(SHIPPED_TARGET) or best).latency.median_ms
    summary = MainJobSummary(
        arch=arch, latency_target_ms=latency_target_ms, latency_scope=timing.scope, targets=target_rows(outcome.run),
        front_span=front_span(outcome.run, SHIPPED_TARGET), search_best=best, shipped=shipped, onnx_val=val_metrics,
        versus=Versus.of(outcome.run.candidates, best, released_row),
        latency_spread=LatencySpread.of(outcome.run.candidates),
        export=ExportSummary(report.nodes, report.parity.to_dict() if report.parity else None),
        benchmark=BenchmarkSummary(bench.stats.median_ms, bench.stats.p90_ms, bench.stats.cv,
                                   1000.0 / bench.stats.median_ms, size, searched_ms, timing.scope,
                                   searched_ms / bench.stats.median_ms),
        seconds=seconds, plan=plan)
    atomic_write_json(out / "summary.json", summary.to_dict())
    atomic_write_text(files["report"], summary.report(files, out))
    return MainJobResult(out, arch, files, seconds, summary)


LOOSE_FACTOR = 1.5


def demo_targets(tight_ms: float) -> list[Target]:
    """The demo's two targets, both measured here: the run's target and a looser one, 1.5x it (a user shipping one
    detector per budget gets both winners from one search)."""
    from detnas.search.targets import Target

    return [Target(SHIPPED_TARGET, tight_ms), Target("loose", round(LOOSE_FACTOR * tight_ms, 3))]


def target_rows(run: SearchRun) -> dict[str, TargetRow]:
    """Each target's winner, its search-time and fresh latency and verdict, and its front's size and span."""
    from detnas.search.report import summary as search_summary

    rows = {}
    for name, data in search_summary(run)["targets"].items():
        best, final, span = run.best(name), run.finals.get(name), front_span(run, name)
        rows[name] = TargetRow(
            latency_ms=data["latency_ms"], arch=best.arch if best else None, ap=best.metrics["AP"] if best else None,
            search_ms=final.search_latency.median_ms if final and final.search_latency else None,
            fresh_ms=final.latency.median_ms if final else None, meets_target=final.meets_target if final else None,
            verdict=data["verdict"], front=span.members, front_ratio=span.ratio)
    return rows


def front_span(run: SearchRun, target: str) -> FrontSpan:
    """How far the Pareto front (AP against the target's search-time median latency, every candidate; the front of
    `search/pareto.TARGET.png`) reaches: its fastest and slowest member and their latency ratio. A search whose
    candidates differ only in noise has a front of one or two members a few percent apart; a space whose genes
    cost spreads it over a real trade-off."""
    from detnas.search.objectives import pareto_front

    front = pareto_front(run.candidates, run.constraints.metric, target)
    if not front:
        return FrontSpan(0, None, None, None, (), None, None)

    fastest_ms, slowest_ms = (c.latencies[target].median_ms for c in (front[0], front[-1]))
    return FrontSpan(len(front), fastest_ms, slowest_ms, slowest_ms / fastest_ms,
                     tuple(c.metrics[run.constraints.metric] for c in front), front[0].arch.compact(),
                     front[-1].arch.compact())


def shipped_accuracy(journal_metrics: dict[str, float], checkpoint: Path, onnx_path: Path, search_val: Any,
                     proposals: int) -> ShippedAccuracy:
    """AP on the search-validation split of what ships (the saved weights, the exported file) beside the journal's
    AP of the same arch: they agree within `SHIPPED_AP_TOL` when what ships is what the search scored."""
    from detnas.evaluation import detector_predictor, evaluate
    from detnas.export.source import load_export_source

    weights_ap = evaluate(detector_predictor(load_export_source(checkpoint, proposals=proposals).detector),
                          search_val)["AP"]
    onnx_ap = onnx_metrics(onnx_path, search_val).ap
    journal_ap = journal_metrics["AP"]
    return ShippedAccuracy(journal_ap, weights_ap, onnx_ap, SHIPPED_AP_TOL, len(search_val),
                           max(abs(weights_ap - journal_ap), abs(onnx_ap - journal_ap)) <= SHIPPED_AP_TOL)


def onnx_metrics(onnx_path: Path, dataset: Any) -> ValidationMetrics:
    """COCO metrics of the exported file itself (what `detnas eval --model` prints); never over zero boxes."""
    from detnas.evaluation import evaluate
    from detnas.export.runtime import exported_predictor

    boxes = sum(len(record.labels) for record in dataset.records)
    if boxes == 0:
        raise DetnasError(f"{dataset.source}: no annotated boxes; an AP over nothing says nothing")
    metrics = evaluate(exported_predictor(onnx_path), dataset)
    return ValidationMetrics({k: float(v) for k, v in metrics.items()}, boxes)


def _released_for(kind: str, space: SearchSpace, released: dict[str, Arch]) -> tuple[str, Arch | None]:
    """The released DetNAS arch (COCO's) of this space and detector, if there is one. In an elastic twin of its paper
    space (same stem, stages and op choices) it is the paper's path there (`paper_path`: the paper's detector genes,
    or the widest the space allows), so the demo's elastic search is still compared with the released arch."""
    from detnas.arch import paper_path

    wanted = {"fpn": "FPN", "retinanet": "RetinaNet"}.get(kind, "")
    same_body = (space.stem_width, space.stage_widths, space.stage_depths, space.choices)
    for name, arch in released.items():
        if not name.startswith(f"COCO-{wanted}-"):
            continue
        if arch.space.name == space.name:
            return name, arch
        if space.elastic and same_body == (arch.space.stem_width, arch.space.stage_widths, arch.space.stage_depths,
                                           arch.space.choices):
            return name, paper_path(arch, space)
    return "", None


def draw_predictions(onnx_path: Path, images: list[Path], out_dir: Path, draw_thresh: float = 0.5) -> Path:
    """Boxes of the exported file drawn on `images`, the drawn images tiled into one grid (grid.png)."""
    from PIL import Image

    from detnas.export.predict import predict
    from detnas.io import atomic_path

    drawn = predict(onnx_path, images, out_dir, draw_thresh=draw_thresh).drawn
    tiles = [Image.open(p).convert("RGB") for p in drawn]
    side = max(max(t.size) for t in tiles)
    columns = min(3, len(tiles))
    grid = Image.new("RGB", (columns * side, -(-len(tiles) // columns) * side), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * side, (i // columns) * side))
    target = out_dir / "grid.png"
    with atomic_path(target) as tmp:
        grid.save(tmp, format="PNG")
    return target
