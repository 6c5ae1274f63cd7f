"""Results of a search, drawn from its journal alone: winner and top-k as arch JSON, Pareto and convergence
plots, a summary table. `detnas search report JOURNAL` and the end of `detnas search run` both call `write_report`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detnas.io import atomic_path, atomic_write_json, atomic_write_text
from detnas.search.evolution import best_record
from detnas.search.journal import read_journal
from detnas.search.objectives import Constraints, pareto_front, rank_records


@dataclass
class SearchRun:
    """What a journal says: configuration, evaluated candidates in order, and the winner's re-measurement."""

    config: dict[str, Any]
    candidates: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    final: dict[str, Any] | None

    @classmethod
    def load(cls, path: str | Path) -> SearchRun:
        records = read_journal(path)
        finals = [r for r in records if r["type"] == "final"]
        return cls(records[0]["config"], [r for r in records if r["type"] == "candidate"],
                   [r for r in records if r["type"] == "generation"], finals[-1] if finals else None)

    @property
    def constraints(self) -> Constraints:
        prefix = "constraint_"
        return Constraints(**{k[len(prefix):]: v for k, v in self.config.items() if k.startswith(prefix)})

    def best(self) -> dict[str, Any] | None:
        return best_record(self.candidates, self.constraints)

    def convergence(self) -> list[tuple[int, float, float]]:
        """(generation, best AP within the generation, best AP so far) for every evaluated generation."""
        rows, so_far = [], float("-inf")
        for generation in sorted({r["generation"] for r in self.candidates}):
            ap = max(r["metrics"]["AP"] for r in self.candidates if r["generation"] == generation)
            so_far = max(so_far, ap)
            rows.append((generation, ap, so_far))
        return rows

    def verdict(self) -> str:
        """One sentence on whether the winner's *re-measured* latency meets the target."""
        target = self.constraints.latency_ms
        if self.final is None:
            return "the winner's latency has not been re-measured yet (run the search to the end)"
        measured = f"{self.final['latency']['median_ms']:.3f}ms re-measured ({self.final['source']})"
        if target is None:
            return f"winner latency {measured}; no latency target was set"
        if self.final["meets_target"]:
            return f"winner meets the {target:g}ms target: {measured}"
        return f"winner does NOT meet the {target:g}ms target: {measured} (the search estimate was optimistic)"


def _row(rank: int, r: dict[str, Any]) -> dict[str, Any]:
    return {"rank": rank, "arch": r["arch"], "metrics": r["metrics"], "latency": r["latency"], "flops": r["flops"],
            "params": r["params"], "fitness": r["fitness"], "generation": r["generation"], "origin": r["origin"]}


def plot_pareto(run: SearchRun, path: Path) -> None:
    """AP against median latency of every candidate, coloured by generation, with the front and the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    lat = [r["latency"]["median_ms"] for r in run.candidates]
    ap = [r["metrics"]["AP"] for r in run.candidates]
    points = ax.scatter(lat, ap, c=[r["generation"] for r in run.candidates], cmap="viridis", s=14, alpha=0.8)
    fig.colorbar(points, ax=ax, label="generation")
    front = pareto_front(run.candidates)
    ax.step([r["latency"]["median_ms"] for r in front], [r["metrics"]["AP"] for r in front], where="post",
            color="tab:red", label="Pareto front")
    if run.constraints.latency_ms is not None:
        ax.axvline(run.constraints.latency_ms, color="gray", linestyle="--", label="latency target")
    best = run.best()
    if best is not None:
        ax.scatter([best["latency"]["median_ms"]], [best["metrics"]["AP"]], marker="*", s=160, color="tab:red",
                   label="winner")
    ax.set_xlabel(f"median latency (ms, {run.candidates[0]['fingerprint'] if run.candidates else ''})"[:80])
    ax.set_ylabel("COCO AP@[.5:.95] (search-val)")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_convergence(run: SearchRun, path: Path) -> None:
    """Best AP per generation and best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run.convergence()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot([g for g, _, _ in rows], [a for _, a, _ in rows], "o-", label="best in generation")
    ax.plot([g for g, _, _ in rows], [b for _, _, b in rows], "s--", label="best so far")
    ax.set_xlabel("generation")
    ax.set_ylabel("COCO AP@[.5:.95] (search-val)")
    ax.legend()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def summary_table(run: SearchRun, top_k: int) -> Any:
    """A rich table of the top-k candidates."""
    from rich.table import Table

    table = Table(title=f"search '{run.config.get('space')}': {len(run.candidates)} candidates, "
                        f"{len(run.plans)} generations, objective {run.constraints.objective}")
    for col in ("rank", "hash", "gen", "origin", "AP", "AP50", "latency ms", "MFLOPs", "params M", "fitness"):
        table.add_column(col, justify="left" if col in ("hash", "origin") else "right", no_wrap=col == "hash",
                         min_width=12 if col == "hash" else None)
    for i, r in enumerate(rank_records(run.candidates, run.constraints.objective)[:top_k], start=1):
        table.add_row(str(i), r["hash"], str(r["generation"]), r["origin"], f"{r['metrics']['AP']:.4f}",
                      f"{r['metrics'].get('AP50', float('nan')):.4f}", f"{r['latency']['median_ms']:.3f}",
                      f"{r['flops'] / 1e6:.1f}", f"{r['params'] / 1e6:.3f}", f"{r['fitness']:.4f}")
    return table


def write_report(journal: str | Path, out_dir: str | Path, top_k: int = 10) -> SearchRun:
    """Write best_arch.json, topk.json, pareto_front.json, summary.json, pareto.png and convergence.png."""
    run = SearchRun.load(journal)
    out = Path(out_dir)
    best = run.best()
    if best is not None:
        atomic_write_text(out / "best_arch.json", json.dumps(best["arch"], indent=2) + "\n")
    ranked = rank_records(run.candidates, run.constraints.objective)
    atomic_write_json(out / "topk.json", [_row(i, r) for i, r in enumerate(ranked[:top_k], start=1)])
    atomic_write_json(out / "pareto_front.json", [_row(i, r) for i, r in enumerate(pareto_front(run.candidates), 1)])
    atomic_write_json(out / "summary.json", {
        "candidates": len(run.candidates), "generations": len(run.plans),
        "rejected": sum(len(p["rejected"]) for p in run.plans), "duplicates": sum(p["duplicates"] for p in run.plans),
        "best": _row(1, best) if best else None, "final": run.final, "verdict": run.verdict(),
        "convergence": [{"generation": g, "best_in_generation": a, "best_so_far": b} for g, a, b in run.convergence()],
    })
    if run.candidates:
        plot_pareto(run, out / "pareto.png")
        plot_convergence(run, out / "convergence.png")
    return run
