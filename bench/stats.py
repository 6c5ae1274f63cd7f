"""Timing statistics, predictor-accuracy metrics and the comparison of two latencies.

Latency distributions are skewed (a few slow runs from interrupts or other processes), so the median is the
headline number and the tail (p90, p99) and spread (coefficient of variation) are reported beside it. The
summaries are plain Python so they can be tested exactly; the bootstrap uses numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detnas.errors import DetnasError
from detnas.jsonout import JsonRecord


@dataclass(frozen=True)
class TimingStats(JsonRecord):
    """Summary of timed runs, all in milliseconds; `cv` is std / mean (0.02 = 2 %)."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float
    cv: float


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> TimingStats:
    """Statistics of per-run latencies; the sample standard deviation (n - 1) is used for the CV."""
    if len(samples_ms) < 2:
        raise DetnasError(f"need at least 2 timed runs to report spread, got {len(samples_ms)}; raise --runs")
    n = len(samples_ms)
    mean = sum(samples_ms) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in samples_ms) / (n - 1))
    return TimingStats(
        n=n,
        median_ms=percentile(samples_ms, 50),
        p90_ms=percentile(samples_ms, 90),
        p99_ms=percentile(samples_ms, 99),
        min_ms=min(samples_ms),
        mean_ms=mean,
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
    )


def median_bound_rank(n: int, confidence: float = 0.95) -> int | None:
    """The 1-based rank k of the order statistic that bounds the median from above with `confidence`, or None
    when n runs are too few for any. Of n independent runs, the number B below the true median is Binomial(n, 1/2);
    the k-th smallest run lies at or above the median exactly when B <= k - 1, so k is the smallest rank with
    P(B <= k - 1) >= confidence (distribution-free: no normality, which skewed latencies lack)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    cumulative = 0.0
    for k in range(1, n + 1):
        cumulative += math.comb(n, k - 1) / 2**n
        if cumulative >= confidence:
            return k
    return None


def min_runs_for_bound(confidence: float = 0.95) -> int:
    """The fewest runs whose largest one bounds the median with `confidence` (5 at 95 %: 1 - 2**-5 = 0.969)."""
    return math.ceil(math.log2(1 / (1 - confidence)) - 1e-9)


def median_upper_bound(samples_ms: Sequence[float], confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of the median latency from its timed runs (`median_bound_rank`)."""
    rank = median_bound_rank(len(samples_ms), confidence)
    if rank is None:
        raise DetnasError(f"{len(samples_ms)} timed runs cannot bound the median at {100 * confidence:g} % confidence; "
                          f"time at least {min_runs_for_bound(confidence)} runs")
    return sorted(samples_ms)[rank - 1]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (tie-corrected) by counting pairs; O(n^2) is fine for the few hundred archs we rank."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("kendall_tau needs two sequences of equal length >= 2")
    x, y = [float(v) for v in x], [float(v) for v in y]
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else 0.0


@dataclass(frozen=True)
class Accuracy(JsonRecord):
    """How well predicted latencies match measured ones on held-out architectures; `r2` is 1 - SS_res / SS_tot
    around the measured mean, so a constant scores <= 0 and only a predictor that explains the spread nears 1."""

    n: int
    within_5: float
    within_10: float
    mape: float
    kendall_tau: float
    r2: float


def prediction_accuracy(predicted: Sequence[float], measured: Sequence[float]) -> Accuracy:
    """Share of predictions within +-5 % / +-10 % of the measurement, mean absolute % error, rank agreement, R²."""
    if len(predicted) != len(measured) or len(measured) < 2:
        raise ValueError("need equal-length predicted/measured sequences with at least 2 entries")
    predicted, measured = [float(p) for p in predicted], [float(m) for m in measured]
    rel = [abs(p - m) / m for p, m in zip(predicted, measured)]
    mean = sum(measured) / len(measured)
    total = sum((m - mean) ** 2 for m in measured)
    residual = sum((p - m) ** 2 for p, m in zip(predicted, measured))
    return Accuracy(
        n=len(rel),
        within_5=sum(r <= 0.05 for r in rel) / len(rel),
        within_10=sum(r <= 0.10 for r in rel) / len(rel),
        mape=100 * sum(rel) / len(rel),
        kendall_tau=kendall_tau(predicted, measured),
        r2=1 - residual / total if total > 0 else float(residual == 0),  # no spread: nothing to explain
    )


def best_constant(measured: Sequence[float]) -> float:
    """The constant with the lowest MAPE: sum |c - m| / m is minimised by the median of m weighted by 1 / m."""
    ordered = sorted(measured)
    weights = [1 / m for m in ordered]
    half, acc = sum(weights) / 2, 0.0
    for value, weight in zip(ordered, weights):
        acc += weight
        if acc >= half:
            return value
    return ordered[-1]


def perfect_tau(r2_ceiling: float) -> float:
    """Kendall tau between the true latencies and noisy measurements of them, where the noise leaves R² `r2_ceiling`
    (Gaussian: the correlation is sqrt(R²) and tau = 2/pi asin(rho), Greiner's relation): the tau a perfect predictor
    reaches against these measurements. The two halves of the runs agree less than that (each half is noisier than
    the whole, and both are noisy), so their tau is no ceiling of a predictor's."""
    return 2 / math.pi * math.asin(math.sqrt(min(1.0, max(0.0, r2_ceiling))))


# When a predictor is "accurate": it must beat the best constant by a wide margin, rank the archs nearly as
# well as a perfect predictor would against the same noisy measurements, and explain most of the spread.
MAX_MAPE_VS_CONSTANT = 1 / 3
MIN_TAU_VS_CEILING = 0.9
MIN_R2 = 0.9
# Below this ratio of the archs' spread (std / mean) to the noise of one arch's median, the ranking of a single
# measurement against the truth has Kendall tau <= 0.7 (Gaussian): the latencies cannot separate candidates.
MIN_SPREAD_TO_NOISE = 2.0


@dataclass(frozen=True)
class HeldOutReport:
    """A latency predictor judged on one held-out set against what the set allows: the spread it must explain,
    the best constant (which any predictor must beat), and the rank agreement a perfect predictor reaches given the
    noise (`reference_tau`; `ceiling_tau`, the two halves' agreement, is kept for reference and is lower). `noise_cv`
    is the relative standard deviation of one arch's median."""

    n: int
    spread_ratio: float  # slowest / fastest measured
    std_ms: float
    spread_cv: float  # std / mean of the measured latencies
    noise_cv: float
    ceiling_tau: float  # Kendall tau of the two halves of the measurements
    constant_ms: float
    predictor: Accuracy
    constant: Accuracy
    table_sum: Accuracy | None = None

    @property
    def noise_bound_cv(self) -> float:
        """The noise of one arch's median, at most: the split-half estimate, or what the predictor leaves unexplained
        when that is lower. A predictor fitted on other archs cannot explain noise, so its residual bounds the
        noise that separates archs; the halves also carry what hits every arch alike (load drift between odd and
        even rounds), and with few rounds one burst of load overstates them."""
        residual = math.sqrt(max(0.0, 1 - self.predictor.r2)) * self.spread_cv
        return min(self.noise_cv, residual)

    @property
    def spread_to_noise(self) -> float:
        noise = self.noise_bound_cv
        return self.spread_cv / noise if noise > 0 else math.inf

    @property
    def r2_ceiling(self) -> float:
        """The R² a perfect predictor scores against these noisy measurements: 1 - noise variance / spread variance."""
        return 1 - (self.noise_bound_cv / self.spread_cv) ** 2 if self.spread_cv > 0 else 0.0

    @property
    def reference_tau(self) -> float:
        """The Kendall tau a perfect predictor scores against these measurements, given the split-half noise alone
        (not the predictor's residual, which would make the reference depend on the predictor judged)."""
        if self.spread_cv <= 0:
            return 0.0
        return perfect_tau(1 - (self.noise_cv / self.spread_cv) ** 2)

    @property
    def noise_limited(self) -> bool:
        return self.spread_to_noise < MIN_SPREAD_TO_NOISE

    def shortfalls(self) -> list[str]:
        """The accuracy criteria the predictor misses (empty: accurate)."""
        p, missed = self.predictor, []
        if not p.mape < MAX_MAPE_VS_CONSTANT * self.constant.mape:
            missed.append(f"MAPE {p.mape:.2f}% is not below 1/3 of the best constant's {self.constant.mape:.2f}%")
        if not p.kendall_tau >= MIN_TAU_VS_CEILING * self.reference_tau:
            missed.append(f"Kendall tau {p.kendall_tau:.3f} is below 0.9 x a perfect predictor's {self.reference_tau:.3f} "
                          "against these measurements")
        if not p.r2 >= MIN_R2:
            reach = " (out of these measurements' reach: more runs lower the noise)" if self.r2_ceiling < MIN_R2 else ""
            missed.append(f"R² {p.r2:.3f} is below {MIN_R2}{reach}")
        return missed

    @property
    def accurate(self) -> bool:
        return not self.shortfalls()

    def verdict(self) -> list[str]:
        """Plain sentences for the CLI, the suite, the profile JSON and the search log."""
        best = f"R² {self.r2_ceiling:.3f} at best" if self.r2_ceiling >= 0 else "R² below 0 against them"
        noise = f"{100 * self.noise_cv:.2f}%"
        if self.noise_bound_cv < self.noise_cv:
            noise = f"{100 * self.noise_bound_cv:.2f}% at most (split halves: {noise}; the predictor leaves less unexplained)"
        lines = [f"held-out latency spread: max/min {self.spread_ratio:.3f}, std {self.std_ms:.3f} ms "
                 f"({100 * self.spread_cv:.2f}% of the mean); noise of one arch's median {noise}, so a "
                 f"perfect predictor scores {best}"]
        if self.noise_limited:
            lines.append(f"NOISE-LIMITED: the spread is {self.spread_to_noise:.1f}x the measurement noise (under "
                         f"{MIN_SPREAD_TO_NOISE:g}x): at this scope a latency target cannot separate candidates")
        missed = self.shortfalls()
        if missed:
            lines.append("NOT ACCURATE (criteria: MAPE < 1/3 of the best constant's, tau >= 0.9 x a perfect "
                         "predictor's, R² >= 0.9): " + "; ".join(missed))
        else:
            lines.append(f"accurate: MAPE {self.predictor.mape:.2f}% vs the constant's {self.constant.mape:.2f}%, "
                         f"tau {self.predictor.kendall_tau:.3f} vs a perfect predictor's {self.reference_tau:.3f}, "
                         f"R² {self.predictor.r2:.3f}")
        return lines

    def rows(self) -> list[tuple[str, Accuracy]]:
        """The predictors side by side, the constant last."""
        named = [("table sum + correction", self.predictor)]
        if self.table_sum is not None:
            named.append(("table sum only", self.table_sum))
        return [*named, (f"best constant ({self.constant_ms:.3f} ms)", self.constant)]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        ratio = self.spread_to_noise
        data.update(spread_to_noise=ratio if math.isfinite(ratio) else None, r2_ceiling=self.r2_ceiling,
                    noise_bound_cv=self.noise_bound_cv, reference_tau=self.reference_tau,
                    noise_limited=self.noise_limited, accurate=self.accurate,
                    verdict=self.verdict())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeldOutReport:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("predictor", "constant", "table_sum"):
            if fields.get(key) is not None:
                fields[key] = Accuracy.from_dict(fields[key])
        return cls(**fields)


def judge_predictor(predicted: Sequence[float], measured: Sequence[float], halves: tuple[Sequence[float], Sequence[float]],
                    table_sum: Sequence[float] | None = None) -> HeldOutReport:
    """Judge predictions of held-out archs; `halves` are each arch's medians of two disjoint halves of its runs.

    The noise of a full median is estimated from the halves: var(a - b) = 2 var(half median) = 4 var(full median).
    """
    first, second = [float(v) for v in halves[0]], [float(v) for v in halves[1]]
    measured = [float(m) for m in measured]
    if not len(first) == len(second) == len(measured):
        raise ValueError("need the two half medians of every measured arch")
    n = len(measured)
    mean = sum(measured) / n
    std = math.sqrt(sum((m - mean) ** 2 for m in measured) / (n - 1))
    noise = math.sqrt(sum(((a - b) / m) ** 2 for a, b, m in zip(first, second, measured)) / n) / 2
    constant = best_constant(measured)
    return HeldOutReport(
        n=n, spread_ratio=max(measured) / min(measured), std_ms=std, spread_cv=std / mean, noise_cv=noise,
        ceiling_tau=kendall_tau(first, second), constant_ms=constant,
        predictor=prediction_accuracy(predicted, measured),
        constant=prediction_accuracy([constant] * n, measured),
        table_sum=None if table_sum is None else prediction_accuracy(table_sum, measured),
    )


@dataclass(frozen=True)
class SharedPart(JsonRecord):
    """The timed network minus its own backbone, per arch (both timed in the same rounds). Were the detector's
    cost independent of the arch, it would vary across archs only by the measurement noise; `excess_ms` is the
    arch-dependent rest, which no predictor built from backbone blocks can explain."""

    n: int
    median_ms: float
    std_ms: float  # across archs
    noise_ms: float  # the std that the noise of the two measurements alone would give
    network_std_ms: float  # the spread the predictor must explain

    @property
    def excess_ms(self) -> float:
        return math.sqrt(max(0.0, self.std_ms**2 - self.noise_ms**2))

    @property
    def unexplained_share(self) -> float:
        """Share of the network's spread variance that is not the backbone's."""
        return (self.excess_ms / self.network_std_ms) ** 2 if self.network_std_ms > 0 else 0.0

    def line(self) -> str:
        return (f"network minus its backbone: median {self.median_ms:.3f} ms, std across archs {self.std_ms:.3f} ms "
                f"(noise alone: {self.noise_ms:.3f} ms), so {100 * self.unexplained_share:.0f}% of the network's "
                "spread variance is not the backbone's (a bound on R² of any block-table predictor)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excess_ms": self.excess_ms, "unexplained_share": self.unexplained_share,
                "line": self.line()}


def shared_part(network: Sequence[float], backbone: Sequence[float], network_halves: tuple[Sequence[float], Sequence[float]],
                backbone_halves: tuple[Sequence[float], Sequence[float]]) -> SharedPart:
    """Network minus backbone per arch; its noise from the two halves' differences, as in `judge_predictor`."""
    diff = [float(a) - float(b) for a, b in zip(network, backbone, strict=True)]
    half = [[float(a) - float(b) for a, b in zip(nh, bh, strict=True)] for nh, bh in zip(network_halves, backbone_halves)]
    n = len(diff)
    if n < 2:
        raise ValueError("the shared part needs at least 2 archs")
    mean, net_mean = sum(diff) / n, sum(network) / n
    return SharedPart(
        n=n, median_ms=percentile(diff, 50), std_ms=math.sqrt(sum((d - mean) ** 2 for d in diff) / (n - 1)),
        noise_ms=math.sqrt(sum((a - b) ** 2 for a, b in zip(*half)) / n) / 2,
        network_std_ms=math.sqrt(sum((float(m) - net_mean) ** 2 for m in network) / (n - 1)),
    )


VERDICTS = ("faster", "slower", "indistinguishable")


@dataclass(frozen=True)
class Comparison(JsonRecord):
    """`other` against `baseline`: the median ratio other / baseline with its confidence interval and verdict
    ('faster' means other is faster). `method` says how the interval was found; `note` why, when it is a fallback."""

    ratio: float
    low: float
    high: float
    confidence: float
    baseline_cv: float
    other_cv: float
    verdict: str
    method: str
    note: str | None = None


def median_ratio_interval(baseline: Sequence[float], other: Sequence[float], confidence: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of median(other) / median(baseline) by a moving-block bootstrap.

    Timed runs are a time series: a slow phase of another process spans consecutive runs, so resampling single
    runs would understate the median's uncertainty; blocks of about n^(1/3) consecutive runs keep that structure.
    """
    rng = np.random.default_rng(seed)

    def medians(samples: Sequence[float]) -> np.ndarray:
        x = np.asarray(samples, dtype=float)
        n = len(x)
        block = max(1, round(n ** (1 / 3)))
        starts = rng.integers(0, n - block + 1, size=(resamples, -(-n // block)))
        index = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :n]
        return np.median(x[index], axis=1)

    ratios = medians(other) / medians(baseline)
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


def compare_latencies(baseline: TimingStats, other: TimingStats, baseline_samples: Sequence[float] = (),
                      other_samples: Sequence[float] = (), confidence: float = 0.95, k: float = 2.0,
                      seed: int = 0) -> Comparison:
    """Faster / slower / indistinguishable: from the bootstrap interval of the median ratio when both results
    carry their raw samples; otherwise (results written before samples were kept) from the band of k combined
    CVs around 1, which ignores how many runs there were, and says so."""
    if not 0 < confidence < 1:
        raise DetnasError(f"--confidence {confidence}: give a level between 0 and 1, e.g. 0.95")
    ratio = other.median_ms / baseline.median_ms
    if len(baseline_samples) >= 2 and len(other_samples) >= 2:
        low, high = median_ratio_interval(baseline_samples, other_samples, confidence, seed=seed)
        method, note = f"block bootstrap of {len(baseline_samples)} vs {len(other_samples)} runs", None
    else:
        band = max(k * math.sqrt(baseline.cv**2 + other.cv**2), 0.01)
        low, high = ratio - band, ratio + band
        method = f"band of {k:g} combined CVs (at least 1 %)"
        note = "a result has no raw samples (written by an older detnas): no confidence interval; re-measure both"
    verdict = "faster" if high < 1 else "slower" if low > 1 else "indistinguishable"
    return Comparison(ratio, low, high, confidence, baseline.cv, other.cv, verdict, method, note)
