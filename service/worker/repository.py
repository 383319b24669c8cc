"""Worker-side SQL on regtune_studies, regtune_trials and regtune_trial_epochs.

Every function takes a session and only flushes; the caller's unit of work commits. Functions
that change a study's trials start with `lock_study`: an UPDATE of the study row, which takes a
row lock on PostgreSQL and the write lock on SQLite, so claims and counter recomputations of one
study never interleave (no lost update, no slot handed out twice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, delete, func, select, update
from sqlalchemy.orm import Session

from service.models import StudyRecord, StudyStatus, TrialEpoch, TrialRecord, TrialState, utcnow
from service.studies import lifecycle
from service.studies.lifecycle import ACTIVE_STATUSES, Counts, Ending
from trainers.best import BestEpoch, maximizes
from trainers.params import PARAM_NAMES

__all__ = [
    "FINAL_TRIAL_STATES",
    "TrialResult",
    "add_epochs",
    "bind_trial",
    "candidate_studies",
    "claim_slot",
    "clean_metrics",
    "delete_claim",
    "end_study",
    "fail_study",
    "finish_trial",
    "lock_study",
    "refresh_study",
    "running_trials",
    "set_params",
    "stale_claims",
    "study_status",
]

IN_PROGRESS = (TrialState.claimed.value, TrialState.running.value)
FINAL_TRIAL_STATES = frozenset(
    {TrialState.complete, TrialState.pruned, TrialState.cancelled, TrialState.fail}
)
# best-epoch metrics that also get their own indexed column
METRIC_COLUMNS = (
    "train_loss",
    "val_loss",
    "val_acc",
    "val_ece",
    "gap",
    "val_nll",
    "near_zero_frac",
    "weight_l2",
)


@dataclass
class TrialResult:
    """What a finished trial writes to its row."""

    state: TrialState
    value: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    metrics: dict[str, float] | None = None
    test_metrics: dict[str, float] | None = None
    error: str | None = None
    # every objective's best-epoch value; whether the spec's constraints hold (None: none)
    values: list[float] | None = None
    feasible: bool | None = None
    # False for trials abandoned by a worker shutdown: not the trial's fault
    counts_as_failure: bool = True


def lock_study(session: Session, study_id: int) -> StudyRecord | None:
    """Lock the study row for this transaction and return it fresh (None if it is gone)."""
    session.execute(
        update(StudyRecord).where(StudyRecord.id == study_id).values(updated_at=utcnow())
    )
    return session.get(StudyRecord, study_id, populate_existing=True)


def study_status(session: Session, study_id: int) -> str | None:
    return session.scalar(select(StudyRecord.status).where(StudyRecord.id == study_id))


def _slots_used(study_id: Any) -> Select[Any]:
    return select(func.count(TrialRecord.id)).where(
        TrialRecord.study_id == study_id, TrialRecord.slot.is_not(None)
    )


def candidate_studies(
    session: Session, only: int | None = None, exclude: Sequence[int] = (), limit: int = 20
) -> list[int]:
    """Queued/running studies that still have a free slot, oldest first."""
    used = _slots_used(StudyRecord.id).scalar_subquery()
    query = (
        select(StudyRecord.id)
        .where(StudyRecord.status.in_(ACTIVE_STATUSES), used < StudyRecord.n_trials)
        .order_by(StudyRecord.created_at, StudyRecord.id)
        .limit(limit)
    )
    if only is not None:
        query = query.where(StudyRecord.id == only)
    if exclude:
        query = query.where(StudyRecord.id.not_in(list(exclude)))
    return list(session.scalars(query))


def claim_slot(session: Session, study: StudyRecord, worker: str) -> TrialRecord | None:
    """Take the smallest free slot of a locked, active study; None when there is none.

    Starts the study (queued -> running, deadline from ``budget.timeout_s``) on its first claim.
    After the deadline no slot is handed out, and the study completes once nothing runs.
    """
    if not lifecycle.is_active(study.status):
        return None
    now = utcnow()
    if not lifecycle.accepts_claims(study.status, study.deadline_at, now):
        refresh_study(session, study)  # past its deadline: completes once nothing runs
        return None
    used = set(
        session.scalars(
            select(TrialRecord.slot).where(
                TrialRecord.study_id == study.id, TrialRecord.slot.is_not(None)
            )
        )
    )
    free = next((s for s in range(study.n_trials) if s not in used), None)
    if free is None:
        return None
    start = lifecycle.start_on_claim(study.status, study.spec, now)
    if start is not None:
        study.status = start.status.value
        study.started_at = start.started_at
        study.deadline_at = start.deadline_at
    row = TrialRecord(
        study_id=study.id, slot=free, state=TrialState.claimed.value, worker=worker, claimed_at=now
    )
    session.add(row)
    session.flush()  # IntegrityError here means another worker took the slot: caller retries
    study.n_running = (study.n_running or 0) + 1
    return row


def delete_claim(session: Session, trial_id: int) -> None:
    """Give back a slot whose Optuna trial was never created."""
    session.execute(
        delete(TrialRecord).where(
            TrialRecord.id == trial_id, TrialRecord.state == TrialState.claimed.value
        )
    )


def bind_trial(
    session: Session, trial_id: int, number: int, optuna_trial_id: int, retry_of: int | None
) -> bool:
    """Attach the Optuna trial to the claimed row (False when the claim was swept away)."""
    now = utcnow()
    result = session.execute(
        update(TrialRecord)
        .where(TrialRecord.id == trial_id, TrialRecord.state == TrialState.claimed.value)
        .values(
            number=number,
            optuna_trial_id=optuna_trial_id,
            retry_of=retry_of,
            state=TrialState.running.value,
            started_at=now,
            heartbeat_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_params(session: Session, trial_id: int, params: dict[str, Any]) -> None:
    values = {name: params[name] for name in PARAM_NAMES if name in params}
    session.execute(update(TrialRecord).where(TrialRecord.id == trial_id).values(**values))


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Metrics as SQL can store them: NaN and +-inf become null.

    JSON has no NaN/inf (PostgreSQL's json type refuses them, SQLite stores a token that reads
    back as null), so every write of a metrics dict, per epoch or final, goes through this.
    """
    cleaned: dict[str, float | None] = {}
    for name, value in metrics.items():
        number = None if value is None else float(value)
        cleaned[str(name)] = number if number is not None and math.isfinite(number) else None
    return cleaned


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _metric_columns(metrics: Mapping[str, float | None] | None) -> dict[str, Any]:
    if metrics is None:
        return {}
    return {name: metrics.get(name) for name in METRIC_COLUMNS}


def add_epochs(
    session: Session,
    trial_id: int,
    epochs: Sequence[tuple[int, dict[str, Any]]],
    best: BestEpoch | None,
) -> None:
    """Store epochs' metrics and the best epoch so far (live progress for the API)."""
    session.add_all(
        TrialEpoch(trial_id=trial_id, epoch=e, metrics=clean_metrics(m)) for e, m in epochs
    )
    last = max(e for e, _ in epochs)
    values: dict[str, Any] = {"epochs_run": last + 1, "heartbeat_at": utcnow()}
    if best is not None:
        cleaned = clean_metrics(best.metrics)
        values.update(
            value=_finite(best.value),
            best_epoch=best.epoch,
            metrics=cleaned,
            **_metric_columns(cleaned),
        )
    session.execute(update(TrialRecord).where(TrialRecord.id == trial_id).values(**values))
    session.flush()


def finish_trial(session: Session, study: StudyRecord, trial_id: int, result: TrialResult) -> None:
    """Write a trial's final state (the study must be locked), then refresh the study.

    A failed or cancelled trial gives its slot back, so finished trials still reach n_trials.
    """
    row = session.get(TrialRecord, trial_id, populate_existing=True)
    if row is None:
        return
    now = utcnow()
    row.state = result.state.value
    if result.state not in (TrialState.complete, TrialState.pruned):
        row.slot = None
    if _finite(result.value) is not None:
        row.value = result.value
    if result.best_epoch is not None:
        row.best_epoch = result.best_epoch
    if result.epochs_run is not None:
        row.epochs_run = result.epochs_run
    if result.metrics is not None:
        row.metrics = clean_metrics(result.metrics)
        for name, value in _metric_columns(row.metrics).items():
            setattr(row, name, value)
    if result.test_metrics is not None:
        row.test_metrics = clean_metrics(result.test_metrics)
    if result.values is not None:
        row.values = [float(v) for v in result.values]
    if result.feasible is not None:
        row.feasible = result.feasible
    row.error = result.error
    row.finished_at = now
    if row.started_at is not None:
        row.duration_s = (now - row.started_at).total_seconds()
    session.flush()

    study.consecutive_failures = lifecycle.failure_streak(
        study.consecutive_failures or 0, result.state, result.counts_as_failure
    )


def end_study(session: Session, study: StudyRecord, ending: Ending) -> None:
    """Write `ending` to an active, locked study (a final status is never overwritten)."""
    if lifecycle.is_active(study.status):
        study.status = ending.status.value
        study.error = ending.error
        study.finished_at = utcnow()
        session.flush()


def fail_study(session: Session, study: StudyRecord, reason: str) -> None:
    """End an active study as `failed` with `reason`."""
    end_study(session, study, Ending(StudyStatus.failed, reason))


def refresh_study(
    session: Session,
    study: StudyRecord,
    max_consecutive_failures: int | None = None,
    last_error: str | None = None,
) -> None:
    """Recompute a locked study's counters and best trial; end it when its budget is met."""
    counts = session.execute(
        select(
            func.coalesce(func.sum(case((TrialRecord.state == "complete", 1), else_=0)), 0),
            func.coalesce(func.sum(case((TrialRecord.state == "pruned", 1), else_=0)), 0),
            func.coalesce(func.sum(case((TrialRecord.state == "fail", 1), else_=0)), 0),
            func.coalesce(func.sum(case((TrialRecord.state.in_(IN_PROGRESS), 1), else_=0)), 0),
        ).where(TrialRecord.study_id == study.id)
    ).one()
    study.n_complete, study.n_pruned, study.n_failed, study.n_running = (int(c) for c in counts)
    order = TrialRecord.value.desc() if maximizes(study.direction) else TrialRecord.value.asc()
    best = session.execute(
        select(TrialRecord.number, TrialRecord.value)
        .where(
            TrialRecord.study_id == study.id,
            TrialRecord.state == TrialState.complete.value,
            TrialRecord.value.is_not(None),
        )
        # a feasible trial (or one of a study without constraints) before an infeasible one
        .order_by(TrialRecord.feasible.is_(False), order, TrialRecord.number)
        .limit(1)
    ).first()
    study.best_trial_number, study.best_value = (best[0], best[1]) if best else (None, None)

    ending = lifecycle.ending_after_trials(
        status=study.status,
        n_trials=study.n_trials,
        counts=Counts(study.n_complete, study.n_pruned, study.n_failed, study.n_running),
        deadline_at=study.deadline_at,
        now=utcnow(),
        consecutive_failures=study.consecutive_failures or 0,
        max_consecutive_failures=max_consecutive_failures,
        last_error=last_error,
    )
    if ending is not None:
        end_study(session, study, ending)
    session.flush()


def running_trials(session: Session, study_id: int | None = None) -> list[TrialRecord]:
    """Rows in state `running` (bound to an Optuna trial), for the stale-trial sweep."""
    query = select(TrialRecord).where(TrialRecord.state == TrialState.running.value)
    if study_id is not None:
        query = query.where(TrialRecord.study_id == study_id)
    return list(session.scalars(query))


def stale_claims(session: Session, older_than: datetime) -> list[TrialRecord]:
    """Claims that never got an Optuna trial (their worker died in between)."""
    return list(
        session.scalars(
            select(TrialRecord).where(
                TrialRecord.state == TrialState.claimed.value, TrialRecord.claimed_at < older_than
            )
        )
    )


def active_studies(session: Session) -> list[StudyRecord]:
    return list(session.scalars(select(StudyRecord).where(StudyRecord.status.in_(ACTIVE_STATUSES))))
