"""The study page's figure builders on constructed trial rows (no database, no browser)."""

from __future__ import annotations

from typing import Any

import pytest

from service.plots import figures
from service.plots.figures import Axis
from service.plots.repository import PlotRow


def _row(number: int, state: str = "complete", **fields: Any) -> PlotRow:
    params = fields.pop("params", {})
    return PlotRow(
        id=100 + number,
        number=number,
        state=state,
        value=fields.pop("value", 0.5),
        params=params,
        val_ece=fields.pop("val_ece", None),
        epochs_run=3,
        **fields,
    )


# a plugin that logs only its own names: no val_loss, no gap, no ECE
PLUGIN_EPOCHS = {
    101: [{"epoch": e, "val_nll": 1.0 - 0.1 * e, "val_acc": 0.5 + 0.1 * e} for e in range(3)],
    102: [{"epoch": e, "val_nll": 1.2 - 0.1 * e, "val_acc": 0.4 + 0.1 * e} for e in range(2)],
}


def test_learning_curves_follow_the_objective_and_list_every_logged_metric() -> None:
    top = [_row(1), _row(2)]
    figure = figures.learning_curves(top, PLUGIN_EPOCHS, "val_nll", "val_nll")
    assert figure["metric"] == "val_nll"
    assert figure["metrics"] == ["val_nll", "val_acc"]  # the objective first
    assert [t["name"] for t in figure["data"]] == ["trial 1", "trial 2"]
    assert figure["data"][0]["y"] == [1.0, 0.9, 0.8]
    assert "note" not in figure

    chosen = figures.learning_curves(top, PLUGIN_EPOCHS, "val_nll", "val_acc")
    assert chosen["metric"] == "val_acc"
    assert chosen["data"][1]["y"] == [0.4, 0.5]


def test_learning_curves_of_an_unlogged_metric_say_which_ones_exist() -> None:
    figure = figures.learning_curves([_row(1)], PLUGIN_EPOCHS, "val_nll", "val_loss")
    assert figure["data"] == []
    assert "no top trial logged val_loss" in figure["note"]
    assert "val_nll, val_acc" in figure["note"]
    # before any epoch is recorded the note says so instead
    waiting = figures.learning_curves([_row(1)], {}, "val_nll", "val_nll")
    assert waiting["note"] == figures.NO_EPOCH
    assert waiting["metrics"] == []


def test_metric_names_skip_non_numbers_and_the_epoch() -> None:
    epochs = {1: [{"epoch": 0, "b": 1.0, "a": 2, "flag": True, "tag": "x", "obj": 0.3}]}
    assert figures.metric_names(epochs, "obj") == ["obj", "a", "b"]
    assert figures.metric_names(epochs, "missing") == ["a", "b", "obj"]


def test_panels_a_plugin_cannot_feed_say_why_and_how() -> None:
    rows = [_row(1, params={"label_smoothing": 0.1}), _row(2, params={"label_smoothing": 0.0})]
    gap = figures.gap_curves(rows, PLUGIN_EPOCHS)
    assert gap["data"] == []
    assert "logs no gap" in gap["note"] and "task='classification'" in gap["note"]
    assert "docs/trainers.md" in gap["note"]
    assert gap["layout"]["xaxis"]["visible"] is False  # no empty axes, only the reason

    calibration = figures.calibration(rows, smoothing_searched=True)
    assert calibration["data"] == []
    assert "logs no val_ece" in calibration["note"] and "Trainer(...)" in calibration["note"]

    sparsity = figures.sparsity(rows, [Axis("l1", log=True)])
    assert sparsity["data"] == []
    assert "near_zero_frac" in sparsity["note"]


@pytest.mark.parametrize("state", [None, "fail"])
def test_panels_of_a_study_without_a_completed_trial_say_so(state: str | None) -> None:
    """None yet, or only failed ones (the notes said "no trial has finished yet" and "no epoch
    has been recorded yet" beside failed trials that had finished and recorded epochs)."""
    rows = [] if state is None else [_row(0, state, value=None, val_ece=0.1)]
    assert figures.calibration(rows, True)["note"] == "no trial has completed yet"
    assert figures.sparsity(rows, [])["note"] == "no trial has completed yet"
    epochs = {100: [{"epoch": 0, "gap": 0.1}]}
    top = figures.top_trials(rows, maximize=False, k=5, with_pruned=True)
    assert figures.gap_curves(top, epochs)["note"] == (
        "no complete or pruned trial has recorded an epoch yet"
    )


def test_gap_curves_draw_when_the_trainer_logs_gap() -> None:
    epochs = {101: [{"epoch": 0, "gap": 0.1}, {"epoch": 1, "gap": 0.3}]}
    gap = figures.gap_curves([_row(1)], epochs)
    assert gap["data"][0]["y"] == [0.1, 0.3] and "note" not in gap


def test_sparsity_plots_near_zero_share_vs_l1_and_weight_norm_vs_weight_decay() -> None:
    rows = [
        _row(1, params={"l1": 1e-5, "weight_decay": 1e-4}, near_zero_frac=0.1, weight_l2=9.0),
        _row(2, params={"l1": 1e-3, "weight_decay": 1e-2}, near_zero_frac=0.6, weight_l2=3.0),
        _row(3, "pruned", params={"l1": 1e-4, "weight_decay": 1e-3}, near_zero_frac=0.3),
    ]
    axes = [Axis("weight_decay", log=True), Axis("l1", log=True)]
    figure = figures.sparsity(rows, axes)
    left = [t for t in figure["data"] if t.get("xaxis") is None]
    right = [t for t in figure["data"] if t.get("xaxis") == "x2"]
    by_state = {t["name"]: t for t in left}
    assert by_state["complete"]["x"] == [1e-5, 1e-3]
    assert by_state["complete"]["y"] == [0.1, 0.6]
    assert by_state["pruned"]["y"] == [0.3]
    assert [t["y"] for t in right] == [[9.0, 3.0]]  # the pruned trial has no weight_l2
    assert right[0]["yaxis"] == "y2"
    layout = figure["layout"]
    assert layout["xaxis"]["type"] == "log" and layout["xaxis2"]["type"] == "log"
    assert "note" not in figure

    # L1 fixed: drawn on a linear axis (a fixed 0 has no log), and the panel says why it is flat
    fixed = figures.sparsity(rows, [Axis("weight_decay", log=True)])
    assert fixed["layout"]["xaxis"].get("type") is None
    assert "L1 λ is fixed" in fixed["note"]


def test_calibration_draws_ece_against_label_smoothing() -> None:
    rows = [
        _row(1, params={"label_smoothing": 0.0}, val_ece=0.08),
        _row(2, params={"label_smoothing": 0.1}, val_ece=0.03),
    ]
    figure = figures.calibration(rows, smoothing_searched=True)
    assert figure["data"][0]["x"] == [0.0, 0.1] and figure["data"][0]["y"] == [0.08, 0.03]
    assert figure["data"][0]["text"] == ["trial 1", "trial 2"]
    assert "note" not in figure
    fixed = figures.calibration(rows, smoothing_searched=False)
    assert "fixed" in fixed["note"]
