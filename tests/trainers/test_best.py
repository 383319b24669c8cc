"""`trainers.best`: the one rule for which objective value is better, and a trial's best epoch."""

from __future__ import annotations

import math

import pytest

from trainers.best import BestEpoch, improved_best, is_better, maximizes


@pytest.mark.parametrize(
    ("value", "than", "maximize", "expected"),
    [
        (0.2, 0.3, False, True),
        (0.3, 0.2, False, False),
        (0.3, 0.2, True, True),
        (0.2, 0.3, True, False),
        (0.2, 0.2, False, False),  # strictly better: a tie does not improve
        (0.2, 0.2, True, False),
        (5.0, None, False, True),  # anything finite beats nothing yet
        (math.nan, None, False, False),
        (math.inf, 1.0, True, False),
        (-math.inf, 1.0, False, False),
    ],
)
def test_is_better(value: float, than: float | None, maximize: bool, expected: bool) -> None:
    assert is_better(value, than, maximize=maximize) is expected


def test_maximizes_reads_the_direction() -> None:
    assert maximizes("maximize") and not maximizes("minimize")


def test_improved_best_follows_the_epochs_that_improve() -> None:
    epochs = [{"val_loss": 0.5, "acc": 0.1}, {"val_loss": 0.4}, {"val_loss": 0.45}, {"acc": 1.0}]
    best: BestEpoch | None = None
    seen = []
    for epoch, metrics in enumerate(epochs):
        new = improved_best(best, epoch, metrics, "val_loss", maximize=False)
        seen.append(new is not None)
        best = new or best
    assert seen == [True, True, False, False]  # epoch 3 did not log the metric
    assert best == BestEpoch(epoch=1, value=0.4, metrics={"val_loss": 0.4})
