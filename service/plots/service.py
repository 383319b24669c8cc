"""Assemble a study's plots from SQL (through `service.plots.repository`).

One request reads the newest `MAX_PLOT_TRIALS` trials' flat columns and the epochs of a handful
of top trials: a few indexed queries, never an Optuna `Study`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.models import StudyRecord, TrialState
from service.plots import figures, tradeoffs
from service.plots.repository import epochs_by_trial, extra_rows, plot_rows
from trainers.best import maximizes

__all__ = ["MAX_PLOT_TRIALS", "TOP_TRIALS", "study_plots"]

MAX_PLOT_TRIALS = 5_000
TOP_TRIALS = 8
MAX_EXTRA_TRIALS = 1_000  # reference and confirmation runs read for the confirmation plot

_SHOWN = (TrialState.complete.value,)
_SHOWN_ALL = (
    TrialState.complete.value,
    TrialState.pruned.value,
    TrialState.cancelled.value,
    TrialState.fail.value,
)


def study_plots(
    session: Session, study: StudyRecord, include_pruned: bool, curve_metric: str | None = None
) -> dict[str, Any]:
    """Every plot of the study page as Plotly figures, keyed by plot name.

    `include_pruned` adds pruned, cancelled and failed trials (hidden by default: their values
    come from partial trainings and would blur the picture). `curve_metric` picks the metric of
    the learning curves (default: the study's objective metric).
    """
    states = _SHOWN_ALL if include_pruned else _SHOWN
    rows, truncated = plot_rows(session, study.id, states, MAX_PLOT_TRIALS)
    maximize = maximizes(study.direction)
    axes = figures.searched_axes(study.spec)
    top = figures.top_trials(rows, maximize, TOP_TRIALS, include_pruned)
    epochs = epochs_by_trial(session, [r.id for r in top])
    searched = {a.name for a in axes}
    extras = extra_rows(session, study.id, MAX_EXTRA_TRIALS)
    optional = {
        "pareto": tradeoffs.pareto(rows, _objectives(study.spec)),
        "confirmation": tradeoffs.confirmation(rows, extras, study.metric, maximize),
    }
    return {
        "study_id": study.id,
        "status": study.status,
        "include_pruned": include_pruned,
        "n_trials_plotted": len(rows),
        "truncated": truncated,
        "plots": {
            "history": figures.history(rows, study.metric, maximize),
            "importance": figures.importance(rows, axes),
            "slices": figures.slices(rows, axes, study.metric),
            "parallel": figures.parallel(rows, axes, study.metric),
            "learning_curves": figures.learning_curves(
                top, epochs, study.metric, curve_metric or study.metric
            ),
            "gap": figures.gap_curves(top, epochs),
            "calibration": figures.calibration(rows, "label_smoothing" in searched),
            "sparsity": figures.sparsity(rows, axes),
            # only for studies that have them: several objectives, confirmation runs
            **{name: figure for name, figure in optional.items() if figure is not None},
        },
    }


def _objectives(spec: dict[str, Any]) -> list[tradeoffs.Objective]:
    """The stored spec's objectives in order: one {metric, direction} or a list of them."""
    objective = spec.get("objective")
    items = objective if isinstance(objective, list) else [objective]
    return [
        tradeoffs.Objective(str(o["metric"]), maximizes(str(o.get("direction", "minimize"))))
        for o in items
        if isinstance(o, dict) and "metric" in o
    ]
