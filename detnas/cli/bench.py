"""`detnas bench`: latency of an arch / ONNX file / engine, comparisons, device profiles, the latency cache.

A thin layer over the Python API (detnas.bench.oracle, .profile, .cache); heavy imports stay inside commands.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from detnas.bench.backends.ort_backend import PROVIDERS
from detnas.cli.options import BackendName, Clock, DetectorName, PrecisionName, ScopeName, SizeHW, number_in, option, writable_json
from detnas.console import labelled, plain_console, quiet_onnxruntime
from detnas.errors import DetnasError
from detnas.export.precision.quantize import CALIB_COUNT
from detnas.jsonout import write_document
from detnas.tables import Col, fitted_table

app = typer.Typer(help="Measure latency on the target device: backends, cache, device profiles.",
                  no_args_is_help=True)
cache_app = typer.Typer(help="List or clear the persistent latency cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
console = plain_console()
err_console = plain_console(stderr=True)

Backend = Annotated[BackendName, option("backend")]
Device = Annotated[str, option("device")]
Threads = Annotated[int, typer.Option(help="CPU threads (fixed and recorded).")]
Warmup = Annotated[int, typer.Option(help="Untimed warm-up runs.")]
JsonOut = Annotated[Path | None, typer.Option("--json", callback=writable_json, help="Write the result as JSON (schema: docs/json.md).")]


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show PrecisionWarning and friends as one yellow line each instead of Python's warning format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, UserWarning):
            err_console.print(labelled("warning:", "bold yellow", w.message), highlight=False, soft_wrap=True)


def _quiet_onnxruntime(backend: str) -> None:
    if backend == "ort":
        quiet_onnxruntime()


def _onnx_detector_meta(path: Path) -> dict[str, Any] | None:
    """The `detnas export` metadata of an ONNX file (input spec), or None for other ONNX files."""
    from detnas.bench.onnx_metadata import OnnxMetadata

    metadata = OnnxMetadata.read(path)
    return metadata.value("input", {}) if metadata.is_detector else None


def _result_table(r: Any) -> Table:
    """One result as a two-column table: readable in a narrow terminal, every protocol field visible."""
    s = r.stats
    table = Table(title="latency", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in (
        ("model", r.label), ("source", r.source), ("scope", r.scope), ("backend", r.details.get("variant", r.backend)),
        ("precision", r.precision), ("input", "x".join(map(str, r.input_shape))),
        ("median", f"{s.median_ms:.3f} ms"), ("p90 / p99", f"{s.p90_ms:.3f} / {s.p99_ms:.3f} ms"),
        ("min / mean", f"{s.min_ms:.3f} / {s.mean_ms:.3f} ms"), ("CV", f"{100 * s.cv:.2f} %"),
        ("runs / warm-up", f"{s.n} / {r.warmup}"), ("threads", str(r.threads)), ("timer", r.details.get("timer")),
        ("inputs", r.details.get("inputs")), ("host<->device copies", r.transfers),
    ):
        table.add_row(name, str(value))
    return table


@app.command("latency")
def latency_cmd(
    arch: Annotated[str | None, option("arch")] = None,
    model: Annotated[Path | None, option("model", "An .onnx file times on ort or trt, an engine on trt.")] = None,
    backend: Backend = "ort",
    precision: Annotated[PrecisionName | None, option("precision", "Default: fp32 for --arch, the precision a "
                                                      "--model file carries (an FP32 .onnx file is converted to the "
                                                      "asked one; int8 calibrates on --calib-images); an engine "
                                                      "without its sidecar needs it.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 1,
    size: Annotated[SizeHW, option("size", "Default: 224 for --arch, the exported size for a detnas ONNX file.")]
    = None,
    scope: Annotated[ScopeName | None, option("scope", "Default: backbone for --arch, network+nms for a detnas "
                                             "export.")] = None,
    detector: Annotated[DetectorName, option("detector", "Wrapped around --arch beyond the backbone scope.")] = "fpn",
    device: Device = "cpu",
    threads: Threads = 1,
    warmup: Warmup = 10,
    runs: Annotated[int, typer.Option(help="Timed runs.")] = 50,
    clock: Clock = "wall",
    ort_provider: Annotated[Literal[tuple(PROVIDERS)] | None, typer.Option(help="ONNX Runtime execution provider "
                                                                     "(default from --device).")] = None,
    compile: Annotated[bool, typer.Option(help="torch backend: torch.compile the model.")] = False,
    cuda_graphs: Annotated[bool, typer.Option(help="torch backend on a GPU: replay a CUDA graph.")] = False,
    workspace_mb: Annotated[int, typer.Option(min=1, help="trt: builder workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Path | None, typer.Option(help="trt: timing-cache file (read and updated).")] = None,
    io_binding: Annotated[bool | None, typer.Option("--io-binding/--no-io-binding", help="ort on a GPU: inputs "
                                                    "already on the device, outputs left there, copies untimed "
                                                    "(default on a GPU, as trt and torch time).")] = None,
    tf32: Annotated[bool, typer.Option("--tf32/--no-tf32", help="trt: let FP32 layers run in TF32 (recorded in the "
                                       "row); off, FP32 layers compute in FP32.")] = False,
    images: Annotated[Path | None, option("images", "Real images to time on (NMS cost depends on them); default "
                                          "seeded random pixels.")] = None,
    calib_images: Annotated[Path | None, option("images", "Real images for INT8 calibration.", prefix="calib")]
    = None,
    use_cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Serve and store in the latency cache.")] = True,
    cache_path: Annotated[Path | None, typer.Option(help="Latency cache file (default ~/.cache/detnas).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", callback=writable_json, help="Write the result as JSON.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", callback=writable_json, help="Write the result as a CSV row.")]
    = None,
) -> None:
    """Time one model with the chosen backend and protocol; prints median, p90, p99, min, CV and the setup."""
    from detnas.bench.backends import latency_backend
    from detnas.bench.cache import LatencyCache
    from detnas.bench.inputs import image_batches, random_batches
    from detnas.bench.oracle import BackendOptions, TimingProtocol, measure_arch, measure_engine, measure_onnx
    from detnas.bench.result import Scope, write_csv
    from detnas.export.converters import onnx_converters

    if (arch is None) == (model is None):
        raise DetnasError("give exactly one of --arch or --model")
    onnx = model if model is not None and model.suffix == ".onnx" else None
    engine = model if model is not None and onnx is None else None
    latency_backend(backend)  # refuses an unregistered name, listing the registered ones
    if engine is not None and backend != "trt":
        raise DetnasError(f"--model {engine}: not an .onnx file, so a TensorRT engine, which times on --backend trt "
                          "(an ONNX file must end in .onnx)")
    meta = _onnx_detector_meta(onnx) if onnx is not None else None
    hw = size or ((meta["height"], meta["width"]) if meta else (224, 224))
    if scope is None:
        if engine is not None or (onnx is not None and meta is None):
            raise DetnasError("--scope is required for this file: say what it contains (backbone, network, "
                              "network+nms or end-to-end)")
        scope = "backbone" if arch is not None else "network+nms"
    parsed_scope = Scope.parse(scope)
    _quiet_onnxruntime(backend)
    protocol = TimingProtocol(warmup=warmup, runs=runs, threads=threads, device=device, clock=clock)
    options = BackendOptions(ort_provider=ort_provider, compile=compile, cuda_graphs=cuda_graphs,
                             workspace_mb=workspace_mb, timing_cache=timing_cache, tf32=tf32, io_binding=io_binding,
                             converters=onnx_converters())
    cache = LatencyCache(cache_path) if use_cache else None
    batches = image_batches(images, batch, hw) if images else None
    calibration = image_batches(calib_images, batch, hw, limit=512) if calib_images else None
    inputs = batches or random_batches(batch, hw)
    kind = f"images from {images}" if images else "random"
    with _warnings_as_lines():
        if arch is not None:
            from detnas.arch import resolve_arch

            result = measure_arch(resolve_arch(arch), size=hw, batch=batch, backend=backend, precision=precision or "fp32",
                                  scope=parsed_scope, protocol=protocol, options=options, images=batches,
                                  calibration=calibration, label=arch if len(arch) < 40 else None, cache=cache,
                                  detector=detector)
        elif onnx is not None:
            result = measure_onnx(onnx, inputs, backend=backend, precision=precision, scope=parsed_scope,
                                  protocol=protocol, options=options, calibration=calibration, input_kind=kind,
                                  cache=cache)
        else:
            result = measure_engine(engine, inputs, precision=precision, scope=parsed_scope, protocol=protocol,
                                    input_kind=kind, cache=cache)
    console.print(_result_table(result))
    fp = result.fingerprint
    console.print(f"device {fp.device} · driver {fp.driver} · CUDA {fp.cuda} · TensorRT {fp.tensorrt} · "
                  f"ORT {fp.onnxruntime} · torch {fp.torch} · {fp.threads} thread(s) · fingerprint "
                  f"{fp.hash}", highlight=False)
    if json_out:
        result.save_json(json_out)
    if csv_out:
        write_csv(csv_out, [result])


@app.command("compare")
def compare_cmd(
    baseline: Annotated[Path, typer.Argument(help="Result JSON of `bench latency --json` (the reference).")],
    other: Annotated[Path, typer.Argument(help="Result JSON to compare against the reference.")],
    confidence: Annotated[float, typer.Option(help="Level of the bootstrap interval of the median ratio.")] = 0.95,
    k: Annotated[float, typer.Option(callback=number_in(0), help="Only for results without raw samples (older files): noise band of k "
                                     "combined CVs (and at least 1 %).")] = 2.0,
    json_out: JsonOut = None,
) -> None:
    """Ratios of two results; faster / slower / indistinguishable from a bootstrap interval of the median ratio."""
    from detnas.bench.result import LatencyResult
    from detnas.bench.stats import compare_latencies

    a, b = LatencyResult.load_json(baseline), LatencyResult.load_json(other)
    a.check_same_work(b, str(baseline), str(other))
    statistics = {name: (getattr(a.stats, name), getattr(b.stats, name))
                  for name in ("median_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms")}
    differences = [f"{field} differs: {getattr(a, field)} vs {getattr(b, field)}"
                   for field in ("backend", "precision") if getattr(a, field) != getattr(b, field)]
    if a.transfers != b.transfers:  # not like for like: say so first
        differences.insert(0, f"host<->device copies differ: {a.transfers} vs {b.transfers} (a ratio of these times "
                           "includes the copies of one side only; time both with --io-binding, or both without)")
    differences += [f"environment differs: {diff}" for diff in a.fingerprint.differences(b.fingerprint)]
    c = compare_latencies(a.stats, b.stats, a.samples_ms, b.samples_ms, confidence=confidence, k=k)
    table = Table(title=f"{other.name} / {baseline.name}")
    for col in ("statistic", baseline.name, other.name, "ratio"):
        table.add_column(col, justify="left" if col == "statistic" else "right")
    for name, (va, vb) in statistics.items():
        table.add_row(name, f"{va:.3f}", f"{vb:.3f}", f"{vb / va:.3f}")
    table.add_row("CV %", f"{100 * a.stats.cv:.1f}", f"{100 * b.stats.cv:.1f}", "")
    table.add_row("runs kept", str(len(a.samples_ms)), str(len(b.samples_ms)), "")
    console.print(table)
    for difference in differences:
        err_console.print(labelled("note:", "bold yellow", difference), highlight=False)
    if c.note:
        err_console.print(labelled("note:", "bold yellow", f"{c.note}; deciding by the {c.method} instead"), highlight=False)
    interval = (f"{100 * c.confidence:g} % CI [{c.low:.3f}, {c.high:.3f}]" if c.note is None
                else f"band [{c.low:.3f}, {c.high:.3f}]")
    head = "indistinguishable" if c.verdict == "indistinguishable" else f"{other.name} is {c.verdict.upper()}"
    console.print(labelled(f"{head}:", "bold", f"median ratio {c.ratio:.3f}, {interval} ({c.method}); CVs "
                           f"{100 * c.baseline_cv:.1f} % / {100 * c.other_cv:.1f} %"), highlight=False, soft_wrap=True)
    if json_out is not None:
        write_document(json_out, "detnas.bench.compare/1", {
            "baseline": str(baseline), "other": str(other), "comparison": c.to_dict(), "differences": differences,
            "runs_kept": {"baseline": len(a.samples_ms), "other": len(b.samples_ms)},
            "statistics": {name: {"baseline": va, "other": vb, "ratio": vb / va} for name, (va, vb) in statistics.items()}})


@app.command("profile")
def profile_cmd(
    out: Annotated[Path, typer.Option(help="Where to write the device profile JSON.")],
    space: Annotated[str, option("space")] = "detnas-300m",
    backend: Backend = "ort",
    precision: Annotated[PrecisionName, option("precision", "A profile times fp32 or fp16.")] = "fp32",
    size: Annotated[SizeHW, option("size")] = "224",
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 1,
    device: Device = "cpu",
    threads: Threads = 1,
    warmup: Warmup = 3,
    runs: Annotated[int, typer.Option(help="Timed runs per block and arch, spread over --rounds.")] = 300,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved timing rounds (spread load drift over all entries).")] = 50,
    clock: Clock = "wall",
    scope: Annotated[ScopeName, option("scope", "Archs beyond the backbone are timed inside a random-init --detector; "
                                       "the search's scope must match.")] = "backbone",
    detector: Annotated[DetectorName, option("detector", "Wrapped around each arch beyond the backbone scope.")]
    = "fpn",
    n_train: Annotated[int, typer.Option(min=1, help="Archs the correction is fitted on (stratified by table sum).")] = 20,
    n_test: Annotated[int, typer.Option(min=1, help="Held-out archs the accuracy is judged on: the fastest, the slowest, "
                                         "the rest stratified by table sum.")] = 30,
    n_random: Annotated[int, typer.Option(help="Uniform random archs (as the search draws them) the predictor is also "
                                          "judged on, and those of them near --near-ms.")] = 30,
    near_ms: Annotated[float | None, typer.Option(callback=number_in(0, above=True), help="Target (ms) whose +-15 % "
                                                  "band of random archs is judged apart (default: their median).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of the arch draws.")] = 0,
    reference: Annotated[Path | None, typer.Option("--from", help="Few-shot: carry this profile of another device "
                                                   "here with --archs whole-network measurements (its space, scope "
                                                   "and input size).")] = None,
    archs: Annotated[int | None, typer.Option(help="Few-shot: random archs timed here (<= 20).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Measure block latencies, the stem and archs spanning the space on this device; fit the predictor and judge
    it against the best constant and a perfect predictor's rank agreement, on archs spanning the space, on random
    archs and on random archs near a target (accurate only if it beats the constant)."""
    from detnas.bench.oracle import BackendOptions, TimingProtocol
    from detnas.bench.profile import build_profile, save_profile
    from detnas.bench.result import Scope
    from detnas.export.converters import onnx_converters
    from detnas.io import check_outputs
    from detnas.progress import task
    from detnas.space import get_space

    check_outputs(("--out", out))  # before the minutes of timing, not after them
    protocol = TimingProtocol(warmup=warmup, runs=runs, threads=threads, device=device, clock=clock)
    _quiet_onnxruntime(backend)
    if reference is not None or archs is not None:
        _fewshot(reference, archs, out, backend, precision, protocol, rounds, seed, json_out)
        return
    with _warnings_as_lines(), task("profile") as status:
        profile = build_profile(get_space(space), backend=backend, size=size, batch=batch,
                                precision=precision, protocol=protocol,
                                options=BackendOptions(converters=onnx_converters()), n_train=n_train,
                                n_test=n_test, rounds=rounds, seed=seed, scope=Scope.parse(scope), detector=detector,
                                progress=status.describe, n_random=n_random, near_ms=near_ms)
    save_profile(profile, out)
    report = profile.report
    console.print(_report_table(report))
    for line in report.verdict():
        console.print(line, highlight=False, soft_wrap=True)
    target_ms = profile.near.target_ms if profile.near is not None else None
    for judged, title in ((profile.random_report, "random archs"),
                          (profile.near_report, f"random archs within ±15 % of {target_ms or 0:.3f} ms")):
        if judged is not None:
            console.print(_report_table(judged, title))
            console.print(f"{title}: {judged.verdict()[-1]}", highlight=False, soft_wrap=True)
        else:
            console.print(f"{title}: fewer than 5 archs, not judged", highlight=False)
    if profile.shared_part is not None:  # network scopes: how much of the spread the backbone carries, and its verdict
        console.print(profile.shared_part.line(), highlight=False, soft_wrap=True)
        console.print(f"backbone timed beside it: {profile.backbone_report.verdict()[-1]}", highlight=False,
                      soft_wrap=True)
    console.print(f"built in {profile.build_seconds:.0f}s · fingerprint {profile.fingerprint_hash} · "
                  f"wrote {out}")
    if json_out is not None:
        write_document(json_out, "detnas.bench.profile/1", {
            "profile": str(out), "build_seconds": profile.build_seconds,
            "fingerprint_hash": profile.fingerprint_hash, "report": report.to_dict(), **profile.judged_dict()})


def _fewshot(reference: Path | None, archs: int | None, out: Path, backend: str, precision: str, protocol: Any,
             rounds: int, seed: int, json_out: Path | None) -> None:
    """`bench profile --from REFERENCE --archs N`: a few-shot profile of this device (detnas.bench.fewshot)."""
    from detnas.bench.fewshot import build_fewshot_profile
    from detnas.bench.oracle import BackendOptions
    from detnas.bench.profile import read_profile, save_profile
    from detnas.export.converters import onnx_converters
    from detnas.progress import task
    from detnas.space import SearchSpace, register_space

    if reference is None or archs is None:
        raise DetnasError("--from and --archs go together: a few-shot profile carries --from REFERENCE.json here "
                          "with --archs N whole-network measurements (e.g. --archs 20)")
    data = read_profile(reference)
    space = register_space(SearchSpace.from_dict(data.space, source=f"{reference}: space"))
    with _warnings_as_lines(), task("profile") as status:
        profile = build_fewshot_profile(data, space, n_archs=archs, backend=backend, precision=precision,
                                        protocol=protocol, options=BackendOptions(converters=onnx_converters()),
                                        rounds=rounds, seed=seed, reference_path=str(reference),
                                        progress=status.describe)
    save_profile(profile, out)
    report = profile.report
    console.print(_report_table(report, "archs timed here, each predicted by the transfer fitted on the others"))
    for line in report.verdict():
        console.print(line, highlight=False, soft_wrap=True)
    transfer = profile.transfer
    rule = f" ({transfer['rule']}, chosen by leave-one-out)" if "rule" in transfer else ""
    scales = "scales per feature" if rule else "stage scales"
    console.print(f"few-shot from {reference}{rule}: {scales} {', '.join(f'{v:.3f}' for v in transfer['stage_scales'])}, "
                  f"intercept {transfer['intercept_ms']:.3f} ms · built in {profile.build_seconds:.0f}s · wrote {out}",
                  highlight=False, soft_wrap=True)
    if json_out is not None:
        write_document(json_out, "detnas.bench.profile/1", {
            "profile": str(out), "build_seconds": profile.build_seconds,
            "fingerprint_hash": profile.fingerprint_hash, "report": report.to_dict(), "transfer": transfer})


def _report_table(report: Any, title: str = "held-out archs spanning the space") -> Table:
    """The predictors next to the best constant and a perfect predictor's rank agreement given the noise."""
    table = Table(title=f"predictor on {report.n} {title}")
    for col in ("predictor", "within ±5 %", "within ±10 %", "MAPE %", "Kendall tau", "R²"):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    for name, acc in report.rows():
        table.add_row(name, f"{100 * acc.within_5:.0f} %", f"{100 * acc.within_10:.0f} %", f"{acc.mape:.2f}",
                      f"{acc.kendall_tau:.3f}", f"{acc.r2:.3f}")
    table.add_row("a perfect predictor, given the noise", "", "", "", f"{report.reference_tau:.3f}",
                  f"{report.r2_ceiling:.3f}")
    table.add_row("split halves vs each other", "", "", "", f"{report.ceiling_tau:.3f}", "")
    return table


@app.command("predict")
def predict_cmd(
    profile: Annotated[Path, typer.Option(help="Device profile JSON of `bench profile`.")],
    arch: Annotated[list[str], option("arch", "Repeatable.")],
    force: Annotated[bool, typer.Option(help="Use a profile of another space / fingerprint anyway.")] = False,
    json_out: JsonOut = None,
) -> None:
    """Predicted latency of archs from a profile measured on this machine (its fingerprint must match)."""
    from detnas.arch import resolve_arch
    from detnas.bench.fingerprint import collect_fingerprint
    from detnas.bench.profile import load_profile, predict_latency, read_profile

    archs = [resolve_arch(a) for a in arch]
    data = read_profile(profile)
    here = collect_fingerprint(data.device, data.threads)
    loaded = load_profile(profile, archs[0].space, data.backend, force=force, fingerprint=here)
    predictions = []
    for name, a in zip(arch, archs):
        if a.space.digest != archs[0].space.digest:
            raise DetnasError(f"arch '{name}' is of space '{a.space.name}'; predict one space at a time")
        predictions.append({"arch": name if len(name) < 40 else a.compact(), "hash": a.hash,
                            "predicted_ms": predict_latency(loaded, a)})
    shape = list(loaded.input_shape or ())
    table = Table(title=f"predicted latency ({loaded.backend}, {loaded.scope}, {'x'.join(map(str, shape))})")
    table.add_column("arch")
    table.add_column("hash")
    table.add_column("predicted ms", justify="right")
    for row in predictions:
        table.add_row(row["arch"], row["hash"], f"{row['predicted_ms']:.3f}")
    console.print(table)
    if json_out is not None:
        write_document(json_out, "detnas.bench.predict/1", {
            "profile": str(profile), "backend": loaded.backend, "scope": loaded.scope, "input_shape": shape,
            "predictions": predictions})


@app.command("table")
def table_cmd(
    model: Annotated[list[Path], option("model", "The ONNX files and TensorRT engines of one detector (`detnas "
                                        "export`), its FP32 ONNX export among them (repeatable).")],
    ann: Annotated[Path, option("ann", "The AP is measured on it.")],
    images: Annotated[Path, option("images", "The images of --ann (its first images are also timed).")],
    weights: Annotated[Path | None, option("weights", "Adds the PyTorch eager row.")] = None,
    proposals: Annotated[int | None, typer.Option(min=1, help="FPN: RPN proposals of the eager row (default: the count "
                                                  "the ONNX file records; files exported before it was recorded "
                                                  "need the value given to detnas export --proposals).")] = None,
    convert: Annotated[list[str] | None, typer.Option(help="fp16 or int8: add the FP32 file converted as detnas export "
                                                      "--precision does, as <stem>.<precision>.onnx next to it "
                                                      "(reused when present; repeatable).")] = None,
    calib_images: Annotated[Path | None, option("images", "INT8 calibration (default: the training split the "
                                                "checkpoint's run records).", prefix="calib")] = None,
    calib_count: Annotated[int | None, typer.Option(help=f"INT8: calibration images used (the first N, sorted; "
                                                    f"default {CALIB_COUNT}).")] = None,
    max_images: Annotated[int | None, option("max-images")] = None,
    device: Device = "cpu",
    threads: Threads = 1,
    warmup: Warmup = 10,
    runs: Annotated[int, typer.Option(help="Timed runs per artifact.")] = 50,
    clock: Clock = "wall",
    json_out: JsonOut = None,
    markdown: Annotated[Path | None, typer.Option(callback=writable_json, help="Write the table as Markdown.")] = None,
) -> None:
    """Which artifact to ship: AP, median / p90 latency, images/s and file size of each artifact of one detector
    (PyTorch eager, ONNX per precision, TensorRT), with the environment fingerprint."""
    from detnas.bench.oracle import TimingProtocol
    from detnas.io import atomic_write_text
    from detnas.workflows.artifact_table import build_table

    if max_images is not None and max_images < 1:
        raise DetnasError(f"--max-images {max_images}: evaluate at least 1 image (leave it out for all)")
    _quiet_onnxruntime("ort")
    protocol = TimingProtocol(warmup=warmup, runs=runs, threads=threads, device=device, clock=clock)
    with _warnings_as_lines():
        onnx = [m for m in model if m.suffix == ".onnx"]
        result = build_table(onnx, data=ann, images=images, weights=weights,
                             engines=[m for m in model if m.suffix != ".onnx"], convert=convert or (),
                             calib_data=calib_images, calib_images=calib_count,
                             proposals=proposals, max_images=max_images, protocol=protocol)
    priority = {"artifact": 9, "AP": 9, "median ms": 9, "AP50": 7, "images/s": 6, "p90 ms": 5, "precision": 4,
                "runtime": 3, "copies": 3, "MB": 2}
    columns = [Col(col, "left" if col in ("artifact", "precision", "runtime", "copies") else "right", priority[col])
               for col in result.header()]
    console.print(fitted_table(columns, result.cells(), console.width, title="artifacts", caption=result.caption()))
    if json_out is not None:
        write_document(json_out, result.SCHEMA, result.to_dict())
    if markdown is not None:
        atomic_write_text(markdown, result.markdown())


CachePath = Annotated[Path | None, typer.Option(help="Latency cache file (default ~/.cache/detnas).")]


@cache_app.command("list")
def cache_list_cmd(path: CachePath = None) -> None:
    """Every cached latency with its key fields."""
    from datetime import datetime

    from detnas.bench.cache import LatencyCache

    cache = LatencyCache(path)
    columns = [Col("model", priority=9, fold=True), Col("source", priority=3, fold=True), Col("scope", priority=7),
               Col("backend", priority=6), Col("prec", priority=5), Col("input", priority=6),
               Col("protocol", priority=3, fold=True),
               Col("median ms", "right", 9), Col("CV %", "right", 8), Col("fingerprint", priority=2, fold=True),
               Col("when", priority=4)]
    rows = [[e.label, e.source[:20], e.scope, e.backend, e.precision, e.input_shape,
              e.protocol or "unrecorded (never served)", f"{e.median_ms:.3f}",
             f"{100 * e.cv:.1f}", e.fingerprint, datetime.fromtimestamp(e.created).strftime("%Y-%m-%d %H:%M")]
            for e in cache.entries()]
    console.print(fitted_table(columns, rows, console.width, title=f"latency cache {cache.path}"))


@cache_app.command("clear")
def cache_clear_cmd(
    path: CachePath = None,
    fingerprint: Annotated[str | None, typer.Option(help="Only entries of this fingerprint hash.")] = None,
) -> None:
    """Delete cached latencies (all, or one fingerprint's)."""
    from detnas.bench.cache import LatencyCache

    removed = LatencyCache(path).clear(fingerprint)
    console.print(f"removed {removed} cached latenc{'y' if removed == 1 else 'ies'}")


