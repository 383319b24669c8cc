"""SQL behind the stale-trial sweep: what needs its attention, found without visiting studies.

Each query reads across every study at once through an index, so a sweep costs the same with
ten queued studies or ten thousand: only trials that run (bounded by the live and dead workers)
and studies past their deadline are ever looked at one by one.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import Session

from service.models import StudyRecord, StudyStatus, TrialRecord, TrialState
from service.studies.optuna_storage import OPTUNA_HEARTBEATS, OPTUNA_TRIALS

__all__ = ["SweepCandidate", "overdue_studies", "sweep_candidates"]


@dataclass(frozen=True)
class SweepCandidate:
    """A regtune trial row still `running` that needs the sweep."""

    trial_id: int  # regtune_trials.id
    optuna_trial_id: int
    study_id: int
    study_name: str
    metric: str
    direction: str
    # Optuna already finished it (the worker died before recording the outcome); else its
    # Optuna heartbeat is older than the grace period (the worker died mid-trial)
    optuna_finished: bool


def sweep_candidates(session: Session, grace_period_s: float) -> list[SweepCandidate]:
    """Running rows whose Optuna trial has finished, or whose heartbeat is stale.

    Stale as Optuna judges it (`fail_stale_trials`): the trial's last heartbeat is more than
    `grace_period_s` older than the database's clock. One query from the ``running`` rows
    (index ``ix_regtune_trials_state_claimed``) through Optuna's primary key and its unique
    heartbeat ``trial_id``: never one per study, and a live worker's rows never match.
    """
    now = session.scalar(select(func.now()))
    assert now is not None
    # naive, like Optuna's own heartbeat arithmetic (the database runs in UTC)
    stale_before = now.replace(tzinfo=None) - timedelta(seconds=grace_period_s)
    optuna_state = cast(OPTUNA_TRIALS.c.state, String)
    query = (
        select(
            TrialRecord.id,
            TrialRecord.optuna_trial_id,
            StudyRecord.id,
            StudyRecord.name,
            StudyRecord.metric,
            StudyRecord.direction,
            optuna_state,
        )
        .join(StudyRecord, StudyRecord.id == TrialRecord.study_id)
        .join(OPTUNA_TRIALS, OPTUNA_TRIALS.c.trial_id == TrialRecord.optuna_trial_id)
        .outerjoin(OPTUNA_HEARTBEATS, OPTUNA_HEARTBEATS.c.trial_id == OPTUNA_TRIALS.c.trial_id)
        .where(
            TrialRecord.state == TrialState.running.value,
            or_(optuna_state != "RUNNING", OPTUNA_HEARTBEATS.c.heartbeat < stale_before),
        )
        .order_by(TrialRecord.id)
    )
    return [
        SweepCandidate(
            trial_id=row[0],
            optuna_trial_id=typing.cast(int, row[1]),  # the join needs one
            study_id=row[2],
            study_name=row[3],
            metric=row[4],
            direction=row[5],
            optuna_finished=row[6] != "RUNNING",
        )
        for row in session.execute(query)
    ]


def overdue_studies(session: Session, now: datetime) -> Sequence[int]:
    """Running studies past their `budget.timeout_s` deadline with nothing running.

    Workers end such a study when they next look at it; the sweep ends it when none is alive.
    """
    query = select(StudyRecord.id).where(
        StudyRecord.status == StudyStatus.running.value,
        StudyRecord.deadline_at <= now,
        StudyRecord.n_running == 0,
    )
    return list(session.scalars(query))
