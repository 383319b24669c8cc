"""What "better" means for an objective value: the one rule, for trainers and the service alike.

- `maximizes(direction)`: the one place a study's ``direction`` string is read.
- `is_better(value, than, maximize=...)`: strictly better in that direction; a NaN or infinite
  value never is, and any finite value beats ``None`` (nothing yet).
- `BestEpoch` and `improved_best`: a trial's best epoch so far, tracked the same way by the
  objective (early stopping, best weights) and by the worker (live progress in the database).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BestEpoch", "improved_best", "is_better", "maximizes"]


def maximizes(direction: str) -> bool:
    """True for ``"maximize"``, False for ``"minimize"`` (a study's ``direction``)."""
    return direction == "maximize"


def is_better(value: float, than: float | None, *, maximize: bool) -> bool:
    """True when `value` is strictly better than `than` (None: nothing to beat yet)."""
    if not math.isfinite(value):
        return False
    if than is None:
        return True
    return value > than if maximize else value < than


@dataclass(frozen=True)
class BestEpoch:
    """A trial's best epoch so far: its 0-based index, the objective metric's value then, and
    every metric logged by then."""

    epoch: int
    value: float
    metrics: dict[str, float]


def improved_best(
    best: BestEpoch | None,
    epoch: int,
    metrics: Mapping[str, float],
    metric: str,
    *,
    maximize: bool,
) -> BestEpoch | None:
    """The new best epoch when this epoch's `metric` improves on `best` (strictly, as Lightning's
    EarlyStopping counts it), else None (also when the epoch did not log `metric`)."""
    value = metrics.get(metric)
    if value is None or not is_better(value, best.value if best else None, maximize=maximize):
        return None
    return BestEpoch(epoch=epoch, value=value, metrics=dict(metrics))
