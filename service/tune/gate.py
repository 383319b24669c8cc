"""The verdict: the best value against `--min-score`, `--max-score` and a baseline.

Against a baseline, two rules:

- single runs (either side has fewer than 2 values): the new best single run may be worse
  than the baseline's best single run by at most ``max_regression`` (the rule since the first
  release). A side with repeats is compared by its best single search run here, not by its
  mean, so a confirmed mean never meets the other side's luckiest run;
- repeats on both sides (the best config's run values, ``confirmation.values``): a regression
  is flagged when the new mean is worse than the baseline's mean by more than
  ``max_regression`` AND a one-sided Welch t-test (H0: the new config is not worse; unequal
  variances) rejects at ``alpha``. The check reports the p-value and the ``1 - 2 alpha``
  two-sided interval of the worsening, whose lower end is above 0 exactly when the test
  rejects.

Beside either rule, the best config's runs that failed (``confirmation.failed``: diverged or
raised while re-training) must be no more than the baseline's: a config that no longer trains
on every seed has regressed, whatever its finite runs say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from service.studies.confirmation import WelchTest, welch_worsening
from trainers.best import maximizes

__all__ = [
    "ALPHA_MAX",
    "DEFAULT_ALPHA",
    "Check",
    "GateOptions",
    "Verdict",
    "WelchTest",
    "alpha_error",
    "evaluate",
    "welch_worsening",
]

DEFAULT_ALPHA = 0.05
ALPHA_MAX = 0.5  # a one-sided test at alpha > 0.5 would flag a config that looks better


def alpha_error(alpha: float) -> str | None:
    """Why `alpha` is not a usable significance level (None when it is: 0 < alpha <= 0.5)."""
    if not (0.0 < alpha <= ALPHA_MAX):  # also refuses NaN
        return f"must be in (0, {ALPHA_MAX:g}] (the one-sided test's significance level)"
    return None


@dataclass(frozen=True)
class GateOptions:
    """The thresholds given on the command line (all optional)."""

    min_score: float | None = None
    max_score: float | None = None
    baseline_value: float | None = None
    baseline_path: str | None = None
    max_regression: float = 0.0
    alpha: float = DEFAULT_ALPHA
    # the baseline best config's run values (its repeats); None or one value: single runs
    baseline_values: tuple[float, ...] | None = None
    # the baseline's best single search run (None: `baseline_value`) and its failed repeats
    baseline_single: float | None = None
    baseline_failed: int = 0

    def __post_init__(self) -> None:
        why = alpha_error(self.alpha)
        if why:
            raise ValueError(f"alpha {why}")

    @property
    def empty(self) -> bool:
        return self.min_score is None and self.max_score is None and self.baseline_value is None


@dataclass(frozen=True)
class Check:
    """One rule: `value` compared with `limit` (`op` is ``>=`` or ``<=``).

    For a baseline with repeats on both sides, `value` is the new mean, `limit` the baseline
    mean +- max_regression, and `test` the Welch test; the check fails only when the value is
    beyond the limit and the test rejects.
    """

    name: str  # min_score | max_score | baseline | failed_runs
    op: str
    limit: float
    value: float | None
    passed: bool
    message: str
    test: WelchTest | None = None


@dataclass(frozen=True)
class Verdict:
    """Every check and whether they all passed (no checks: passed)."""

    passed: bool
    checks: list[Check] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # `test` only on a statistical check: single-run checks keep their earlier shape
        checks = [
            {k: v for k, v in asdict(c).items() if k != "test" or v is not None}
            for c in self.checks
        ]
        return {"passed": self.passed, "checks": checks}


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _check(name: str, value: float | None, op: str, limit: float, what: str) -> Check:
    if value is None:
        return Check(name, op, limit, None, False, f"{what}: no trial completed")
    passed = value >= limit if op == ">=" else value <= limit
    word = "ok" if passed else "missed"
    return Check(name, op, limit, value, passed, f"{what}: {_fmt(value)} {op} {_fmt(limit)} {word}")


def _repeats(values: Sequence[float] | None) -> list[float] | None:
    """The finite values as a list when there are at least two (repeats), else None (a single
    run). A run without a finite value (diverged) says nothing about the mean, as in /best."""
    kept = [float(v) for v in values or () if math.isfinite(v)]
    return kept if len(kept) >= 2 else None


def _statistical_check(
    metric: str, direction: str, new: list[float], baseline: list[float], options: GateOptions
) -> Check:
    maximize = maximizes(direction)
    test = welch_worsening(new, baseline, maximize=maximize, alpha=options.alpha)
    tolerance = options.max_regression
    if maximize:
        limit, op = test.baseline_mean - tolerance, ">="
    else:
        limit, op = test.baseline_mean + tolerance, "<="
    beyond = test.worsening > tolerance
    passed = not (beyond and test.rejects)
    word = ("within noise" if beyond else "ok") if passed else "regressed"
    message = (
        f"{metric} mean {_fmt(test.mean)} (n={test.n}, sd {test.std:.3g}) vs baseline mean "
        f"{_fmt(test.baseline_mean)} (n={test.baseline_n}, sd {test.baseline_std:.3g}): "
        f"worse by {test.worsening:+.4g} ({test.confidence:.0%} interval "
        f"[{test.interval_low:.4g}, {test.interval_high:.4g}]), one-sided Welch "
        f"p = {test.p_value:.3g} (alpha {_fmt(test.alpha)}, max regression {_fmt(tolerance)}, "
        f"{direction}) {word}"
    )
    return Check("baseline", op, limit, test.mean, passed, message, test)


def evaluate(
    best: float | None,
    metric: str,
    direction: str,
    options: GateOptions,
    values: Sequence[float] | None = None,
    single: float | None = None,
    failed: int = 0,
) -> Verdict:
    """Compare the best value with every threshold that was given.

    `values` are the new best config's run values (its repeats), if any; `single` its best
    single search run (None: `best`), `failed` its runs that failed. With at least two values
    and at least two ``options.baseline_values``, the baseline check is statistical (see the
    module doc). Otherwise the best single runs are compared in the study's direction: when
    minimizing, the new one may be at most ``baseline + max_regression``; when maximizing, at
    least ``baseline - max_regression``.
    """
    checks: list[Check] = []
    if options.min_score is not None:
        checks.append(_check("min_score", best, ">=", options.min_score, f"{metric} >= min-score"))
    if options.max_score is not None:
        checks.append(_check("max_score", best, "<=", options.max_score, f"{metric} <= max-score"))
    if options.baseline_value is not None:
        new, old = _repeats(values), _repeats(options.baseline_values)
        if new is not None and old is not None:
            checks.append(_statistical_check(metric, direction, new, old, options))
        else:
            checks.append(_single_run_check(best, metric, direction, options, values, single))
        if failed > options.baseline_failed:
            checks.append(
                Check(
                    "failed_runs",
                    "<=",
                    options.baseline_failed,
                    failed,
                    False,
                    f"{metric}: {failed} of the best config's runs failed (diverged or raised) "
                    f"vs {options.baseline_failed} in the baseline: regressed",
                )
            )
    return Verdict(passed=all(c.passed for c in checks), checks=checks)


def _single_run_check(
    best: float | None,
    metric: str,
    direction: str,
    options: GateOptions,
    values: Sequence[float] | None,
    single: float | None,
) -> Check:
    """Today's rule on single runs; a side with repeats gives its best single search run."""
    assert options.baseline_value is not None
    repeats = bool(values) or bool(options.baseline_values)
    new = single if single is not None and best is not None else best
    old = options.baseline_value if options.baseline_single is None else options.baseline_single
    tolerance = options.max_regression
    if maximizes(direction):
        limit, op = old - tolerance, ">="
    else:
        limit, op = old + tolerance, "<="
    subject = f"{metric} best single run vs baseline's" if repeats else f"{metric} vs baseline"
    what = f"{subject} {_fmt(old)} (max regression {_fmt(tolerance)}, {direction})"
    return _check("baseline", new, op, limit, what)
