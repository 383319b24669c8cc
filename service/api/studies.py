"""/api/v1/studies: submit, list, detail, trials, one trial, best, cancel. Handlers stay thin."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel

from service.api.deps import OptunaStorageDep, SessionDep, SettingsDep, StudyDep
from service.errors import ErrorResponse
from service.models import StudyStatus, TrialState
from service.spec import StudySpec
from service.studies import service
from service.studies.repository import TrialSort
from service.studies.schemas import (
    BestResult,
    Page,
    StudyDetail,
    StudySummary,
    TrialDetail,
    TrialSummary,
)

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such study (or trial)"}
}
MAX_PAGE = 500
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (1..{MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, le=service.MAX_ID, description="rows to skip")]


def _json(model: BaseModel) -> Response:
    """`model` as the JSON body FastAPI would send for the route's `response_model`.

    The service built `model` by validating it; handing FastAPI the model would validate it
    again (in one more threadpool hop for a sync route) before serializing. The reads return
    this Response instead and keep `response_model=` on the route for the OpenAPI schema.
    """
    return Response(model.model_dump_json(), media_type="application/json")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyDetail,
    responses={
        409: {"model": ErrorResponse, "description": "A study with this name exists"},
        429: {"model": ErrorResponse, "description": "REGTUNE_MAX_QUEUED_STUDIES reached"},
    },
)
def create_study(
    spec: StudySpec, session: SessionDep, storage: OptunaStorageDep, settings: SettingsDep
) -> StudyDetail:
    """Submit a study spec. The study starts `queued`; workers pick it up."""
    return service.create_study(session, storage, spec, max_active=settings.max_queued_studies)


@router.get("", response_model=Page[StudySummary])
def list_studies(
    session: SessionDep,
    status_: Annotated[
        list[StudyStatus] | None, Query(alias="status", description="repeat to match several")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """Studies, newest first, with progress and best value."""
    return _json(service.list_studies(session, status_, limit, offset))


@router.get("/{study}", response_model=StudyDetail, responses=NOT_FOUND)
def get_study(session: SessionDep, study: StudyDep) -> Response:
    """Spec, status, progress counts and the best trial."""
    return _json(service.study_detail(session, study))


@router.get("/{study}/trials", response_model=Page[TrialSummary], responses=NOT_FOUND)
def list_trials(
    session: SessionDep,
    study: StudyDep,
    state: Annotated[
        list[TrialState] | None, Query(description="repeat to match several states")
    ] = None,
    sort: Annotated[
        TrialSort, Query(description="`number` or `value`; a leading `-` sorts descending")
    ] = "number",
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """Trials flattened: params, state, value, best epoch, epochs run, duration, metrics."""
    return _json(service.list_trials(session, study, state, sort, limit, offset))


@router.get("/{study}/trials/{number}", response_model=TrialDetail, responses=NOT_FOUND)
def get_trial(
    session: SessionDep, study: StudyDep, number: Annotated[int, Path(ge=0, le=service.MAX_ID)]
) -> Response:
    """One trial with its per-epoch learning curves."""
    return _json(service.trial_detail(session, study, number))


@router.get(
    "/{study}/best",
    response_model=BestResult,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "No completed trial yet"},
    },
)
def get_best(session: SessionDep, study: StudyDep) -> Response:
    """Best parameters and metrics so far (`final` tells whether the study has ended)."""
    return _json(service.best_result(session, study))


@router.post(
    "/{study}/cancel",
    response_model=StudyDetail,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Study already ended"}},
)
def cancel_study(session: SessionDep, study: StudyDep) -> StudyDetail:
    """Stop handing out trials; running trials stop at their next epoch."""
    return service.cancel_study(session, study)
