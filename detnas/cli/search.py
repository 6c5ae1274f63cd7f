"""`detnas search`: run an evolutionary (or random) search under a latency target, and redraw its report.

`detnas search --latency-target 12ms ...` is the search itself (the product card's form); `detnas search run ...`
is the same command, and `detnas search report JOURNAL` redraws a report.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from detnas.cli.options import BackendName, Clock, PrecisionName, ScopeName, SizeHW, number_in, option, writable_json
from detnas.console import plain_console
from detnas.detection.recalibrate import BN_BATCH, BN_IMAGES


class _SearchRunsByDefault(TyperGroup):
    """Options given without a subcommand (`detnas search --latency-target 12ms ...`) go to `run`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_SearchRunsByDefault, no_args_is_help=True,
                  help="Search a detection supernet for the best backbone under a latency target: `detnas search "
                       "--latency-target 12ms --supernet ... --out DIR` (same as `detnas search run`), or redraw a "
                       "finished search's files with `detnas search report JOURNAL`.")
console = plain_console()


@app.command("run")
def run_cmd(
    supernet: Annotated[Path, typer.Option(help="Detection supernet checkpoint (kind supernet-det) from `detnas train`.")],
    data: Annotated[Path, option("ann", "The search-validation split (`detnas data split`).")],
    images: Annotated[Path, option("images", "The images of --ann (and of --bn-ann unless --bn-images).")],
    bn_data: Annotated[Path, option("ann", "Training images for BN recalibration (the other split).", prefix="bn")],
    out: Annotated[Path, typer.Option(help="Output folder: journal.jsonl, best_arch.json (best_arch.NAME.json per named "
                                      "target), topk.json, plots.")],
    latency_target: Annotated[list[str] | None, typer.Option(
        metavar="[NAME=]DURATION", help="Latency budget, e.g. 12ms, 0.5s, 800us, or auto:F, the fraction F of the "
        "range between the fastest and slowest probe architectures, measured first (auto:0.5 halfway); NAME=12ms, "
        "repeated, searches for several targets at once (one winner each).")] = None,
    probe: bool = typer.Option(False, "--probe", help="Time the fastest and slowest probe architectures as the search "
                               "would (each named target's source), print them and the range a target can take, "
                               "and stop."),
    backend: Annotated[BackendName, option("backend", "Times the candidates.")] = "ort",
    device: Annotated[str, option("device", "Times (and evaluates) the candidates.")] = "cpu",
    precision: Annotated[PrecisionName, option("precision", "Of the timed candidates.")] = "fp32",
    scope: Annotated[ScopeName, option("scope", "network+nms times each candidate's trained detector with NMS, fed "
                                       "search-validation images.")] = "network+nms",
    latency_size: Annotated[SizeHW, option("size", "Timed input (default: min-size x max-size, the largest input the "
                                           "detector sees).", prefix="latency")] = None,
    latency_batch: int = typer.Option(1, min=1, help="Batch size the latency is timed at."),
    latency_runs: int = typer.Option(30, help="Timed runs per measurement."),
    latency_threads: int = typer.Option(1, help="CPU threads while timing."),
    latency_clock: Clock = "wall",
    latency_cache: Annotated[Path | None, typer.Option(help="Latency cache SQLite file (default: detnas' user cache).")] = None,
    latency_profile: Annotated[list[str] | None, typer.Option(metavar="[NAME=]FILE", help="Predict latency from a device profile (`detnas "
                                                              "bench profile`); NAME=FILE for a named target (one "
                                                              "without is measured by --backend).")] = None,
    force_profile: bool = typer.Option(False, help="Use a device profile whose fingerprint differs from here."),
    flops_max: str = typer.Option(None, help="Backbone FLOPs limit (multiply-adds at --flops-size), e.g. 300M."),
    params_max: str = typer.Option(None, help="Backbone params limit, e.g. 3.5M."),
    no_constraint: bool = typer.Option(False, "--no-constraint", help="Without a latency, FLOPs or params limit the "
                                       "space's paper limit applies (detnas-300m: 300M backbone FLOPs at 224, "
                                       "detnas-1.3g: 1.3G); this lifts it."),
    flops_size: int = typer.Option(224, help="Input side FLOPs are counted at (DetNAS: 224)."),
    feasibility: str = typer.Option("ucb95", help="How a hard target is held: ucb95 (a candidate is feasible when the "
                                    "one-sided 95% upper confidence bound of its median latency is within it) or "
                                    "median (the median alone, which favours lucky draws)."),
    objective: str = typer.Option("hard", help="hard (reject over target), soft (AP*(lat/target)^w), pareto or a "
                                  "registered one."),
    soft_weight: float = typer.Option(-0.07, callback=number_in(), help="Exponent w of the soft reward (MnasNet: -0.07)."),
    algorithm: str = typer.Option("evolution", help="evolution or random (same budget, a baseline)."),
    population: int = typer.Option(50, help="Candidates per generation."),
    generations: int = typer.Option(20, help="Generations."),
    parents: int = typer.Option(10, help="Parents: the best candidates seen so far."),
    mutations: int = typer.Option(20, help="Mutated candidates per generation."),
    crossovers: int = typer.Option(20, help="Uniform-crossover candidates per generation."),
    randoms: int = typer.Option(10, help="Random candidates per generation."),
    mutation_prob: float = typer.Option(0.1, help="Probability each gene is redrawn in a mutation."),
    max_tries: int = typer.Option(50, help="Draws per wanted candidate before an operator gives up."),
    seed: int = typer.Option(0, help="Search seed; same seed and journal give the same search."),
    bn_images: int = typer.Option(BN_IMAGES, "--bn-count", min=1, help="Training images for BN recalibration per candidate "
                                  "(DetNAS: 4000)."),
    bn_batch: int = typer.Option(BN_BATCH, help="Batch size of BN recalibration."),
    bn_images_dir: Annotated[Path | None, option("images", "The images of --bn-ann if they are not in --images.",
                                                 prefix="bn")] = None,
    val_images: Annotated[int | None, option("max-images", "Of the search-validation split.", min=1)] = None,
    min_size: int = typer.Option(None, help="Detector short side (default: the checkpoint's recipe)."),
    max_size: int = typer.Option(None, help="Detector long-side limit (default: the checkpoint's recipe)."),
    proposals: int = typer.Option(None, help="RPN test-time proposals of an FPN detector (default 1000)."),
    space: Annotated[str | None, option("space", "The supernet's; a supernet of another space is refused.")] = None,
    top_k: int = typer.Option(10, min=1, help="How many candidates topk.json and the table list."),
    resume: bool = typer.Option(False, help="Continue the journal in --out (same configuration required)."),
) -> None:
    """Evolutionary search (DetNAS defaults) with COCO AP per path and measured or predicted latency."""
    from detnas.export.converters import onnx_converters
    from detnas.search.evolution import EvolutionSettings
    from detnas.search.latency import Timing, parse_count
    from detnas.search.objectives import Constraints
    from detnas.search.probe import is_auto
    from detnas.search.report import summary_table
    from detnas.search.runner import SearchRequest, probe_search, run_search
    from detnas.search.targets import Target, parse_targets

    settings = EvolutionSettings(algorithm=algorithm, population=population, generations=generations, parents=parents,
                                 mutations=mutations, crossovers=crossovers, randoms=randoms,
                                 mutation_prob=mutation_prob, seed=seed, max_tries=max_tries)

    def constraints_for(target_ms: float | None, targets: list[Target]) -> Constraints:
        return Constraints(objective=objective, latency_ms=target_ms,
                           targets=tuple((t.name, t.latency_ms) for t in targets),
                           soft_weight=soft_weight,
                           flops_max=parse_count(flops_max, "--flops-max") if flops_max else None,
                           params_max=parse_count(params_max, "--params-max") if params_max else None,
                           paper_limit=not no_constraint, feasibility=feasibility)

    # auto:F targets stand at 1ms until the probe places them: a bad option combination is refused before it runs
    target_ms, profile, targets = parse_targets(latency_target or [], latency_profile or [], auto=lambda name, f: 1.0)
    timing = Timing(size=latency_size, backend=backend,
                    precision=precision, device=device, scope=scope, batch=latency_batch, runs=latency_runs,
                    threads=latency_threads, clock=latency_clock)
    request = SearchRequest(supernet=supernet, data=data, images=images, bn_data=bn_data, out=out,
                            bn_images_dir=bn_images_dir, settings=settings,
                            constraints=constraints_for(target_ms, targets), timing=timing,
                            latency_profile=profile, targets=targets, force_profile=force_profile,
                            latency_cache=latency_cache,
                            space=space, flops_size=flops_size, bn_images=bn_images, bn_batch=bn_batch,
                            val_images=val_images, min_size=min_size, max_size=max_size, proposals=proposals,
                            resume=resume, top_k=top_k, onnx_converters=onnx_converters())
    if probe or any(is_auto(v) for v in latency_target or []):
        probed = probe_search(request)
        for name, result in probed.items():
            for line in result.lines(name):
                console.print(line, highlight=False, soft_wrap=True)  # one line each: logs stay greppable
        if probe:
            return

        def placed(name: str | None, fraction: float) -> float:
            ms = probed[name or ""].target(fraction)
            console.print(f"latency target {name + '=' if name else ''}auto:{fraction:g} = {ms:g}ms ({fraction:g} of "
                          "the way from the fastest to the slowest probe)", highlight=False, soft_wrap=True)
            return ms

        target_ms, profile, targets = parse_targets(latency_target or [], latency_profile or [], auto=placed)
        request = replace(request, constraints=constraints_for(target_ms, targets), targets=targets)
    run = run_search(request).run
    if run is not None:
        console.print(summary_table(run, top_k, console.width))
        console.print(run.verdict())
        console.print(f"results in {out}")


@app.command("report")
def report_cmd(
    journal: Annotated[Path, typer.Argument(help="A search journal (journal.jsonl).")],
    out: Annotated[Path | None, typer.Option(help="Where to write the report (default: the journal's folder).")] = None,
    top_k: int = typer.Option(10, min=1, help="How many candidates topk.json and the table list."),
    json_out: Annotated[Path | None, typer.Option("--json", callback=writable_json, help="Write the summary and the ranked top-k as JSON "
                                                  "(schema detnas.search.report/1, docs/json.md).")] = None,
) -> None:
    """Redraw best_arch.json, topk.json, pareto.png, convergence.png and the summary table from a journal."""
    from detnas.jsonout import write_document
    from detnas.search.report import report_document, summary_table, write_report

    run = write_report(journal, out or journal.parent, top_k)
    console.print(summary_table(run, top_k, console.width))
    console.print(run.verdict())
    if json_out is not None:
        write_document(json_out, "detnas.search.report/1", report_document(run, top_k))
