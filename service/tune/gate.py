"""The verdict: the best value against `--min-score`, `--max-score` and a baseline's best value."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trainers.best import maximizes

__all__ = ["Check", "GateOptions", "Verdict", "evaluate"]


@dataclass(frozen=True)
class GateOptions:
    """The thresholds given on the command line (all optional)."""

    min_score: float | None = None
    max_score: float | None = None
    baseline_value: float | None = None
    baseline_path: str | None = None
    max_regression: float = 0.0

    @property
    def empty(self) -> bool:
        return self.min_score is None and self.max_score is None and self.baseline_value is None


@dataclass(frozen=True)
class Check:
    """One rule: `value` compared with `limit` (`op` is ``>=`` or ``<=``)."""

    name: str  # min_score | max_score | baseline
    op: str
    limit: float
    value: float | None
    passed: bool
    message: str


@dataclass(frozen=True)
class Verdict:
    """Every check and whether they all passed (no checks: passed)."""

    passed: bool
    checks: list[Check] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _check(name: str, value: float | None, op: str, limit: float, what: str) -> Check:
    if value is None:
        return Check(name, op, limit, None, False, f"{what}: no trial completed")
    passed = value >= limit if op == ">=" else value <= limit
    word = "ok" if passed else "missed"
    return Check(name, op, limit, value, passed, f"{what}: {_fmt(value)} {op} {_fmt(limit)} {word}")


def evaluate(best: float | None, metric: str, direction: str, options: GateOptions) -> Verdict:
    """Compare the best value with every threshold that was given.

    The baseline is compared in the study's direction: when minimizing, the best may be at most
    ``baseline + max_regression``; when maximizing, at least ``baseline - max_regression``.
    """
    checks: list[Check] = []
    if options.min_score is not None:
        checks.append(_check("min_score", best, ">=", options.min_score, f"{metric} >= min-score"))
    if options.max_score is not None:
        checks.append(_check("max_score", best, "<=", options.max_score, f"{metric} <= max-score"))
    if options.baseline_value is not None:
        tolerance = options.max_regression
        if maximizes(direction):
            limit, op = options.baseline_value - tolerance, ">="
        else:
            limit, op = options.baseline_value + tolerance, "<="
        what = (
            f"{metric} vs baseline {_fmt(options.baseline_value)} "
            f"(max regression {_fmt(tolerance)}, {direction})"
        )
        checks.append(_check("baseline", best, op, limit, what))
    return Verdict(passed=all(c.passed for c in checks), checks=checks)
