"""/api/v1/studies/{study}/plots: the study page's plot data (Plotly figures), read from SQL."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from service.api.deps import OptunaStorageDep, SessionDep, StudyDep
from service.errors import ErrorResponse
from service.plots import study_plots

router = APIRouter(prefix="/api/v1/studies", tags=["dashboard"])


@router.get(
    "/{study}/plots",
    responses={404: {"model": ErrorResponse, "description": "No such study"}},
)
def get_plots(
    request: Request,
    session: SessionDep,
    study: StudyDep,
    storage: OptunaStorageDep,
    include_pruned: Annotated[
        bool, Query(description="also plot pruned, cancelled and failed trials")
    ] = False,
    curve_metric: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="metric of the learning curves (default: the study's objective metric); "
            "`plots.learning_curves.metrics` lists the ones the plotted trials logged",
        ),
    ] = None,
) -> dict[str, Any]:
    """Plot data of the study page (Plotly figures), read from SQL.

    `plots` holds `history`, `importance`, `slices` (one per searched parameter), `parallel`,
    `learning_curves` (with `metric`, the one drawn, and `metrics`, every one the top trials
    logged per epoch), `gap`, `calibration` and `sparsity`; each is
    ``{"data": [...], "layout": {...}}`` with an optional `note` saying why it is empty or
    partial, and how to get it.
    """
    result = study_plots(session, study, include_pruned, curve_metric)
    result["optuna_study_id"] = None
    if getattr(request.app.state, "optuna_dashboard", None) is not None:
        # an Optuna study deleted from optuna-dashboard itself: no link
        with contextlib.suppress(KeyError):
            result["optuna_study_id"] = storage.get().get_study_id_from_name(study.name)
    return result
