"""The winner's curse under a hard latency target, simulated: how often the search's winner, timed afresh, exceeds
the target under each feasibility rule (`--feasibility median`, a 95 % bound per candidate, and detnas' `ucb95`,
whose per-candidate confidence 1 - 0.05 / candidates holds for the whole search; goal <= 5 % with ucb95).

Each simulated search draws `candidates` architectures whose true median latency spreads around the target and
whose AP grows with it (bigger networks see more), times each with `runs` noisy runs (log-normal jitter, a
share of slow outliers, and a slow or fast phase of the machine per measurement), keeps the feasible ones under the
rule and takes the best AP. The winner is then timed afresh as `detnas search` does: `rounds` rounds of `runs` runs,
each round in its own phase of the machine. A search whose winner's fresh median exceeds the target is a miss.

    python -m detnas.bench.suite.feasibility [--trials 4000] [--json feasibility.json]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import numpy as np

from detnas.bench.stats import median_bound_rank
from detnas.io import atomic_write_json


@dataclass(frozen=True)
class Scenario:
    """Latency noise and search size; jitter and phase are relative standard deviations (0.03 = 3 %)."""

    candidates: int = 100
    runs: int = 30
    rounds: int = 5
    spread: float = 0.25  # true medians uniform in target * (1 +- spread)
    jitter: float = 0.03  # run-to-run
    outliers: float = 0.05  # share of runs slowed by an interrupt
    outlier_slowdown: float = 0.3
    phase: float = 0.004  # per measurement: the machine's load when it was taken
    ap_noise: float = 0.02  # AP scatter around its trend with latency (AP units, trend 0.3 -> 0.4 over the range)


@dataclass(frozen=True)
class Outcome:
    rule: str
    searches: int  # with a feasible winner
    misses: int  # winners whose fresh median exceeds the target
    winner_true_ms: float  # mean true median of the winners, in units of the target
    winner_ap: float  # mean AP of the winners

    @property
    def miss_rate(self) -> float:
        return self.misses / self.searches if self.searches else 0.0


def _timed(rng: np.random.Generator, true: np.ndarray, runs: int, s: Scenario) -> np.ndarray:
    """Runs of every arch in `true` (shape [..., runs]): one phase per measurement, log-normal jitter, outliers."""
    phase = np.exp(rng.normal(0.0, s.phase, true.shape))[..., None]
    jitter = np.exp(rng.normal(0.0, s.jitter, (*true.shape, runs)))
    slow = 1 + s.outlier_slowdown * (rng.random((*true.shape, runs)) < s.outliers)
    return true[..., None] * phase * jitter * slow


RULES = ("median", "ucb95 per candidate", "ucb95")  # the last is detnas' (`bound_confidence` of the budget)


def simulate(trials: int, scenario: Scenario = Scenario(), seed: int = 0) -> list[Outcome]:
    """Every rule on the same simulated searches (target 1.0); each rule's winner gets its own fresh timing."""
    from detnas.search.objectives import bound_confidence

    rng = np.random.default_rng(seed)
    s = scenario
    ranks = [median_bound_rank(s.runs, c) for c in (0.95, bound_confidence(s.candidates))]
    if None in ranks:
        raise ValueError(f"{s.runs} runs cannot bound a median at {bound_confidence(s.candidates)}")
    true = rng.uniform(1 - s.spread, 1 + s.spread, (trials, s.candidates))
    ap = 0.3 + 0.1 * (true - (1 - s.spread)) / (2 * s.spread) + rng.normal(0.0, s.ap_noise, true.shape)
    runs = np.sort(_timed(rng, true, s.runs, s), axis=-1)
    held = [np.median(runs, axis=-1), *(runs[..., rank - 1] for rank in ranks)]
    outcomes, every = [], np.arange(trials)
    for rule, figure in zip(RULES, held):
        score = np.where(figure <= 1.0, ap, -np.inf)
        winner = np.argmax(score, axis=1)
        found = np.isfinite(score[every, winner])
        winner_true = true[every, winner][found]
        fresh = _timed(rng, np.repeat(winner_true[:, None], s.rounds, axis=1), s.runs, s).reshape(len(winner_true), -1)
        misses = int((np.median(fresh, axis=1) > 1.0).sum())
        outcomes.append(Outcome(rule, int(found.sum()), misses, float(winner_true.mean()),
                                float(ap[every, winner][found].mean())))
    return outcomes


SCENARIOS = {
    "candidates spread +-25 % around the target": Scenario(),
    "crowded: +-10 %, AP tied closer to latency": Scenario(spread=0.1, ap_noise=0.01),
    "evolved: 200 within +-5 %": Scenario(candidates=200, spread=0.05, ap_noise=0.005),
    "noisy machine: jitter 8 %, +-10 %": Scenario(spread=0.1, ap_noise=0.01, jitter=0.08),
    "drifting machine: phase 1 %, +-10 %": Scenario(spread=0.1, ap_noise=0.01, phase=0.01),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="feasibility.json")
    args = parser.parse_args()
    rows = []
    for name, scenario in SCENARIOS.items():
        for outcome in simulate(args.trials, scenario, args.seed):
            rows.append({"scenario": name, **asdict(scenario), **asdict(outcome), "miss_rate": outcome.miss_rate})
            print(f"{name:<44} {outcome.rule:>19}: fresh winner over the target in {100 * outcome.miss_rate:5.1f}% "
                  f"of {outcome.searches} searches; its true latency {outcome.winner_true_ms:.4f} x target, AP "
                  f"{outcome.winner_ap:.4f}", flush=True)
        print(f"{name}: goal <= 5 % with ucb95: {'met' if rows[-1]['miss_rate'] <= 0.05 else 'MISSED'}")
    atomic_write_json(args.json, {"trials": args.trials, "seed": args.seed, "rows": rows})


if __name__ == "__main__":
    from detnas.bench.suite import run_suite

    run_suite(main)
