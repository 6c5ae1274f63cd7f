"""Timing statistics, predictor metrics, the held-out judgement, the bootstrap comparison and the least-squares
correction, checked against hand values and synthetic data with fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detnas.bench.predictor import LatencyPredictor
from detnas.bench.stats import (
    HeldOutReport,
    SharedPart,
    TimingStats,
    best_constant,
    compare_latencies,
    judge_predictor,
    kendall_tau,
    percentile,
    prediction_accuracy,
    shared_part,
    summarize,
)
from detnas.errors import DetnasError


def test_percentile_matches_numpy_linear_interpolation() -> None:
    rng = np.random.default_rng(0)
    values = list(rng.lognormal(size=37))
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_summarize_hand_values() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert stats.n == 5
    assert stats.median_ms == 3.0
    assert stats.min_ms == 1.0
    assert stats.mean_ms == 4.0
    assert stats.std_ms == pytest.approx(math.sqrt(50 / 4))
    assert stats.cv == pytest.approx(math.sqrt(50 / 4) / 4)
    assert stats.p90_ms == pytest.approx(7.6)  # 4 + 0.6 * (10 - 4)
    assert stats.p99_ms == pytest.approx(9.76)
    assert TimingStats.from_dict(stats.to_dict()) == stats


def test_summarize_needs_two_runs() -> None:
    with pytest.raises(DetnasError, match="at least 2 timed runs"):
        summarize([1.0])


def test_kendall_tau_known_values() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair out of six: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # tau-b with a tie in y: pairs C=4, D=1, tie_y=1 -> (4-1)/sqrt(5*6)
    assert kendall_tau([1, 2, 3, 4], [1, 1, 3, 2]) == pytest.approx(3 / math.sqrt(30))


def test_prediction_accuracy() -> None:
    measured = [10.0, 20.0, 30.0, 40.0]
    predicted = [10.4, 21.5, 36.0, 40.0]  # errors 4 %, 7.5 %, 20 %, 0 %
    acc = prediction_accuracy(predicted, measured)
    assert acc.within_5 == 0.5
    assert acc.within_10 == 0.75
    assert acc.mape == pytest.approx((4 + 7.5 + 20 + 0) / 4)
    assert acc.kendall_tau == 1.0
    # SS_tot = 500 around the mean 25; SS_res = 0.16 + 2.25 + 36 + 0
    assert acc.r2 == pytest.approx(1 - 38.41 / 500)
    assert prediction_accuracy([25.0] * 4, measured).r2 == pytest.approx(0.0)


def test_best_constant_minimises_mape() -> None:
    measured = [10.0, 11.0, 12.5, 14.0, 20.0]
    best = best_constant(measured)
    mape = prediction_accuracy([best] * 5, measured).mape
    for c in np.linspace(9, 21, 241):
        assert mape <= prediction_accuracy([float(c)] * 5, measured).mape + 1e-9


def _synthetic_set(spread: float, noise: float, n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True latencies spanning `spread` (max/min), and two half measurements with relative noise `noise` each."""
    rng = np.random.default_rng(seed)
    truth = 10 * spread ** np.linspace(0, 1, n)
    first, second = (truth * (1 + rng.normal(0, noise, n)) for _ in range(2))
    return truth, first, second


def test_constant_predictor_is_called_out_and_a_good_one_is_not() -> None:
    truth, first, second = _synthetic_set(spread=1.156, noise=0.003)
    measured = list((first + second) / 2)
    constant = [best_constant(measured)] * len(measured)
    # the trap: a constant within +-10 % of every arch of a 1.156x spread
    flat = judge_predictor(constant, measured, (list(first), list(second)))
    assert flat.constant.within_10 == 1.0 and flat.predictor.within_10 == 1.0
    assert not flat.accurate and not flat.noise_limited
    assert any("best constant" in m for m in flat.shortfalls()) and any("R²" in m for m in flat.shortfalls())
    assert "NOT ACCURATE" in " ".join(flat.verdict())
    good = judge_predictor(list(truth * (1 + np.random.default_rng(1).normal(0, 0.004, len(truth)))), measured,
                           (list(first), list(second)))
    assert good.accurate, good.shortfalls()
    assert good.predictor.mape < good.constant.mape / 3 and good.predictor.r2 >= 0.9
    assert good.verdict()[-1].startswith("accurate")
    assert HeldOutReport.from_dict(good.to_dict()) == good


def test_spread_within_noise_is_reported_as_noise_limited() -> None:
    truth, first, second = _synthetic_set(spread=1.01, noise=0.01)  # a 1 % range under 1 % noise per half
    measured = list((first + second) / 2)
    report = judge_predictor(list(truth), measured, (list(first), list(second)))
    assert report.noise_limited and report.spread_to_noise < 2
    assert report.r2_ceiling == pytest.approx(1 - report.spread_to_noise ** -2) and report.r2_ceiling < 0.75
    assert report.noise_cv == pytest.approx(0.01 / np.sqrt(2), rel=0.35)
    assert any(line.startswith("NOISE-LIMITED") for line in report.verdict())
    assert report.to_dict()["noise_limited"] is True
    burst = first.copy()
    burst[::3] *= 1.05  # one round of load hit every third arch's first half: the halves overstate the noise
    explained = judge_predictor(list(truth), list(truth), (list(burst), list(second)))  # a predictor fitted elsewhere
    assert explained.noise_cv > 0.01 and explained.noise_bound_cv == 0 and not explained.noise_limited
    assert "noise of one arch's median 0.00% at most (split halves" in explained.verdict()[0]
    truth, first, second = _synthetic_set(spread=1.002, noise=0.01)  # as wall clock on a loaded machine measured it
    drowned = judge_predictor(list(truth), list((first + second) / 2), (list(first), list(second)))
    assert drowned.r2_ceiling < 0 and "perfect predictor scores R² below 0" in drowned.verdict()[0]


def test_shared_part_separates_an_additive_detector_from_an_arch_dependent_one() -> None:
    """Network = backbone + a fixed detector part: network minus backbone varies only by the noise. With an
    arch-dependent detector part the excess is found and named as the share of spread no backbone explains."""
    rng = np.random.default_rng(2)
    backbone = 6 + 2 * rng.random(30)
    halves = [backbone * (1 + rng.normal(0, 0.002, 30)) for _ in range(2)]

    def network(extra: np.ndarray) -> tuple[list[float], tuple[list[float], list[float]]]:
        split = [list(backbone + 89 + extra + rng.normal(0, 0.05, 30)) for _ in range(2)]
        return list((np.asarray(split[0]) + split[1]) / 2), (split[0], split[1])

    measured_backbone = list((halves[0] + halves[1]) / 2)
    plain = network(np.zeros(30))
    additive = shared_part(plain[0], measured_backbone, plain[1], (list(halves[0]), list(halves[1])))
    assert additive.median_ms == pytest.approx(89, abs=0.05)
    assert additive.std_ms < 2 * additive.noise_ms and additive.unexplained_share < 0.05
    coupled = network(0.3 * rng.standard_normal(30))
    mixed = shared_part(coupled[0], measured_backbone, coupled[1], (list(halves[0]), list(halves[1])))
    assert mixed.excess_ms == pytest.approx(0.3, rel=0.35) and mixed.unexplained_share > 0.1
    assert f"{100 * mixed.unexplained_share:.0f}% of the network's spread variance" in mixed.line()
    assert SharedPart.from_dict(mixed.to_dict()) == mixed


def _stats(samples: np.ndarray) -> TimingStats:
    return summarize(list(samples))


def test_bootstrap_compare_calls_a_10_percent_difference_at_cv_5_percent() -> None:
    rng = np.random.default_rng(0)
    base, slower = rng.normal(10.0, 0.5, 300), rng.normal(11.0, 0.55, 300)
    c = compare_latencies(_stats(base), _stats(slower), list(base), list(slower))
    assert c.verdict == "slower" and c.note is None and 1 < c.low < c.ratio < c.high
    assert c.ratio == pytest.approx(1.1, abs=0.02) and c.baseline_cv == pytest.approx(0.05, abs=0.01)
    assert compare_latencies(_stats(slower), _stats(base), list(slower), list(base)).verdict == "faster"


def test_bootstrap_compare_does_not_separate_draws_of_one_distribution() -> None:
    same = [np.random.default_rng(seed).normal(10.0, 0.5, 300) for seed in range(40)]
    verdicts = [compare_latencies(_stats(a), _stats(b), list(a), list(b), seed=i).verdict
                for i, (a, b) in enumerate(zip(same[0::2], same[1::2]))]
    assert verdicts[0] == "indistinguishable"
    assert verdicts.count("indistinguishable") >= 17  # 95 % intervals: about 1 false call in 20 pairs


def test_compare_without_samples_falls_back_to_the_cv_band_and_says_so() -> None:
    def stats(median: float, cv: float) -> TimingStats:
        return TimingStats(10, median, median, median, median, median, cv * median, cv)

    assert compare_latencies(stats(10.0, 0.03), stats(10.5, 0.03)).verdict == "indistinguishable"  # 5 % < 8.5 %
    c = compare_latencies(stats(10.0, 0.03), stats(11.0, 0.03))
    assert c.verdict == "slower" and c.note is not None and "no raw samples" in c.note and "band" in c.method
    assert compare_latencies(stats(10.0, 0.0), stats(9.8, 0.0)).verdict == "faster"  # 2 % beyond the 1 % floor


def test_predictor_fit_recovers_a_known_correction() -> None:
    """Synthetic truth: latency = 1.3 * stage-0 sum + 0.8 * stage-1 sum + 0.25 per block of choice 0 + 2.0 (choice 3,
    the last, has no term of its own); the fit must find it exactly."""
    rng = np.random.default_rng(1)
    table = [{0: float(rng.uniform(1, 2)), 3: float(rng.uniform(1, 3))} for _ in range(4)]
    stage_of = [0, 0, 1, 1]
    archs = [tuple(int(c) for c in rng.choice([0, 3], size=4)) for _ in range(12)]

    def truth(a: tuple[int, ...]) -> float:
        return 1.3 * (table[0][a[0]] + table[1][a[1]]) + 0.8 * (table[2][a[2]] + table[3][a[3]]) + 0.25 * a.count(0) + 2.0

    predictor = LatencyPredictor.fit(table, stage_of, 0.5, archs, [truth(a) for a in archs])
    assert predictor.coef == pytest.approx((1.3, 0.8, 0.25, 2.0))
    assert predictor.predict((3, 0, 3, 0)) == pytest.approx(truth((3, 0, 3, 0)))
    assert predictor.table_sum((0, 0, 0, 0)) == pytest.approx(0.5 + sum(t[0] for t in table))
    assert LatencyPredictor.from_dict(predictor.to_dict()) == predictor
    with pytest.raises(DetnasError, match="rebuild the profile"):
        LatencyPredictor.from_dict({**predictor.to_dict(), "kind": "lut+stage-linear"})
    with pytest.raises(DetnasError, match="choice 1 at position 0"):
        predictor.predict((1, 0, 0, 0))


def test_predictor_fit_falls_back_to_one_scale_when_the_full_correction_fits_noise() -> None:
    """Synthetic truth: a large fixed part + 1.2 x the table sum, measured with 0.5 % noise on 12 archs (as at the
    network scope, where the detector dwarfs the backbone): leave-one-out picks one scale, not 8 free terms."""
    rng = np.random.default_rng(2)
    table = [{c: float(rng.uniform(0.5, 2.0)) for c in (0, 1, 2, 3)} for _ in range(8)]
    stage_of = [0, 0, 1, 1, 2, 2, 3, 3]
    archs = [tuple(int(c) for c in rng.choice(4, size=8)) for _ in range(12)]
    measured = [(50.0 + 1.2 * sum(t[c] for t, c in zip(table, a))) * (1 + rng.normal(0, 0.005)) for a in archs]
    coef = LatencyPredictor.fit(table, stage_of, 0.0, archs, measured).coef
    assert coef[:4] == pytest.approx((coef[0],) * 4) and coef[4:7] == (0.0, 0.0, 0.0)
    assert coef[0] == pytest.approx(1.2, abs=0.5) and coef[-1] == pytest.approx(50.0, rel=0.05)
