"""`Annotated` dependencies shared by the routes (so handlers never repeat lookups)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import unit_of_work
from service.errors import NotFoundError
from service.models import StudyRecord
from service.studies import service
from service.studies.optuna_storage import LazyOptunaStorage

__all__ = [
    "OptunaStorageDep",
    "SessionDep",
    "SettingsDep",
    "StudyDep",
]


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: commit when the handler returns, roll back if it raises."""
    with unit_of_work(request.app.state.session_factory) as session:
        yield session


def get_optuna_storage(request: Request) -> LazyOptunaStorage:
    storage: LazyOptunaStorage = request.app.state.optuna_storage
    return storage


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": the commit runs before the response is sent, so a failed commit is an error
# response rather than a 201 for data that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
OptunaStorageDep = Annotated[LazyOptunaStorage, Depends(get_optuna_storage)]


def get_study(
    session: SessionDep,
    study: Annotated[str, Path(description="study id, or its unique name", max_length=128)],
) -> StudyRecord:
    if "\x00" in study:
        # no study name holds a NUL, and PostgreSQL refuses one in a query parameter (DataError)
        raise NotFoundError(f"study {study!r} not found", loc=["path", "study"])
    return service.resolve_study(session, study)


StudyDep = Annotated[StudyRecord, Depends(get_study)]
