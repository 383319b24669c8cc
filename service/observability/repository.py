"""SQL behind `/metrics`: a handful of aggregate queries, run at scrape time.

Every query here is an aggregate over an indexed column (status, state) or a single MAX/SUM, so a
scrape costs a few milliseconds even on large studies; nothing builds an Optuna `Study`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, case, column, func, select, table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.models import StudyRecord, TrialRecord, TrialState

# Optuna's own heartbeat table (RDBStorage with heartbeat_interval): one row per running trial.
_OPTUNA_HEARTBEATS = table("trial_heartbeats", column("heartbeat"))


@dataclass(frozen=True)
class DurationStats:
    """Finished trials' wall-clock durations, pre-bucketed for a Prometheus histogram."""

    buckets: list[tuple[float, int]]  # (upper bound, cumulative count), ascending bounds
    count: int
    total: float


@dataclass(frozen=True)
class MetricsSnapshot:
    """What one scrape of `/metrics` reports about studies, trials and workers."""

    studies_by_status: dict[str, int]
    trials_by_state: dict[str, int]
    durations: DurationStats
    epochs_total: int
    active_workers: int
    last_heartbeat: datetime | None  # naive UTC, like every timestamp in the database


def count_studies_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(StudyRecord.status, func.count()).group_by(StudyRecord.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def count_trials_by_state(session: Session) -> dict[str, int]:
    stmt = select(TrialRecord.state, func.count()).group_by(TrialRecord.state)
    rows = session.execute(stmt).all()
    return {str(state): int(n) for state, n in rows}


def trial_duration_stats(session: Session, bounds: Sequence[float]) -> DurationStats:
    """Cumulative bucket counts, count and sum of `duration_s` over trials that have one."""
    duration = TrialRecord.duration_s
    bucket_cols = [
        func.coalesce(func.sum(case((duration <= b, 1), else_=0)), 0).cast(Integer) for b in bounds
    ]
    row = session.execute(
        select(func.count(duration), func.coalesce(func.sum(duration), 0.0), *bucket_cols).where(
            duration.is_not(None)
        )
    ).one()
    count, total, *cumulative = row
    return DurationStats(
        buckets=[(float(b), int(c)) for b, c in zip(bounds, cumulative, strict=True)],
        count=int(count),
        total=float(total or 0.0),
    )


def total_epochs_run(session: Session) -> int:
    stmt = select(func.coalesce(func.sum(TrialRecord.epochs_run), 0))
    return int(session.execute(stmt).scalar_one())


def count_active_workers(session: Session) -> int:
    """Distinct worker names holding a claimed or running trial."""
    busy = (TrialState.claimed.value, TrialState.running.value)
    stmt = select(func.count(func.distinct(TrialRecord.worker))).where(
        TrialRecord.state.in_(busy), TrialRecord.worker.is_not(None)
    )
    return int(session.execute(stmt).scalar_one())


def latest_heartbeat(session: Session) -> datetime | None:
    """The newest heartbeat any worker wrote: regtune's own column or Optuna's heartbeat table."""
    ours = session.execute(select(func.max(TrialRecord.heartbeat_at))).scalar_one()
    theirs: datetime | None = None
    try:
        # a savepoint keeps the scrape's transaction usable if Optuna's table is absent
        with session.begin_nested():
            theirs = session.execute(select(func.max(_OPTUNA_HEARTBEATS.c.heartbeat))).scalar_one()
    except SQLAlchemyError:
        theirs = None
    stamps = [s for s in (ours, theirs) if isinstance(s, datetime)]
    return max(stamps) if stamps else None


def load_snapshot(session: Session, duration_bounds: Sequence[float]) -> MetricsSnapshot:
    """Everything `/metrics` shows, read in one session."""
    return MetricsSnapshot(
        studies_by_status=count_studies_by_status(session),
        trials_by_state=count_trials_by_state(session),
        durations=trial_duration_stats(session, duration_bounds),
        epochs_total=total_epochs_run(session),
        active_workers=count_active_workers(session),
        last_heartbeat=latest_heartbeat(session),
    )
