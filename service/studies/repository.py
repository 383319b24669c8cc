"""SQL behind the study endpoints: studies, trials, epochs (reads, create, cancel).

Functions take a session and at most flush(); the request's unit of work commits. Lists page
through indexed columns (`ix_regtune_studies_status_created`, `ix_regtune_trials_study_state`,
`ix_regtune_trials_study_value`, the unique (study_id, number)); nothing here builds an Optuna
`Study`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.orm import Session

from service.models import StudyRecord, StudyStatus, TrialEpoch, TrialRecord, TrialState, utcnow

__all__ = [
    "ACTIVE_STATUSES",
    "TrialSort",
    "add_study",
    "best_trial",
    "cancel_study",
    "get_study",
    "get_study_by_name",
    "get_trial",
    "list_studies",
    "list_trials",
    "ping",
    "trial_epochs",
]

ACTIVE_STATUSES = (StudyStatus.queued.value, StudyStatus.running.value)
TrialSort = Literal["number", "-number", "value", "-value"]


def ping(session: Session) -> None:
    """Raise if the database cannot answer a trivial query."""
    session.execute(text("SELECT 1"))


def get_study(session: Session, study_id: int) -> StudyRecord | None:
    return session.get(StudyRecord, study_id)


def get_study_by_name(session: Session, name: str) -> StudyRecord | None:
    return session.scalars(select(StudyRecord).where(StudyRecord.name == name)).first()


def add_study(session: Session, study: StudyRecord) -> StudyRecord:
    """Insert `study` and flush (raises IntegrityError on a duplicate name)."""
    session.add(study)
    session.flush()
    return study


def list_studies(
    session: Session, statuses: Sequence[str] | None, limit: int, offset: int
) -> tuple[list[StudyRecord], int]:
    """Newest first, optionally filtered by status; returns (page, total)."""
    where: list[ColumnElement[bool]] = []
    if statuses:
        where.append(StudyRecord.status.in_(list(statuses)))
    total = session.scalar(select(func.count()).select_from(StudyRecord).where(*where)) or 0
    rows = session.scalars(
        select(StudyRecord)
        .where(*where)
        .order_by(StudyRecord.created_at.desc(), StudyRecord.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total)


def cancel_study(session: Session, study_id: int) -> bool:
    """Set an active study to `cancelled` in one conditional UPDATE.

    The condition makes it atomic against a worker completing the study at the same moment.
    Returns False when the study was already in a final status.
    """
    now = utcnow()
    result = session.execute(
        update(StudyRecord)
        .where(StudyRecord.id == study_id, StudyRecord.status.in_(ACTIVE_STATUSES))
        .values(status=StudyStatus.cancelled.value, finished_at=now, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    return bool(getattr(result, "rowcount", 0))


def _numbered(study_id: int) -> list[ColumnElement[bool]]:
    # rows without a number are claims whose Optuna trial is still being created
    return [TrialRecord.study_id == study_id, TrialRecord.number.is_not(None)]


def list_trials(
    session: Session,
    study_id: int,
    states: Sequence[str] | None,
    sort: TrialSort,
    limit: int,
    offset: int,
) -> tuple[list[TrialRecord], int]:
    """A page of a study's trials (filter by state, sort by number or value); (page, total).

    Sorting by value puts trials without a value last in both directions.
    """
    where = _numbered(study_id)
    if states:
        where.append(TrialRecord.state.in_(list(states)))
    total = session.scalar(select(func.count()).select_from(TrialRecord).where(*where)) or 0
    order: list[Any]
    if sort in ("value", "-value"):
        value = TrialRecord.value.desc() if sort == "-value" else TrialRecord.value.asc()
        order = [TrialRecord.value.is_(None), value, TrialRecord.number.asc()]
    else:
        order = [TrialRecord.number.desc() if sort == "-number" else TrialRecord.number.asc()]
    rows = session.scalars(
        select(TrialRecord).where(*where).order_by(*order).limit(limit).offset(offset)
    )
    return list(rows), int(total)


def get_trial(session: Session, study_id: int, number: int) -> TrialRecord | None:
    return session.scalars(
        select(TrialRecord).where(TrialRecord.study_id == study_id, TrialRecord.number == number)
    ).first()


def trial_epochs(session: Session, trial_id: int) -> list[TrialEpoch]:
    return list(
        session.scalars(
            select(TrialEpoch).where(TrialEpoch.trial_id == trial_id).order_by(TrialEpoch.epoch)
        )
    )


def best_trial(session: Session, study_id: int, direction: str) -> TrialRecord | None:
    """The complete trial with the best value (ties: the earliest), or None."""
    value = TrialRecord.value.desc() if direction == "maximize" else TrialRecord.value.asc()
    return session.scalars(
        select(TrialRecord)
        .where(
            TrialRecord.study_id == study_id,
            TrialRecord.state == TrialState.complete.value,
            TrialRecord.value.is_not(None),
        )
        .order_by(value, TrialRecord.number)
        .limit(1)
    ).first()
