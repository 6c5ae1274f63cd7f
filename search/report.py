"""Results of a search, drawn from its journal alone: winner and top-k as arch JSON, Pareto and convergence
plots, a summary table. `detnas search report JOURNAL` and the end of `detnas search run` both call `write_report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detnas.io import atomic_path, atomic_write_json
from detnas.search.evolution import best_record
from detnas.search.journal import LEGACY_VALUES, SETTINGS_HEADER, decode_journal, read_journal
from detnas.search.objectives import Constraints, pareto_front, rank_records
from detnas.search.records import Candidate, Final, Plan
from detnas.search_settings import SETTINGS_KEY, SearchSettings


@dataclass
class SearchRun:
    """What a journal says: configuration, evaluated candidates in order, and the winner's fresh timing."""

    config: dict[str, Any]
    candidates: list[Candidate]
    plans: list[Plan]
    final: Final | None
    finals: dict[str, Final] = field(default_factory=dict)  # the last final line of each named target
    settings: SearchSettings | None = None  # what every candidate was scored with; None in older journals

    @classmethod
    def load(cls, path: str | Path) -> SearchRun:
        records = read_journal(path)
        entries = decode_journal(path, records)
        finals = [r for r in entries if isinstance(r, Final)]
        unnamed = [r for r in finals if r.target is None]
        stored = records[0].get(SETTINGS_HEADER)
        settings = None if stored is None else SearchSettings.from_dict(stored, f"{path}: line 1")
        return cls(records[0]["config"], [r for r in entries if isinstance(r, Candidate)],
                   [r for r in entries if isinstance(r, Plan)], unnamed[-1] if unnamed else None,
                   {r.target: r for r in finals if r.target is not None}, settings)

    @property
    def constraints(self) -> Constraints:
        prefix = "constraint_"  # an older journal lacks the later fields: it was searched at their legacy values
        fields = {k[len(prefix):]: v for k, v in {**LEGACY_VALUES, **self.config}.items() if k.startswith(prefix)}
        fields["targets"] = tuple((str(name), float(ms)) for name, ms in fields.get("targets", ()))
        return Constraints(**fields)

    @property
    def targets(self) -> list[tuple[str, float]]:
        """The named targets of a several-target search (empty for a one-target search)."""
        return list(self.constraints.targets)

    def best(self, target: str | None = None) -> Candidate | None:
        """The winner; of a several-target search, the named target's (the first one's when none is named)."""
        if target is None and self.targets:
            target = self.targets[0][0]
        return best_record(self.candidates, self.constraints, target)

    def convergence(self) -> list[tuple[int, float, float]]:
        """(generation, best AP within the generation, best AP so far) for every evaluated generation."""
        rows, so_far = [], float("-inf")
        for generation in sorted({r.generation for r in self.candidates}):
            ap = max(r.metrics["AP"] for r in self.candidates if r.generation == generation)
            so_far = max(so_far, ap)
            rows.append((generation, ap, so_far))
        return rows

    def verdict(self) -> str:
        """One sentence per target on whether the winner's *fresh* latency meets it, with its search-time figure
        and the runner-up's beside it."""
        if self.targets:
            return " | ".join(f"target {name} ({ms:g}ms): " + _verdict(self.finals.get(name), ms)
                              for name, ms in self.targets)
        return _verdict(self.final, self.constraints.latency_ms)


def _verdict(final: Final | None, target: float | None) -> str:
    if final is None:
        return "the winner's latency has not been timed afresh yet (run the search to the end)"
    if target is None:
        return f"winner latency {_timed(final)}; no latency target was set"
    if final.meets_target:
        head = f"winner meets the {target:g}ms target: {_timed(final)}"
    else:
        head = f"winner does NOT meet the {target:g}ms target: {_timed(final)} (the search-time figure was optimistic)"
    runner = final.runner_up
    if runner is None:
        return head
    return (f"{head}; runner-up {runner.hash} fresh {runner.latency.median_ms:.3f}ms (search-time "
            f"{runner.search_latency.median_ms:.3f}ms), {'meets' if runner.meets_target else 'misses'} it")


def _timed(final: Final) -> str:
    """How the winner's figure was obtained: fresh rounds beside the search-time median, or (older journals) a repeat
    through the search's cache."""
    if not final.fresh:
        return (f"{final.latency.median_ms:.3f}ms re-measured ({final.source}) through the search's cache by an older "
                "detnas, not a fresh timing")
    runs = f", {final.latency.stats.n} runs" if final.latency.stats else ""
    search = "" if final.search_latency is None else f"; search-time {final.search_latency.median_ms:.3f}ms"
    return f"fresh {final.latency.median_ms:.3f}ms ({final.rounds} interleaved rounds{runs}, uncached{search})"


def _row(rank: int, r: Candidate) -> dict[str, Any]:
    row = {"rank": rank, "arch": r.arch.to_dict(), "metrics": r.metrics, "latency": r.latency.to_json(),
           "flops": r.flops, "params": r.params, "fitness": r.fitness, "generation": r.generation, "origin": r.origin}
    return {**row, "latencies": {n: lat.to_json() for n, lat in r.latencies.items()}} if r.latencies else row


def latency_axis_label(run: SearchRun, target: str | None = None) -> str:
    """'backbone median latency (ms; ONNX Runtime, CPU, 128x128, batch 1)' from the journal's timing, or the
    latency profile it was predicted from (of the named `target`, in a several-target search)."""
    timing = run.config.get("timing") or {}
    profile = (run.config.get("latency_profiles") or {}).get(target) if target else run.config.get("latency_profile")
    if profile:
        return f"predicted median latency (ms; latency profile {Path(profile).name})"
    from detnas.bench.backends import LATENCY_BACKENDS

    name = timing.get("backend")
    backend = LATENCY_BACKENDS.get(name).title if name in LATENCY_BACKENDS else name
    size = "x".join(map(str, timing.get("size") or [])) or "detector size"
    space = run.candidates[0].arch.space if run.candidates else None
    if space is not None and space.detector is not None and len(space.detector.input_sizes) > 1:
        size = f"each path at its input-size gene's share of {size}"  # as the search timed it (`path_size`)
    return (f"{timing.get('scope', '')} median latency (ms; {backend}, {str(timing.get('device', '')).upper()}, "
            f"{size}, batch {timing.get('batch', 1)})").strip()


@dataclass(frozen=True)
class Mark:
    """A labelled point drawn on the Pareto plot beside the candidates, e.g. a released architecture."""

    label: str
    latency_ms: float
    ap: float


def plot_pareto(run: SearchRun, path: Path, marks: tuple[Mark, ...] = (), target: str | None = None) -> None:
    """AP against median latency of every candidate (of the named `target`'s source in a several-target search),
    one colour per generation, with the front, the target, the winner and any `marks` labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ms(r: Candidate) -> float:
        return (r.latencies[target] if target else r.latency).median_ms

    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    colours = plt.get_cmap("tab10")
    metric = run.constraints.metric  # what the search ranked by: the y axis and the front
    for generation in sorted({r.generation for r in run.candidates}):
        members = [r for r in run.candidates if r.generation == generation]
        ax.scatter([ms(r) for r in members], [r.metrics[metric] for r in members], s=22,
                   color=colours(generation % 10), alpha=0.85,
                   label=f"generation {generation}" + (" (random)" if generation == 0 else ""))
    front = pareto_front(run.candidates, metric, target)
    ax.step([ms(r) for r in front], [r.metrics[metric] for r in front], where="post",
            color="tab:red", linewidth=1, label="Pareto front")
    target_ms = dict(run.targets)[target] if target else run.constraints.latency_ms
    if target_ms is not None:
        ax.axvline(target_ms, color="gray", linestyle="--",
                   label=f"latency target {'' if target is None else target + ' '}{target_ms:g} ms")
    best = run.best(target)
    if best is not None:
        ax.scatter([ms(best)], [best.metrics[metric]], marker="*", s=220, color="tab:red",
                   edgecolor="black", zorder=5)
        ax.annotate("winner", (ms(best), best.metrics[metric]), xytext=(6, 6),
                    textcoords="offset points", fontsize=9)
    for mark in marks:
        ax.scatter([mark.latency_ms], [mark.ap], marker="D", s=60, color="black", zorder=5)
        ax.annotate(mark.label, (mark.latency_ms, mark.ap), xytext=(6, -12), textcoords="offset points", fontsize=9)
    ax.set_xlabel(latency_axis_label(run, target))
    ax.set_ylabel(("COCO AP@[.5:.95]" if metric == "AP" else "VOC07 mAP@0.5") + " on search-validation images")
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)


def plot_convergence(run: SearchRun, path: Path) -> None:
    """Best AP so far against each generation's median AP and its range (min to max), integer generations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = run.convergence()
    generations = [g for g, _, _ in rows]
    per_generation = [sorted(r.metrics["AP"] for r in run.candidates if r.generation == g) for g in generations]
    medians = [aps[len(aps) // 2] if len(aps) % 2 else (aps[len(aps) // 2 - 1] + aps[len(aps) // 2]) / 2
               for aps in per_generation]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.fill_between(generations, [a[0] for a in per_generation], [a[-1] for a in per_generation], color="tab:blue",
                    alpha=0.2, label="range within the generation")
    ax.plot(generations, medians, "o:", color="tab:blue", label="median of the generation")
    ax.plot(generations, [b for _, _, b in rows], "s-", color="tab:red", linewidth=2, label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation (0 = random architectures)")
    ax.set_ylabel("COCO AP@[.5:.95] on search-validation images")
    ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def summary_table(run: SearchRun, top_k: int, width: int = 120) -> Any:
    """A rich table of the top-k candidates that fits `width` characters: every figure whole, the least needed
    columns (origin, generation, params) left out first on a narrow terminal."""
    from detnas.tables import Col, fitted_table

    columns = [Col("rank", "right", 9), Col("hash", priority=8), Col("gen", "right", 3), Col("origin", priority=2),
               Col("AP", "right", 9), Col("AP50", "right", 7), Col("latency ms", "right", 9),
               Col("MFLOPs", "right", 5), Col("params M", "right", 4), Col("fitness", "right", 6)]
    rows = [[str(i), r.hash, str(r.generation), r.origin, f"{r.metrics['AP']:.4f}",
             f"{r.metrics.get('AP50', float('nan')):.4f}", f"{r.latency.median_ms:.3f}", f"{r.flops / 1e6:.1f}",
             f"{r.params / 1e6:.3f}", f"{r.fitness:.4f}"]
            for i, r in enumerate(rank_records(run.candidates, run.constraints.objective)[:top_k], start=1)]
    return fitted_table(columns, rows, width, title=f"search '{run.config.get('space')}': {len(run.candidates)} "
                        f"candidates, {len(run.plans)} generations, objective {run.constraints.objective}")


def summary(run: SearchRun) -> dict[str, Any]:
    """Counts, winner, its fresh timing and verdict, and the convergence curve (summary.json); a several-target
    search adds `targets`: each target's winner, fresh timing, verdict and front."""
    best = run.best()
    data = {
        "candidates": len(run.candidates), "generations": len(run.plans),
        "rejected": sum(len(p.rejected) for p in run.plans), "duplicates": sum(p.duplicates for p in run.plans),
        "best": _row(1, best) if best else None, "final": run.final.to_json() if run.final else None,
        "verdict": run.verdict(),
        "convergence": [{"generation": g, "best_in_generation": a, "best_so_far": b} for g, a, b in run.convergence()],
    }
    if run.targets:
        data["targets"] = {}
        for name, ms in run.targets:
            winner, final = run.best(name), run.finals.get(name)
            data["targets"][name] = {
                "latency_ms": ms, "best": _row(1, winner) if winner else None,
                "final": final.to_json() if final else None, "verdict": _verdict(final, ms),
                "pareto_front": [r.hash for r in pareto_front(run.candidates, run.constraints.metric, name)]}
    return data


def report_document(run: SearchRun, top_k: int) -> dict[str, Any]:
    """`detnas search report --json`: the summary, the configuration and the ranked top-k (the printed table)."""
    ranked = rank_records(run.candidates, run.constraints.objective)[:top_k]
    return {**summary(run), "config": run.config, "top_k": [_row(i, r) for i, r in enumerate(ranked, start=1)]}


def winner_document(run: SearchRun, best: Candidate) -> dict[str, Any]:
    """best_arch.json: the winner's arch and, under `search`, the settings it was scored with and its journal metrics
    (`detnas export --arch best_arch.json` rebuilds that detector without repeated options)."""
    document = best.arch.to_dict()
    if run.settings is not None:
        document[SETTINGS_KEY] = run.settings.with_scored(best.metrics).to_dict()
    return document


def write_report(journal: str | Path, out_dir: str | Path, top_k: int = 10) -> SearchRun:
    """Write best_arch.json, topk.json, pareto_front.json, summary.json, pareto.png and convergence.png (per
    target of a several-target search: best_arch.NAME.json, pareto_front.NAME.json, pareto.NAME.png)."""
    run = SearchRun.load(journal)
    out = Path(out_dir)
    # one winner, front and plot per target: best_arch.NAME.json, pareto_front.NAME.json, pareto.NAME.png
    for target, suffix in [(name, f".{name}") for name, _ in run.targets] or [(None, "")]:
        best = run.best(target)
        if best is not None:
            atomic_write_json(out / f"best_arch{suffix}.json", winner_document(run, best))
        front = pareto_front(run.candidates, run.constraints.metric, target)
        atomic_write_json(out / f"pareto_front{suffix}.json", [_row(i, r) for i, r in enumerate(front, 1)])
        if run.candidates:
            plot_pareto(run, out / f"pareto{suffix}.png", target=target)
    ranked = rank_records(run.candidates, run.constraints.objective)
    atomic_write_json(out / "topk.json", [_row(i, r) for i, r in enumerate(ranked[:top_k], start=1)])
    atomic_write_json(out / "summary.json", summary(run))
    if run.candidates:
        plot_convergence(run, out / "convergence.png")
    return run
