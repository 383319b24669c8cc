"""/healthz and /api/v1/trainers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service import __version__
from service.studies import service
from service.studies.schemas import Health, TrainerInfo

router = APIRouter()


@router.get(
    "/healthz",
    response_model=Health,
    tags=["system"],
    responses={503: {"model": Health, "description": "The database is unreachable"}},
)
def healthz(request: Request, response: Response) -> Health:
    """Liveness and database reachability (503 when the database does not answer)."""
    problem = service.database_problem(request.app.state.session_factory)
    if problem is not None:
        response.status_code = 503
        return Health(status="unavailable", database=problem, version=__version__)
    return Health(status="ok", database="ok", version=__version__)


@router.get("/api/v1/trainers", response_model=list[TrainerInfo], tags=["trainers"])
def list_trainers() -> list[TrainerInfo]:
    """Registered trainers: name, description, logged metrics, config JSON schema."""
    return service.list_trainers()
