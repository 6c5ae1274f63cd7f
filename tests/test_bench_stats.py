"""Timing statistics, predictor metrics and the least-squares correction, checked against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detnas.bench.predictor import LatencyPredictor
from detnas.bench.stats import TimingStats, beyond_noise, kendall_tau, percentile, prediction_accuracy, summarize
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


def test_beyond_noise_uses_combined_cv() -> None:
    def stats(median: float, cv: float) -> TimingStats:
        return TimingStats(10, median, median, median, median, median, cv * median, cv)

    assert not beyond_noise(stats(10.0, 0.03), stats(10.5, 0.03))  # 5 % < 2 * 4.2 %
    assert beyond_noise(stats(10.0, 0.03), stats(11.0, 0.03))  # 10 % > 8.5 %
    assert beyond_noise(stats(10.0, 0.0), stats(10.2, 0.0))  # 2 % > the 1 % floor
    assert not beyond_noise(stats(10.0, 0.0), stats(10.05, 0.0))


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
