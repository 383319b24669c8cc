"""Metric definitions on hand-computed cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainers.metrics import ClassificationAccumulator, expected_calibration_error


def test_ece_hand_computed() -> None:
    # Confidences 0.95 (right), 0.62 (wrong), 0.78 (right), 0.83 (right) each alone in a bin;
    # 0.72 (right) and 0.73 (wrong) share bin 10 ((10/15, 11/15]).
    probs = torch.tensor(
        [[0.95, 0.05], [0.62, 0.38], [0.22, 0.78], [0.17, 0.83], [0.72, 0.28], [0.27, 0.73]]
    )
    labels = torch.tensor([0, 1, 1, 1, 0, 0])
    expected = (0.05 + 0.62 + 0.22 + 0.17 + 2 * abs(0.5 - 0.725)) / 6
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-6)


def test_ece_zero_when_confidence_matches_accuracy() -> None:
    # Four samples at confidence 0.75, three right: accuracy 0.75 in that bin.
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-7)


def test_accumulator_over_batches_equals_whole_set() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    acc = ClassificationAccumulator()
    for start in range(0, 50, 7):
        acc.update(logits[start : start + 7], labels[start : start + 7])
    out = acc.compute("val")
    assert float(out["val_loss"]) == pytest.approx(float(F.cross_entropy(logits, labels)), 1e-5)
    assert float(out["val_acc"]) == pytest.approx(
        float((logits.argmax(1) == labels).float().mean())
    )
    assert float(out["val_ece"]) == pytest.approx(
        expected_calibration_error(torch.softmax(logits, 1), labels), 1e-6
    )
