"""Rules of the study endpoints: create (with its Optuna study), read, cancel; trainers.

Endpoints call these functions; every SQL query lives in `service.studies.repository`. Nothing
here commits: the request's unit of work does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db import unit_of_work
from service.errors import ConflictError, NotFoundError
from service.models import StudyRecord, StudyStatus, TrialState
from service.spec import StudySpec
from service.studies import repository
from service.studies.optuna_storage import LazyOptunaStorage
from service.studies.schemas import (
    BestResult,
    Page,
    StudyDetail,
    StudySummary,
    TrainerInfo,
    TrialDetail,
    TrialSummary,
)
from trainers import PARAM_NAMES, available_trainers

# ids and trial numbers are SQL INTEGERs (32-bit on PostgreSQL)
MAX_ID = 2**31 - 1

# The read paths build plain dicts from the repository's rows and validate each response once,
# in one pydantic call (e.g. `Page[TrialSummary].model_validate`), rather than one model per row
# and per nested `Params`/`Progress` (see docs/benchmarks.md, "Cheaper reads").
_TRIAL_KEYS = tuple(k for k in TrialSummary.model_fields if k != "params")
# a row of the repository's read queries (keyed by column name), or a dict of the same
_Columns = RowMapping | Mapping[str, Any]

__all__ = [
    "MAX_ID",
    "best_result",
    "cancel_study",
    "create_study",
    "database_problem",
    "list_studies",
    "list_trainers",
    "list_trials",
    "resolve_study",
    "study_detail",
    "trial_detail",
]


def resolve_study(session: Session, ref: str) -> StudyRecord:
    """The study with id `ref` (all digits) or name `ref`; raises `NotFoundError`."""
    # ASCII digits only ("²".isdigit() is true), and no id beyond the INTEGER column's range
    is_id = ref.isascii() and ref.isdigit() and int(ref) <= MAX_ID
    study = (
        repository.get_study(session, int(ref))
        if is_id
        else repository.get_study_by_name(session, ref)
    )
    if study is None:
        raise NotFoundError(f"study {ref!r} not found", loc=["path", "study"])
    return study


def _study_columns(study: StudyRecord) -> dict[str, Any]:
    """A study entity as the row `repository.list_studies` returns for it."""
    return {c.key: getattr(study, c.key) for c in repository.STUDY_SUMMARY_COLUMNS}


def _progress(study: _Columns) -> dict[str, int]:
    return {
        "n_trials": study["n_trials"],
        "finished": study["n_complete"] + study["n_pruned"],
        "complete": study["n_complete"],
        "pruned": study["n_pruned"],
        "failed": study["n_failed"],
        "running": study["n_running"],
    }


def _summary_fields(study: _Columns) -> dict[str, Any]:
    """`StudySummary` fields (unvalidated) of a `STUDY_SUMMARY_COLUMNS` row."""
    return {
        "id": study["id"],
        "name": study["name"],
        "trainer": study["trainer"],
        "status": study["status"],
        "metric": study["metric"],
        "direction": study["direction"],
        "progress": _progress(study),
        "best_value": study["best_value"],
        "best_trial_number": study["best_trial_number"],
        "created_at": study["created_at"],
        "started_at": study["started_at"],
        "finished_at": study["finished_at"],
        "error": study["error"],
    }


def _params(trial: _Columns) -> dict[str, Any]:
    return {name: trial[name] for name in PARAM_NAMES}


def _trial_fields(trial: _Columns) -> dict[str, Any]:
    """`TrialSummary` fields (unvalidated) of a `TRIAL_SUMMARY_COLUMNS` row.

    The columns are named like the fields, except the parameters, which nest under `params`.
    """
    fields = {key: trial[key] for key in _TRIAL_KEYS}
    fields["params"] = _params(trial)
    return fields


def study_detail(session: Session, study: StudyRecord) -> StudyDetail:
    """Spec, status, progress and the best trial of `study`."""
    best = repository.best_trial(session, study.id, study.direction)
    return StudyDetail.model_validate(
        {
            **_summary_fields(_study_columns(study)),
            "spec": study.spec,
            "updated_at": study.updated_at,
            "best_trial": _trial_fields(best) if best else None,
        }
    )


def create_study(
    session: Session, optuna_storage: LazyOptunaStorage, spec: StudySpec
) -> StudyDetail:
    """Store a validated spec as a `queued` study and create its Optuna study (same name).

    Raises:
        ConflictError: a study (regtune's or Optuna's) with this name already exists.
    """
    if repository.get_study_by_name(session, spec.name) is not None:
        raise ConflictError(f"a study named {spec.name!r} already exists", loc=["body", "name"])
    # The Optuna study is created first, in its own transaction: on SQLite a pending write of
    # ours would hold the database lock and Optuna's insert would wait for it (so no Optuna
    # write may follow our flush either). Its unique name also settles two concurrent
    # submissions of the same name: the second gets the 409.
    storage = optuna_storage.get()
    direction = optuna.study.StudyDirection[spec.objective.direction.upper()]
    try:
        storage.create_new_study(directions=[direction], study_name=spec.name)
    except optuna.exceptions.DuplicatedStudyError:
        if not _reclaimable(storage, spec.name, direction):
            raise ConflictError(
                f"an Optuna study named {spec.name!r} already exists in this database",
                loc=["body", "name"],
            ) from None
    if spec.enqueue:  # warm start: these run first, before any sampled trial
        optuna_study = optuna.load_study(study_name=spec.name, storage=storage)
        for params in spec.enqueue:
            optuna_study.enqueue_trial(params)
    study = StudyRecord(
        name=spec.name,
        trainer=spec.trainer,
        spec=spec.model_dump(mode="json"),
        status=StudyStatus.queued.value,
        metric=spec.objective.metric,
        direction=spec.objective.direction,
        n_trials=spec.budget.n_trials,
        n_complete=0,
        n_pruned=0,
        n_failed=0,
        n_running=0,
        consecutive_failures=0,
    )
    try:
        repository.add_study(session, study)
    except IntegrityError:
        raise ConflictError(
            f"a study named {spec.name!r} already exists", loc=["body", "name"]
        ) from None
    return study_detail(session, study)


def _reclaimable(
    storage: optuna.storages.BaseStorage, name: str, direction: optuna.study.StudyDirection
) -> bool:
    """Whether an Optuna study with no regtune row may become this submission's study.

    A server killed between creating the Optuna study and committing the regtune row leaves
    such an orphan; resubmitting the name must work. It is reused only when it has no trials
    and the same direction: then it is indistinguishable from a freshly created one (also when
    another submission of the same name is in flight: the unique name of the regtune row still
    lets only one of them through). A study made by plain Optuna, with trials, stays a 409.
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False  # deleted meanwhile; the 409 asks the client to retry
    return storage.get_study_directions(study_id) == [direction] and not storage.get_all_trials(
        study_id, deepcopy=False
    )


def list_studies(
    session: Session, statuses: Sequence[StudyStatus] | None, limit: int, offset: int
) -> Page[StudySummary]:
    rows, total = repository.list_studies(
        session, [s.value for s in statuses] if statuses else None, limit, offset
    )
    # one validation of the whole page (not one per row)
    return Page[StudySummary].model_validate(
        {
            "items": [_summary_fields(r) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


def list_trials(
    session: Session,
    study: StudyRecord,
    states: Sequence[TrialState] | None,
    sort: repository.TrialSort,
    limit: int,
    offset: int,
) -> Page[TrialSummary]:
    rows, total = repository.list_trials(
        session, study.id, [s.value for s in states] if states else None, sort, limit, offset
    )
    # one validation of the whole page (not one per row)
    return Page[TrialSummary].model_validate(
        {
            "items": [_trial_fields(r) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


def trial_detail(session: Session, study: StudyRecord, number: int) -> TrialDetail:
    """One trial with its per-epoch curves; raises `NotFoundError`."""
    trial = repository.get_trial(session, study.id, number)
    if trial is None:
        raise NotFoundError(
            f"study {study.name!r} has no trial number {number}", loc=["path", "number"]
        )
    epochs = repository.trial_epochs(session, trial["id"])
    return TrialDetail.model_validate(
        {
            **_trial_fields(trial),
            "test_metrics": trial["test_metrics"],
            "worker": trial["worker"],
            "epochs": [{"epoch": e.epoch, "metrics": e.metrics} for e in epochs],
        }
    )


def best_result(session: Session, study: StudyRecord) -> BestResult:
    """Best params and metrics; raises `ConflictError` while no trial has completed."""
    best = repository.best_trial(session, study.id, study.direction)
    status = StudyStatus(study.status)
    progress = _progress(_study_columns(study))
    if best is None or best["value"] is None or best["number"] is None:
        raise ConflictError(
            f"study {study.name!r} has no completed trial yet (status {status.value}, "
            f"{progress['finished']} of {progress['n_trials']} trials finished, "
            f"{progress['failed']} failed)"
        )
    return BestResult.model_validate(
        {
            "study_id": study.id,
            "study": study.name,
            "status": status,
            "final": status.is_final,
            "metric": study.metric,
            "direction": study.direction,
            "value": best["value"],
            "trial_number": best["number"],
            "params": _params(best),
            "best_epoch": best["best_epoch"],
            "epochs_run": best["epochs_run"],
            "metrics": best["metrics"],
            "test_metrics": best["test_metrics"],
            "progress": progress,
        }
    )


def cancel_study(session: Session, study: StudyRecord) -> StudyDetail:
    """Stop handing out trials; running trials stop at their next epoch (workers poll status).

    Raises:
        ConflictError: the study already ended (completed, failed or cancelled).
    """
    if not repository.cancel_study(session, study.id):
        session.refresh(study)
        raise ConflictError(
            f"study {study.name!r} is already {study.status}; only queued or running "
            "studies can be cancelled"
        )
    session.refresh(study)
    return study_detail(session, study)


def list_trainers() -> list[TrainerInfo]:
    """Every registered trainer with its metrics and config JSON schema, by name."""
    return [
        TrainerInfo(
            name=name,
            description=t.description,
            metrics=list(t.metrics),
            tags=list(t.tags),
            config_schema=t.config_schema(),
        )
        for name, t in sorted(available_trainers().items())
    ]


def database_problem(factory: sessionmaker[Session]) -> str | None:
    """None when the database answers a trivial query, else a short description of why not."""
    try:
        with unit_of_work(factory) as session:
            repository.ping(session)
    except SQLAlchemyError as exc:
        return f"unreachable: {exc.__class__.__name__}"
    return None
