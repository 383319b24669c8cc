"""SQL behind the study endpoints: studies, trials, epochs (reads, create, cancel).

Functions take a session and at most flush(); the request's unit of work commits. Lists page
through indexed columns (`ix_regtune_studies_status_created`, `ix_regtune_trials_study_state`,
`ix_regtune_trials_study_value`, the unique (study_id, number)); nothing here builds an Optuna
`Study`.

The reads behind the list, trials, trial, detail and best endpoints return plain rows
(`RowMapping`) of only the columns a response shows, run as Core statements on the session's
connection, from statements built once per variant. A page of 100 trials loaded as ORM entities
spent more CPU on identity-map bookkeeping, attribute instrumentation and decoding JSON the
response never shows (`test_metrics`, the study `spec`) than on everything else in the request.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import pydantic_core
from sqlalchemy import (
    ColumnElement,
    Dialect,
    Integer,
    RowMapping,
    Select,
    Text,
    TypeDecorator,
    bindparam,
    cast,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.models import (
    TRIAL_PARAM_COLUMNS,
    StudyRecord,
    StudyStatus,
    TrialEpoch,
    TrialRecord,
    TrialRole,
    TrialState,
    utcnow,
)
from service.studies.confirmation import ConfigRuns
from service.studies.lifecycle import ACTIVE_STATUSES
from trainers.best import maximizes

__all__ = [
    "ACTIVE_STATUSES",
    "STUDY_SUMMARY_COLUMNS",
    "TRIAL_SUMMARY_COLUMNS",
    "TrialSort",
    "add_study",
    "best_trial",
    "cancel_study",
    "confirmed_configs",
    "count_active_studies",
    "get_study",
    "get_study_by_name",
    "get_trial",
    "list_studies",
    "list_trials",
    "pareto_candidates",
    "ping",
    "reference_trial",
    "reference_values",
    "trial_epochs",
    "trials_by_number",
]

TrialSort = Literal["number", "-number", "value", "-value"]


class _JsonText(TypeDecorator[Any]):
    """A JSON column read as its text and parsed by pydantic-core.

    For the small metric dicts of a trials page, `pydantic_core.from_json` takes about a seventh
    of the time of the `json.loads` the drivers use (same values: every JSON number maps to the
    same float). The column's JSON text is read as stored (`json`, not `jsonb`, on PostgreSQL).
    """

    impl = Text
    cache_ok = True

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else pydantic_core.from_json(value)


def _json_read(column: InstrumentedAttribute[Any]) -> ColumnElement[Any]:
    return cast(column, _JsonText()).label(column.key)


# What a row of the study list shows (`StudySummary`): everything but the spec and the internals.
STUDY_SUMMARY_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = (
    StudyRecord.id,
    StudyRecord.name,
    StudyRecord.trainer,
    StudyRecord.status,
    StudyRecord.metric,
    StudyRecord.direction,
    StudyRecord.n_trials,
    StudyRecord.n_complete,
    StudyRecord.n_pruned,
    StudyRecord.n_failed,
    StudyRecord.n_running,
    StudyRecord.n_extra,
    StudyRecord.n_extra_finished,
    StudyRecord.best_value,
    StudyRecord.best_trial_number,
    StudyRecord.created_at,
    StudyRecord.started_at,
    StudyRecord.finished_at,
    StudyRecord.error,
)
# What a trial summary shows (`TrialSummary`); the keys are the column names.
TRIAL_SUMMARY_COLUMNS: tuple[InstrumentedAttribute[Any] | ColumnElement[Any], ...] = (
    TrialRecord.number,
    TrialRecord.state,
    *TRIAL_PARAM_COLUMNS,
    TrialRecord.value,
    TrialRecord.best_epoch,
    TrialRecord.epochs_run,
    TrialRecord.duration_s,
    TrialRecord.train_loss,
    TrialRecord.val_loss,
    TrialRecord.val_acc,
    TrialRecord.val_ece,
    TrialRecord.gap,
    _json_read(TrialRecord.metrics),
    TrialRecord.started_at,
    TrialRecord.finished_at,
    TrialRecord.error,
    TrialRecord.retry_of,
    _json_read(TrialRecord.values),
    TrialRecord.feasible,
    TrialRecord.role,
    TrialRecord.repeat_of,
    TrialRecord.train_seed,
    TrialRecord.val_nll,
    TrialRecord.near_zero_frac,
    TrialRecord.weight_l2,
)


def ping(session: Session) -> None:
    """Raise if the database cannot answer a trivial query."""
    session.execute(text("SELECT 1"))


def get_study(session: Session, study_id: int) -> StudyRecord | None:
    return session.get(StudyRecord, study_id)


def get_study_by_name(session: Session, name: str) -> StudyRecord | None:
    return session.scalars(select(StudyRecord).where(StudyRecord.name == name)).first()


def count_active_studies(session: Session) -> int:
    """Queued and running studies (index `ix_regtune_studies_status_created`)."""
    query = select(func.count()).select_from(StudyRecord)
    return int(session.scalar(query.where(StudyRecord.status.in_(ACTIVE_STATUSES))) or 0)


def add_study(session: Session, study: StudyRecord) -> StudyRecord:
    """Insert `study` and flush (raises IntegrityError on a duplicate name)."""
    session.add(study)
    session.flush()
    return study


def list_studies(
    session: Session, statuses: Sequence[str] | None, limit: int, offset: int
) -> tuple[Sequence[RowMapping], int]:
    """Newest first, optionally filtered by status; returns (page, total).

    The page holds `STUDY_SUMMARY_COLUMNS` rows.
    """
    count, page = _study_list(bool(statuses))
    params = {"statuses": list(statuses or ()), "limit": limit, "offset": offset}
    connection = _core(session)
    total = connection.scalar(count, params) or 0
    return connection.execute(page, params).mappings().all(), int(total)


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


def list_trials(
    session: Session,
    study_id: int,
    states: Sequence[str] | None,
    sort: TrialSort,
    limit: int,
    offset: int,
) -> tuple[Sequence[RowMapping], int]:
    """A page of a study's trials (filter by state, sort by number or value); (page, total).

    The page holds `TRIAL_SUMMARY_COLUMNS` rows. Sorting by value puts trials without a value
    last in both directions.
    """
    count, page = _trial_list(bool(states), sort)
    params = {"study_id": study_id, "states": list(states or ()), "limit": limit, "offset": offset}
    connection = _core(session)
    total = connection.scalar(count, params) or 0
    return connection.execute(page, params).mappings().all(), int(total)


def get_trial(session: Session, study_id: int, number: int) -> RowMapping | None:
    """`TRIAL_SUMMARY_COLUMNS` plus `id`, `test_metrics` and `worker` of one trial, or None."""
    query = select(
        *TRIAL_SUMMARY_COLUMNS, TrialRecord.id, TrialRecord.test_metrics, TrialRecord.worker
    ).where(TrialRecord.study_id == study_id, TrialRecord.number == number)
    return _core(session).execute(query).mappings().first()


def trial_epochs(session: Session, trial_id: int) -> list[TrialEpoch]:
    return list(
        session.scalars(
            select(TrialEpoch).where(TrialEpoch.trial_id == trial_id).order_by(TrialEpoch.epoch)
        )
    )


def best_trial(session: Session, study_id: int, direction: str) -> RowMapping | None:
    """The complete trial with the best value (ties: the earliest), or None.

    `TRIAL_SUMMARY_COLUMNS` plus `test_metrics`.
    """
    query = _best_trial(maximize=maximizes(direction))
    return _core(session).execute(query, {"study_id": study_id}).mappings().first()


def reference_trial(session: Session, study_id: int) -> RowMapping | None:
    """The study's reference run (`TRIAL_SUMMARY_COLUMNS` plus `test_metrics`): the complete
    one when there is one, else the latest attempt with a trial number; None before it ran."""
    query = (
        select(*TRIAL_SUMMARY_COLUMNS, TrialRecord.test_metrics)
        .where(
            TrialRecord.study_id == study_id,
            TrialRecord.role == TrialRole.reference.value,
            TrialRecord.number.is_not(None),
        )
        .order_by((TrialRecord.state != TrialState.complete.value), TrialRecord.number.desc())
        .limit(1)
    )
    return _core(session).execute(query).mappings().first()


def reference_values(session: Session, study_ids: Sequence[int]) -> dict[int, float]:
    """The complete reference run's value of each of `study_ids` that has one."""
    if not study_ids:
        return {}
    query = select(TrialRecord.study_id, TrialRecord.value).where(
        TrialRecord.study_id.in_(list(study_ids)),
        TrialRecord.role == TrialRole.reference.value,
        TrialRecord.state == TrialState.complete.value,
        TrialRecord.value.is_not(None),
    )
    return {row.study_id: row.value for row in _core(session).execute(query)}


def confirmed_configs(session: Session, study_id: int) -> list[ConfigRuns]:
    """Each search trial with finished confirmation repeats and every run's value: the search
    run first, then its repeats by trial number (configs by search trial number). A repeat that
    failed (diverged, raised; never re-run: `lifecycle.keeps_slot`) has the value NaN, which
    the statistics leave out of the mean (`confirmation.run_stats`)."""
    complete = (TrialRecord.state == TrialState.complete.value) & TrialRecord.value.is_not(None)
    failed = (
        (TrialRecord.state == TrialState.fail.value)
        & TrialRecord.slot.is_not(None)
        & TrialRecord.number.is_not(None)
    )
    repeats = session.execute(
        select(TrialRecord.repeat_of, TrialRecord.number, TrialRecord.value, TrialRecord.state)
        .where(
            TrialRecord.study_id == study_id,
            TrialRecord.role == TrialRole.confirm.value,
            or_(complete, failed),
            TrialRecord.repeat_of.is_not(None),
        )
        .order_by(TrialRecord.number)
    ).all()
    if not repeats:
        return []
    originals = {
        row.number: row.value
        for row in session.execute(
            select(TrialRecord.number, TrialRecord.value).where(
                TrialRecord.study_id == study_id,
                TrialRecord.role == TrialRole.search.value,
                TrialRecord.state == TrialState.complete.value,
                TrialRecord.value.is_not(None),
                TrialRecord.number.in_(sorted({r.repeat_of for r in repeats})),
            )
        )
    }
    configs: dict[int, ConfigRuns] = {}
    for row in repeats:
        original = originals.get(row.repeat_of)
        if original is None:
            continue
        config = configs.setdefault(
            row.repeat_of, ConfigRuns(row.repeat_of, [original], [row.repeat_of])
        )
        config.values.append(row.value if row.state == TrialState.complete.value else math.nan)
        config.trial_numbers.append(row.number)
    return sorted(configs.values(), key=lambda c: c.trial_number)


def pareto_candidates(session: Session, study_id: int) -> Sequence[RowMapping]:
    """`number`, `values`, `feasible` of every complete search trial with values."""
    query = select(TrialRecord.number, _json_read(TrialRecord.values), TrialRecord.feasible).where(
        TrialRecord.study_id == study_id,
        TrialRecord.state == TrialState.complete.value,
        TrialRecord.values.is_not(None),
        TrialRecord.role == TrialRole.search.value,
    )
    return _core(session).execute(query).mappings().all()


def trials_by_number(session: Session, study_id: int, numbers: Sequence[int]) -> list[RowMapping]:
    """`TRIAL_SUMMARY_COLUMNS` of the given trials (in no particular order)."""
    if not numbers:
        return []
    query = select(*TRIAL_SUMMARY_COLUMNS).where(
        TrialRecord.study_id == study_id, TrialRecord.number.in_(list(numbers))
    )
    return list(_core(session).execute(query).mappings().all())


def _core(session: Session) -> Connection:
    """The session's connection (its transaction), after the autoflush `session.execute` does.

    The reads here select columns, not entities; executed through the session they still went
    through the ORM's per-row column processing, which cost more than the driver's own fetch.
    """
    session.flush()
    return session.connection()


# The statements of the read endpoints are built once, with their values as bound parameters:
# building a select of twenty-odd columns and computing its cache key took longer than
# SQLAlchemy's own work to execute it. `functools.cache` keeps one per variant (a handful).


@functools.cache
def _study_list(filtered: bool) -> tuple[Select[Any], Select[Any]]:
    """(count, page) of the study list; parameters `statuses` (if filtered), `limit`, `offset`."""
    where = [StudyRecord.status.in_(bindparam("statuses", expanding=True))] if filtered else []
    count = select(func.count()).select_from(StudyRecord).where(*where)
    page = (
        select(*STUDY_SUMMARY_COLUMNS)
        .where(*where)
        .order_by(StudyRecord.created_at.desc(), StudyRecord.id.desc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    return count, page


@functools.cache
def _trial_list(filtered: bool, sort: TrialSort) -> tuple[Select[Any], Select[Any]]:
    """(count, page) of a trials page; parameters `study_id`, `states`, `limit`, `offset`."""
    # rows without a number are claims whose Optuna trial is still being created
    where = [TrialRecord.study_id == bindparam("study_id"), TrialRecord.number.is_not(None)]
    if filtered:
        where.append(TrialRecord.state.in_(bindparam("states", expanding=True)))
    order: list[Any]
    if sort in ("value", "-value"):
        value = TrialRecord.value.desc() if sort == "-value" else TrialRecord.value.asc()
        order = [TrialRecord.value.is_(None), value, TrialRecord.number.asc()]
    else:
        order = [TrialRecord.number.desc() if sort == "-number" else TrialRecord.number.asc()]
    count = select(func.count()).select_from(TrialRecord).where(*where)
    page = (
        select(*TRIAL_SUMMARY_COLUMNS)
        .where(*where)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    return count, page


@functools.cache
def _best_trial(maximize: bool) -> Select[Any]:
    """The best complete trial of a study; parameter `study_id`."""
    value = TrialRecord.value.desc() if maximize else TrialRecord.value.asc()
    return (
        select(*TRIAL_SUMMARY_COLUMNS, TrialRecord.test_metrics)
        .where(
            TrialRecord.study_id == bindparam("study_id"),
            TrialRecord.role == TrialRole.search.value,
            TrialRecord.state == TrialState.complete.value,
            TrialRecord.value.is_not(None),
        )
        # feasible trials (and those of studies without constraints) before infeasible ones
        .order_by(TrialRecord.feasible.is_(False), value, TrialRecord.number)
        .limit(1)
    )
