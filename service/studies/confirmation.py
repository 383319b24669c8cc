"""Statistics over repeated runs of one configuration: mean, spread, a Student-t 95 % interval,
and the ranking of configurations by their mean.

Pure functions over numbers (no database, no Optuna): the study service ranks confirmed
configurations with them, the worker stores the ranked best, and the tune gate can import them.

- `run_stats(values)`: n, mean, sample standard deviation (ddof 1) and the two-sided 95 %
  interval of the mean, ``mean ± t(0.975, n-1) · std / sqrt(n)`` (None for n < 2: one run
  says nothing about its spread).
- `rank_by_mean(configs, maximize)`: configurations with at least two finite runs, best mean
  first (ties: the smaller search trial number).
- `welch_worsening(new, baseline, maximize, alpha)`: the one-sided Welch t-test of "new is
  worse" (the CI gate's test and racing's).
- `race_survivors(configs, maximize)`: racing's rule (``confirm.race``): the leader (best mean)
  stays, and so does every configuration the Welch test at `RACE_ALPHA` does not find worse
  than the leader.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats as scipy_stats

__all__ = [
    "RACE_ALPHA",
    "ConfigRuns",
    "RunStats",
    "WelchTest",
    "best_by_mean",
    "race_survivors",
    "rank_by_mean",
    "run_stats",
    "welch_worsening",
]

CONFIDENCE = 0.95
# racing drops a configuration once a one-sided Welch test says it is behind at this level
RACE_ALPHA = 0.05


@dataclass(frozen=True)
class RunStats:
    """Summary of the finite values of repeated runs."""

    n: int
    mean: float
    std: float | None  # sample standard deviation; None for one run
    ci95_low: float | None
    ci95_high: float | None


@dataclass(frozen=True)
class ConfigRuns:
    """One configuration: its search trial's number and the values of all its runs (the search
    run first, then its repeats), with the trial number of each run."""

    trial_number: int
    values: list[float] = field(default_factory=list)
    trial_numbers: list[int] = field(default_factory=list)

    def stats(self) -> RunStats | None:
        return run_stats(self.values)


def run_stats(values: Sequence[float], confidence: float = CONFIDENCE) -> RunStats | None:
    """n, mean, std and the Student-t interval of the finite `values`; None when there are none."""
    finite = _finite(values)
    n = len(finite)
    if n == 0:
        return None
    mean = statistics.fmean(finite)
    if n == 1:
        return RunStats(n=1, mean=mean, std=None, ci95_low=None, ci95_high=None)
    std = statistics.stdev(finite)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return RunStats(n=n, mean=mean, std=std, ci95_low=mean - half, ci95_high=mean + half)


def rank_by_mean(configs: Sequence[ConfigRuns], maximize: bool) -> list[ConfigRuns]:
    """Configurations with at least two finite runs, best mean first (ties: lower number)."""
    scored: list[tuple[float, int, ConfigRuns]] = []
    for config in configs:
        summary = config.stats()
        if summary is None or summary.n < 2:
            continue
        key = -summary.mean if maximize else summary.mean
        scored.append((key, config.trial_number, config))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [config for _, _, config in scored]


def best_by_mean(configs: Sequence[ConfigRuns], maximize: bool) -> ConfigRuns | None:
    """The confirmed configuration with the best mean, or None when none has two runs."""
    ranked = rank_by_mean(configs, maximize)
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class WelchTest:
    """A one-sided Welch t-test of "the new config is worse than the baseline's".

    ``worsening`` is the mean difference in the worse direction (new - baseline when
    minimizing, baseline - new when maximizing); the interval is its two-sided
    ``confidence`` = ``1 - 2 alpha`` Welch interval.
    """

    test: str
    alpha: float
    n: int
    mean: float
    std: float
    baseline_n: int
    baseline_mean: float
    baseline_std: float
    worsening: float
    p_value: float
    confidence: float
    interval_low: float
    interval_high: float

    @property
    def rejects(self) -> bool:
        """The test says the new config is worse (p < alpha)."""
        return self.p_value < self.alpha


def welch_worsening(
    new: Sequence[float], baseline: Sequence[float], *, maximize: bool, alpha: float
) -> WelchTest:
    """One-sided Welch t-test (scipy) of H0 "new is not worse" against H1 "new is worse".

    Both samples need at least two values. When both have zero spread the t statistic is
    undefined; then the difference is exact: p = 0 when the new mean is worse, else 1.
    """
    if len(new) < 2 or len(baseline) < 2:
        raise ValueError("the Welch test needs at least two values on each side")
    sign = -1.0 if maximize else 1.0  # worse = larger after the sign
    x = [sign * v for v in new]
    b = [sign * v for v in baseline]
    worsening = statistics.fmean(x) - statistics.fmean(b)
    confidence = 1.0 - 2.0 * alpha
    if statistics.stdev(x) == 0.0 and statistics.stdev(b) == 0.0:
        p_value = 0.0 if worsening > 0 else 1.0
        low = high = worsening
    else:
        one_sided = scipy_stats.ttest_ind(x, b, equal_var=False, alternative="greater")
        p_value = float(one_sided.pvalue)
        interval = scipy_stats.ttest_ind(x, b, equal_var=False).confidence_interval(confidence)
        low, high = float(interval.low), float(interval.high)
    return WelchTest(
        test="welch_one_sided",
        alpha=alpha,
        n=len(new),
        mean=statistics.fmean(new),
        std=statistics.stdev(new),
        baseline_n=len(baseline),
        baseline_mean=statistics.fmean(baseline),
        baseline_std=statistics.stdev(baseline),
        worsening=worsening,
        p_value=p_value,
        confidence=confidence,
        interval_low=low,
        interval_high=high,
    )


def race_survivors(
    configs: Sequence[ConfigRuns], maximize: bool, alpha: float = RACE_ALPHA
) -> list[ConfigRuns]:
    """The configurations still in the race, in their given order.

    The leader is the best mean over finite runs (ties: the smaller trial number). Any other
    configuration is dropped when the one-sided Welch test (`welch_worsening`) finds it worse
    than the leader at `alpha`; one without two finite runs on either side cannot be tested
    and stays, unless it has no finite run at all (every run diverged) while the leader has.
    """
    finite = {c.trial_number: _finite(c.values) for c in configs}
    scored = [c for c in configs if finite[c.trial_number]]
    if not scored:
        return list(configs)
    leader = min(
        scored,
        key=lambda c: (
            (-1.0 if maximize else 1.0) * statistics.fmean(finite[c.trial_number]),
            c.trial_number,
        ),
    )
    lead = finite[leader.trial_number]
    kept = []
    for config in configs:
        values = finite[config.trial_number]
        if config is leader or (values and not _behind(values, lead, maximize, alpha)):
            kept.append(config)
    return kept


def _behind(values: list[float], lead: list[float], maximize: bool, alpha: float) -> bool:
    """The Welch test finds `values` worse than `lead` (False when either has under 2 runs)."""
    if len(values) < 2 or len(lead) < 2:
        return False
    return welch_worsening(values, lead, maximize=maximize, alpha=alpha).rejects


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]
