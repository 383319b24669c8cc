"""Statistics over repeated runs of one configuration: mean, spread, a Student-t 95 % interval,
and the ranking of configurations by their mean.

Pure functions over numbers (no database, no Optuna): the study service ranks confirmed
configurations with them, the worker stores the ranked best, and the tune gate can import them.

- `run_stats(values)`: n, mean, sample standard deviation (ddof 1) and the two-sided 95 %
  interval of the mean, ``mean ± t(0.975, n-1) · std / sqrt(n)`` (None for n < 2: one run
  says nothing about its spread).
- `rank_by_mean(configs, maximize)`: configurations with at least two finite runs, best mean
  first (ties: the smaller search trial number).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats as scipy_stats

__all__ = ["ConfigRuns", "RunStats", "best_by_mean", "rank_by_mean", "run_stats"]

CONFIDENCE = 0.95


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
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
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
