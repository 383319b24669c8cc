"""Pareto front, infeasible trials and confirmed configs on constructed trial rows."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from service.plots import figures, tradeoffs
from service.plots.repository import PlotRow
from service.plots.tradeoffs import Objective

LOSS_ECE = [Objective("val_loss", maximize=False), Objective("val_ece", maximize=False)]


def _row(number: int, state: str = "complete", **fields: Any) -> PlotRow:
    return PlotRow(
        id=100 + number,
        number=number,
        state=state,
        value=fields.pop("value", None),
        params={},
        val_ece=None,
        epochs_run=3,
        **fields,
    )


def test_pareto_front_of_two_objectives_among_the_feasible_trials() -> None:
    rows = [
        _row(0, values=[0.30, 0.10], feasible=True),  # front
        _row(1, values=[0.20, 0.20], feasible=True),  # front
        _row(2, values=[0.35, 0.15], feasible=True),  # dominated by 0
        _row(3, values=[0.10, 0.05], feasible=False),  # best on both, but breaks a constraint
        _row(4, "fail"),
    ]
    figure = tradeoffs.pareto(rows, LOSS_ECE)
    assert figure is not None
    assert figure["front"] == [1, 0]  # by the first objective
    traces = {t["name"]: t for t in figure["data"]}
    assert traces["Pareto front"]["x"] == [0.20, 0.30]
    assert traces["Pareto front"]["mode"] == "lines+markers"
    assert traces["complete"]["text"] == ["trial 2"]
    assert traces["infeasible"]["text"] == ["trial 3"]
    assert traces["infeasible"]["marker"]["symbol"] == "x"
    assert "infeasible" in figure["note"]
    assert figure["layout"]["xaxis"]["title"]["text"] == "val_loss (min)"


def test_pareto_front_follows_each_direction() -> None:
    acc_ece = [Objective("val_acc", maximize=True), Objective("val_ece", maximize=False)]
    rows = [
        _row(0, values=[0.9, 0.10]),
        _row(1, values=[0.8, 0.05]),
        _row(2, values=[0.7, 0.08]),  # dominated by 1: lower accuracy, higher ECE
    ]
    figure = tradeoffs.pareto(rows, acc_ece)
    assert figure is not None and sorted(figure["front"]) == [0, 1]
    assert "note" not in figure  # no constraints: nothing is infeasible


def test_pareto_needs_several_objectives_and_notes_more_than_two() -> None:
    assert tradeoffs.pareto([_row(0, values=[0.1])], LOSS_ECE[:1]) is None
    three = [*LOSS_ECE, Objective("gap", maximize=False)]
    figure = tradeoffs.pareto([_row(0, values=[0.1, 0.2, 0.3])], three)
    assert figure is not None and figure["data"] == []
    assert "3 objectives" in figure["note"] and "pareto" in figure["note"]
    waiting = tradeoffs.pareto([_row(0, "running")], LOSS_ECE)
    assert waiting is not None and waiting["note"] == figures.NO_COMPLETE_TRIAL


def test_history_marks_infeasible_trials_and_its_best_line_skips_them() -> None:
    rows = [
        _row(0, value=0.5, feasible=True),
        _row(1, value=0.1, feasible=False),  # lowest, but breaks a constraint
        _row(2, value=0.4, feasible=True),
    ]
    figure = figures.history(rows, "val_loss", maximize=False)
    traces = {t["name"]: t for t in figure["data"]}
    assert traces["infeasible"]["x"] == [1]
    assert traces["complete"]["x"] == [0, 2]
    assert traces["best so far"]["y"] == [0.5, 0.4]
    # without constraints (feasible None) nothing changes
    plain = figures.history([_row(0, value=0.5), _row(1, value=0.1)], "val_loss", False)
    assert [t["name"] for t in plain["data"]] == ["complete", "best so far"]


def test_confirmed_configs_are_ranked_by_mean_with_their_spread() -> None:
    rows = [_row(3, value=0.20), _row(5, value=0.18), _row(7, value=0.30)]
    extras = [
        _row(10, value=0.22, role="confirm", repeat_of=3),
        _row(11, value=0.21, role="confirm", repeat_of=3),
        _row(12, value=0.26, role="confirm", repeat_of=5),  # the lucky single run
        _row(13, value=0.25, role="confirm", repeat_of=5),
        _row(14, value=0.9, role="reference"),  # not a confirmation run
    ]
    figure = tradeoffs.confirmation(rows, extras, "val_loss", maximize=False)
    assert figure is not None
    assert figure["winner"] == 3  # best mean, although trial 5 had the best single run
    configs = figure["configs"]
    assert [c["number"] for c in configs] == [3, 5]
    assert configs[0]["n"] == 3
    assert configs[0]["mean"] == pytest.approx(statistics.fmean([0.20, 0.22, 0.21]))
    assert configs[0]["std"] == pytest.approx(statistics.stdev([0.20, 0.22, 0.21]))
    traces = {t["name"]: t for t in figure["data"]}
    assert traces["mean ± std"]["error_y"]["array"] == [c["std"] for c in configs]
    assert traces["confirmed winner"]["x"] == ["trial 3"]
    assert len(traces["runs"]["y"]) == 6


def test_confirmation_ranks_by_the_study_direction_and_is_absent_without_repeats() -> None:
    rows = [_row(1, value=0.8), _row(2, value=0.9)]
    extras = [
        _row(3, value=0.85, role="confirm", repeat_of=1),
        _row(4, value=0.70, role="confirm", repeat_of=2),
    ]
    figure = tradeoffs.confirmation(rows, extras, "val_acc", maximize=True)
    assert figure is not None and figure["winner"] == 1  # mean 0.825 > 0.8
    assert tradeoffs.confirmation(rows, [], "val_acc", maximize=True) is None
