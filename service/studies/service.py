"""Rules of the study endpoints: create (with its Optuna study), read, cancel; trainers.

Endpoints call these functions; every SQL query lives in `service.studies.repository`. Nothing
here commits: the request's unit of work does.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db import unit_of_work
from service.errors import (
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from service.models import StudyRecord, StudyStatus, TrialState
from service.spec import StudySpec
from service.studies import confirmation, repository
from service.studies.optuna_storage import LazyOptunaStorage, pending_name, rename_study
from service.studies.pareto import pareto_indices
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
from trainers.best import maximizes

log = logging.getLogger(__name__)

# ids and trial numbers are SQL INTEGERs (32-bit on PostgreSQL)
MAX_ID = 2**31 - 1
# members of the Pareto set /best lists (by the first objective); a bound on the response
MAX_PARETO = 1_000

# The read paths build plain dicts from the repository's rows and validate each response once,
# in one pydantic call (e.g. `Page[TrialSummary].model_validate`), rather than one model per row
# and per nested `Params`/`Progress` (see docs/benchmarks.md, "Cheaper reads").
_TRIAL_KEYS = tuple(k for k in TrialSummary.model_fields if k != "params")
# a row of the repository's read queries (keyed by column name), or a dict of the same
_Columns = RowMapping | Mapping[str, Any]

__all__ = [
    "MAX_ID",
    "MAX_PARETO",
    "best_result",
    "cancel_study",
    "create_study",
    "database_problem",
    "list_studies",
    "list_trainers",
    "list_trials",
    "resolve_study",
    "study_detail",
    "study_objectives",
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
        "extra": study["n_extra"],
        "extra_finished": study["n_extra_finished"],
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
    """Spec, status, progress and the best trial of `study`: the one its `best_trial_number`
    names (with confirmation, the config ranked best by its mean, as /best), else the best
    single search trial."""
    best = None
    if study.best_trial_number is not None:
        best = repository.get_trial(session, study.id, study.best_trial_number)
    if best is None:
        best = repository.best_trial(session, study.id, study.direction)
    return StudyDetail.model_validate(
        {
            **_summary_fields(_study_columns(study)),
            "spec": study.spec,
            "reference_value": repository.reference_values(session, [study.id]).get(study.id),
            "updated_at": study.updated_at,
            "best_trial": _trial_fields(best) if best else None,
        }
    )


def create_study(
    session: Session,
    optuna_storage: LazyOptunaStorage,
    spec: StudySpec,
    *,
    max_active: int | None = None,
) -> StudyDetail:
    """Store a validated spec as a `queued` study with its Optuna study and warm-start trials.

    Atomic as users see it: the Optuna study is built (created, `enqueue` points added) under a
    pending name no study can have, then takes the study's name in the same transaction that
    inserts regtune's row (the caller's unit of work commits both). A crash before that commit
    leaves only a pending study, which blocks no name and which the sweep deletes; of concurrent
    submissions of one name, the first to insert its row wins and every other one deletes its
    own pending study and gets the 409, so a loser's trials never land in the winner's study.

    Args:
        max_active: refuse the study when this many studies are already queued or running
            (`Settings.max_queued_studies`); None: no limit.

    Raises:
        ConflictError: a study (regtune's or Optuna's) with this name already exists.
        TooManyRequestsError: `max_active` studies are queued or running already.
    """
    if repository.get_study_by_name(session, spec.name) is not None:
        raise _name_taken(spec.name)
    if max_active is not None:
        active = repository.count_active_studies(session)
        if active >= max_active:
            raise TooManyRequestsError(
                f"{active} studies are queued or running; the limit is {max_active} "
                "(REGTUNE_MAX_QUEUED_STUDIES): wait for some to finish or cancel some"
            )
    # Every Optuna write happens before ours: on SQLite a pending write of this session would
    # hold the database lock and Optuna's inserts would wait for it.
    storage = optuna_storage.get()
    directions = [optuna.study.StudyDirection[o.direction.upper()] for o in spec.objectives]
    _reclaim_orphan(session, storage, spec.name, directions)
    pending = pending_name()
    optuna_id = storage.create_new_study(directions=directions, study_name=pending)
    try:
        if spec.enqueue:  # warm start: these run first, before any sampled trial
            optuna_study = optuna.load_study(study_name=pending, storage=storage)
            for params in spec.enqueue:
                optuna_study.enqueue_trial(params)
        study = _insert_named(session, spec, optuna_id, pending)
    except BaseException:
        # our failed write may hold SQLite's lock, which Optuna's delete needs
        session.rollback()
        _discard(storage, optuna_id)
        raise
    return study_detail(session, study)


def _name_taken(name: str) -> ConflictError:
    return ConflictError(f"a study named {name!r} already exists", loc=["body", "name"])


def _optuna_name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"an Optuna study named {name!r} already exists in this database", loc=["body", "name"]
    )


def _insert_named(session: Session, spec: StudySpec, optuna_id: int, pending: str) -> StudyRecord:
    """Insert regtune's row and give the pending Optuna study its name (flushed, not committed)."""
    study = StudyRecord(
        name=spec.name,
        trainer=spec.trainer,
        spec=spec.model_dump(mode="json"),
        status=StudyStatus.queued.value,
        metric=spec.first_objective.metric,
        direction=spec.first_objective.direction,
        n_trials=spec.budget.n_trials,
        n_extra=spec.n_extra,
        n_complete=0,
        n_pruned=0,
        n_failed=0,
        n_running=0,
        consecutive_failures=0,
    )
    try:
        repository.add_study(session, study)
        renamed = rename_study(session, optuna_id, pending, spec.name)
    except IntegrityError:
        session.rollback()
        # the other submission's row and Optuna study committed together: which one collided?
        if repository.get_study_by_name(session, spec.name) is not None:
            raise _name_taken(spec.name) from None
        raise _optuna_name_taken(spec.name) from None
    if not renamed:
        raise ServiceUnavailableError(
            "the submission took so long that its unfinished Optuna study was cleaned up; "
            "submit it again"
        )
    return study


def _discard(storage: optuna.storages.BaseStorage, optuna_id: int) -> None:
    """Delete a pending Optuna study (best effort: the sweep deletes what is left)."""
    try:
        storage.delete_study(optuna_id)
    except Exception:
        log.warning("cannot delete pending Optuna study %s; the sweep will", optuna_id)


def _reclaim_orphan(
    session: Session,
    storage: optuna.storages.BaseStorage,
    name: str,
    directions: list[optuna.study.StudyDirection],
) -> None:
    """Make way for `name` when an Optuna study of that name has no regtune row; else 409.

    Versions before atomic submission could leave such an orphan (a server killed between
    creating the Optuna study and storing the row). It is deleted when it has no trials and the
    same directions: then it is indistinguishable from a fresh one. A study made by plain Optuna,
    with trials or another direction, stays a 409.
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return
    # a submission commits its row and its Optuna study's name together: this study either has
    # a row (another submission won) or is an orphan
    if repository.get_study_by_name(session, name) is not None:
        raise _name_taken(name)
    if storage.get_study_directions(study_id) != directions or storage.get_all_trials(
        study_id, deepcopy=False
    ):
        raise _optuna_name_taken(name)
    # KeyError: another submission reclaimed it first; the row's unique name settles the race
    with contextlib.suppress(KeyError):
        storage.delete_study(study_id)


def list_studies(
    session: Session, statuses: Sequence[StudyStatus] | None, limit: int, offset: int
) -> Page[StudySummary]:
    rows, total = repository.list_studies(
        session, [s.value for s in statuses] if statuses else None, limit, offset
    )
    references = repository.reference_values(session, [r["id"] for r in rows])
    # one validation of the whole page (not one per row)
    return Page[StudySummary].model_validate(
        {
            "items": [
                {**_summary_fields(r), "reference_value": references.get(r["id"])} for r in rows
            ],
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
    objectives = study_objectives(study)
    if best is None or best["value"] is None or best["number"] is None:
        raise ConflictError(
            f"study {study.name!r} has no completed trial yet (status {status.value}, "
            f"{progress['finished']} of {progress['n_trials']} trials finished, "
            f"{progress['failed']} failed)"
        )
    single_run, confirmed = None, _confirmed_best(session, study)
    chosen: _Columns = best
    value = best["value"]
    if confirmed is not None:
        summary, runs = confirmed
        if runs.trial_number != best["number"]:
            single_run = {"trial_number": best["number"], "value": best["value"]}
            ranked = repository.get_trial(session, study.id, runs.trial_number)
            chosen = ranked if ranked is not None else best
        value = summary.mean
    return BestResult.model_validate(
        {
            "study_id": study.id,
            "study": study.name,
            "status": status,
            "final": status.is_final,
            "metric": study.metric,
            "direction": study.direction,
            "value": value,
            "trial_number": chosen["number"],
            "params": _params(chosen),
            "best_epoch": chosen["best_epoch"],
            "epochs_run": chosen["epochs_run"],
            "metrics": chosen["metrics"],
            "test_metrics": chosen["test_metrics"],
            "progress": progress,
            "objectives": objectives,
            "feasible": chosen["feasible"],
            "pareto": _pareto(session, study.id, objectives) if len(objectives) > 1 else None,
            "reference": _reference(session, study.id),
            "confirmation": _confirmation(*confirmed) if confirmed else None,
            "single_run": single_run,
        }
    )


def _confirmed_best(
    session: Session, study: StudyRecord
) -> tuple[confirmation.RunStats, confirmation.ConfigRuns] | None:
    """The config with the best mean over its runs (search run + repeats), or None."""
    configs = repository.confirmed_configs(session, study.id)
    runs = confirmation.best_by_mean(configs, maximizes(study.direction))
    summary = runs.stats() if runs is not None else None
    return (summary, runs) if runs is not None and summary is not None else None


def _confirmation(summary: confirmation.RunStats, runs: confirmation.ConfigRuns) -> dict[str, Any]:
    finite = [math.isfinite(v) for v in runs.values]
    return {
        "n": summary.n,
        "mean": summary.mean,
        "std": summary.std,
        "ci95_low": summary.ci95_low,
        "ci95_high": summary.ci95_high,
        "values": [v for v, ok in zip(runs.values, finite, strict=True) if ok],
        "trial_numbers": [n for n, ok in zip(runs.trial_numbers, finite, strict=True) if ok],
        "failed": [n for n, ok in zip(runs.trial_numbers, finite, strict=True) if not ok],
    }


def _reference(session: Session, study_id: int) -> dict[str, Any] | None:
    """The reference run's outcome (`RunResult` fields), or None before it started."""
    row = repository.reference_trial(session, study_id)
    if row is None:
        return None
    return {
        "trial_number": row["number"],
        "state": row["state"],
        "params": _params(row),
        **{
            key: row[key]
            for key in (
                "value",
                "metrics",
                "test_metrics",
                "gap",
                "val_ece",
                "near_zero_frac",
                "weight_l2",
            )
        },
    }


def study_objectives(study: StudyRecord) -> list[dict[str, str]]:
    """The stored spec's objectives as {metric, direction}, in order (one for older specs)."""
    stored = study.spec.get("objective") if isinstance(study.spec, dict) else None
    entries = stored if isinstance(stored, list) else [stored or {}]
    return [
        {
            "metric": str(entry.get("metric", study.metric)),
            "direction": str(entry.get("direction", study.direction)),
        }
        for entry in entries
        if isinstance(entry, dict)
    ] or [{"metric": study.metric, "direction": study.direction}]


def _pareto(
    session: Session, study_id: int, objectives: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """The non-dominated complete search trials, by the first objective (at most MAX_PARETO).

    Among the feasible trials when one is; otherwise among all (each marked infeasible).
    """
    rows = [
        r
        for r in repository.pareto_candidates(session, study_id)
        if isinstance(r["values"], list) and len(r["values"]) == len(objectives)
    ]
    if any(r["feasible"] is True for r in rows):
        rows = [r for r in rows if r["feasible"] is not False]
    maximize = [o["direction"] == "maximize" for o in objectives]
    front = pareto_indices([r["values"] for r in rows], maximize)[:MAX_PARETO]
    by_number = {
        t["number"]: t
        for t in repository.trials_by_number(session, study_id, [rows[i]["number"] for i in front])
    }
    members = [by_number[rows[i]["number"]] for i in front if rows[i]["number"] in by_number]
    return [
        {
            "number": t["number"],
            "params": _params(t),
            "values": t["values"],
            "metrics": t["metrics"],
            "feasible": t["feasible"],
        }
        for t in members
    ]


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
