"""/healthz and /api/v1/trainers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service import __version__
from service.studies import service
from service.studies.schemas import Health, TrainerInfo

router = APIRouter()


@router.api_route(  # HEAD too: load balancers' and `curl -I` probes
    "/healthz",
    methods=["GET", "HEAD"],
    response_model=Health,
    tags=["system"],
    responses={
        503: {
            "model": Health,
            "description": "The database is unreachable, or its schema is missing or outdated",
        }
    },
)
def healthz(request: Request, response: Response) -> Health:
    """Liveness and database readiness.

    503 when the database does not answer, or when regtune's schema is missing or older than
    this release (`database` then says to run `regtune db upgrade`).
    """
    problem = (
        service.database_problem(request.app.state.session_factory)
        or request.app.state.schema_check.problem()
    )
    if problem is not None:
        response.status_code = 503
        return Health(status="unavailable", database=problem, version=__version__)
    return Health(status="ok", database="ok", version=__version__)


@router.get("/api/v1/trainers", response_model=list[TrainerInfo], tags=["trainers"])
def list_trainers() -> list[TrainerInfo]:
    """Registered trainers: name, description, logged metrics, config JSON schema."""
    return service.list_trainers()
