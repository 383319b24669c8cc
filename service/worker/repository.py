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

from sqlalchemy import Select, and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.models import (
    StudyRecord,
    StudyStatus,
    TrialEpoch,
    TrialRecord,
    TrialRole,
    TrialState,
    utcnow,
)
from service.studies import confirmation, extras, lifecycle
from service.studies import repository as studies_repo
from service.studies.lifecycle import ACTIVE_STATUSES, Counts, Ending
from trainers.best import BestEpoch, maximizes
from trainers.params import PARAM_NAMES
from trainers.space import SearchSpace

__all__ = [
    "FINAL_TRIAL_STATES",
    "TrialResult",
    "add_epochs",
    "bind_trial",
    "candidate_studies",
    "claim_index",
    "claim_slot",
    "clean_metrics",
    "delete_claim",
    "end_study",
    "extra_run",
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
_PARAM_COLUMNS = tuple(getattr(TrialRecord, name) for name in PARAM_NAMES)
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
    # the training itself failed (not the database or the worker around it): an extra run
    # that failed so is not re-run (`lifecycle.keeps_slot`)
    trainer_failed: bool = False
    train_seed: int | None = None  # the seed the trainer ran with (Optuna user attr)


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
    """Queued/running studies that still have a free slot, oldest first.

    The slots are the ``n_trials`` search slots, then one per planned extra run (``n_extra``).
    """
    used = _slots_used(StudyRecord.id).scalar_subquery()
    # extra runs wait for the whole search: no worker locks a study while its last search
    # trials run
    searching = (
        select(TrialRecord.id)
        .where(
            TrialRecord.study_id == StudyRecord.id,
            TrialRecord.role == TrialRole.search.value,
            TrialRecord.state.in_(IN_PROGRESS),
        )
        .exists()
    )
    query = (
        select(StudyRecord.id)
        .where(
            StudyRecord.status.in_(ACTIVE_STATUSES),
            or_(
                used < StudyRecord.n_trials,
                and_(used < StudyRecord.n_trials + StudyRecord.n_extra, ~searching),
            ),
        )
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

    Search slots first; once every search trial has finished, the extra runs (reference,
    confirmation: `service.studies.extras`) in plan order, the row carrying the run's role,
    parameters, seed and repeated trial.
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
    extra: extras.ExtraRun | None = None
    if free is None:
        plan = _extra_plan(session, study)
        if not plan:
            return None
        index = next((i for i in range(len(plan)) if study.n_trials + i not in used), None)
        if index is None:
            return None
        free, extra = study.n_trials + index, plan[index]
    start = lifecycle.start_on_claim(study.status, study.spec, now)
    if start is not None:
        study.status = start.status.value
        study.started_at = start.started_at
        study.deadline_at = start.deadline_at
    row = TrialRecord(
        study_id=study.id, slot=free, state=TrialState.claimed.value, worker=worker, claimed_at=now
    )
    if extra is not None:
        row.role = extra.role.value
        row.train_seed = extra.train_seed
        row.repeat_of = extra.repeat_of
        for name in PARAM_NAMES:
            setattr(row, name, extra.params.get(name))
    session.add(row)
    session.flush()  # IntegrityError here means another worker took the slot: caller retries
    study.n_running = (study.n_running or 0) + 1
    return row


def claim_index(session: Session, row: TrialRecord) -> int:
    """How many trials of the row's study were claimed before it (and kept: a claim given back
    before its trial existed is deleted). Per study, so a seeded study samples the same trials
    again on a database that already holds others (`optimization.trial_seed`)."""
    before = session.scalar(
        select(func.count(TrialRecord.id)).where(
            TrialRecord.study_id == row.study_id, TrialRecord.id < row.id
        )
    )
    return int(before or 0)


def _search_done(session: Session, study: StudyRecord) -> bool:
    """Every search slot holds a finished (complete or pruned) trial."""
    finished = session.scalar(
        select(func.count(TrialRecord.id)).where(
            TrialRecord.study_id == study.id,
            TrialRecord.role == TrialRole.search.value,
            TrialRecord.state.in_((TrialState.complete.value, TrialState.pruned.value)),
        )
    )
    return int(finished or 0) >= study.n_trials


def ranked_search_runs(session: Session, study: StudyRecord) -> list[extras.SearchRun]:
    """Complete search trials with a value, best first (ties: the earlier trial): the
    configurations extra runs repeat. Feasible ones only when any is (a study with constraints
    never confirms, and so never ranks first, a configuration that breaks them), and each
    configuration once (a point sampled or enqueued twice: its best run)."""
    order = TrialRecord.value.desc() if maximizes(study.direction) else TrialRecord.value.asc()
    rows = session.execute(
        select(
            TrialRecord.number,
            TrialRecord.value,
            TrialRecord.train_seed,
            TrialRecord.feasible,
            *_PARAM_COLUMNS,
        )
        .where(
            TrialRecord.study_id == study.id,
            TrialRecord.role == TrialRole.search.value,
            TrialRecord.state == TrialState.complete.value,
            TrialRecord.value.is_not(None),
            TrialRecord.number.is_not(None),
        )
        .order_by(TrialRecord.feasible.is_(False), order, TrialRecord.number)
    ).all()
    if any(row.feasible is not False for row in rows):
        rows = [row for row in rows if row.feasible is not False]
    runs: dict[tuple[Any, ...], extras.SearchRun] = {}
    for row in rows:
        params = {name: getattr(row, name) for name in PARAM_NAMES}
        runs.setdefault(
            tuple(params.values()),
            extras.SearchRun(
                number=row.number, value=row.value, params=params, train_seed=row.train_seed
            ),
        )
    return list(runs.values())


def _extra_plan(session: Session, study: StudyRecord) -> list[extras.ExtraRun]:
    """The study's extra runs decided so far once its search is done (empty before, or when
    none is planned); lowers `n_extra` to the plan's total (confirmation repeats at most the
    completed trials; a race drops the repeats of configurations it leaves behind)."""
    if not study.n_extra or not _search_done(session, study):
        return []
    space = SearchSpace.model_validate(study.spec.get("search_space") or {})
    # a race's plan reads each repeated config's finished repeats, in trial-number order, which
    # is round order (a race plans a round only once the one before it has finished); a plain
    # plan does not, so claims and refreshes skip the query
    confirmed = (
        {c.trial_number: c.values[1:] for c in studies_repo.confirmed_configs(session, study.id)}
        if extras.races(study.spec)
        else None
    )
    plan = extras.plan_extras(
        study.spec,
        ranked_search_runs(session, study),
        space,
        confirmed,
        maximize=maximizes(study.direction),
    )
    runs = plan.runs[: study.n_extra]
    if plan.total < study.n_extra:
        study.n_extra = plan.total
    return runs


def extra_run(row: TrialRecord) -> extras.ExtraRun | None:
    """The extra run a claimed row holds (None for a search trial)."""
    if row.role == TrialRole.search.value:
        return None
    return extras.ExtraRun(
        role=TrialRole(row.role),
        params={name: getattr(row, name) for name in PARAM_NAMES},
        train_seed=row.train_seed,
        repeat_of=row.repeat_of,
    )


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

    A failed or cancelled trial gives its slot back, so finished trials still reach n_trials,
    except an extra run's own failure, which is its result (`lifecycle.keeps_slot`).
    """
    row = session.get(TrialRecord, trial_id, populate_existing=True)
    if row is None:
        return
    now = utcnow()
    row.state = result.state.value
    extra = row.role != TrialRole.search.value
    if not lifecycle.keeps_slot(result.state, result.trainer_failed, extra=extra):
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
    if result.train_seed is not None:
        row.train_seed = result.train_seed
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
        study.consecutive_failures or 0, result.state, result.counts_as_failure, extra=extra
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
    """Recompute a locked study's counters and best trial; end it when its budget is met.

    The counters count search trials (what ``n_trials`` budgets), except ``n_running``, which
    counts every trial in progress; ``n_extra_finished`` counts finished extra runs (a failed
    one that kept its slot included: `lifecycle.keeps_slot`). With
    confirmation runs, the best is the confirmed configuration with the best mean.
    """
    search = TrialRecord.role == TrialRole.search.value
    counts = session.execute(
        select(
            _count((TrialRecord.state == "complete") & search),
            _count((TrialRecord.state == "pruned") & search),
            _count((TrialRecord.state == "fail") & search),
            _count(TrialRecord.state.in_(IN_PROGRESS)),
            _count(_run_done & ~search),
        ).where(TrialRecord.study_id == study.id)
    ).one()
    study.n_complete, study.n_pruned, study.n_failed, study.n_running, extra_finished = (
        int(c) for c in counts
    )
    study.n_extra_finished = extra_finished
    if study.n_extra and study.n_complete + study.n_pruned >= study.n_trials:
        _extra_plan(session, study)  # lowers n_extra to what the finished search allows
    study.best_trial_number, study.best_value = _best(session, study)

    ending = lifecycle.ending_after_trials(
        status=study.status,
        n_trials=study.n_trials,
        counts=Counts(study.n_complete, study.n_pruned, study.n_failed, study.n_running),
        deadline_at=study.deadline_at,
        now=utcnow(),
        consecutive_failures=study.consecutive_failures or 0,
        max_consecutive_failures=max_consecutive_failures,
        last_error=last_error,
        n_extra=study.n_extra or 0,
        extra_finished=extra_finished,
    )
    if ending is not None:
        end_study(session, study, ending)
    session.flush()


# a finished trial that kept its slot: complete, pruned, or an extra run that failed on its own
_run_done = TrialRecord.slot.is_not(None) & TrialRecord.state.in_(
    (TrialState.complete.value, TrialState.pruned.value, TrialState.fail.value)
)


def _count(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _best(session: Session, study: StudyRecord) -> tuple[int | None, float | None]:
    """(trial number, value) of the study's best: the best mean of a confirmed config when
    there is one, else the best single search trial."""
    ranked = confirmation.best_by_mean(
        studies_repo.confirmed_configs(session, study.id), maximizes(study.direction)
    )
    if ranked is not None:
        summary = ranked.stats()
        assert summary is not None
        return ranked.trial_number, summary.mean
    order = TrialRecord.value.desc() if maximizes(study.direction) else TrialRecord.value.asc()
    best = session.execute(
        select(TrialRecord.number, TrialRecord.value)
        .where(
            TrialRecord.study_id == study.id,
            TrialRecord.role == TrialRole.search.value,
            TrialRecord.state == TrialState.complete.value,
            TrialRecord.value.is_not(None),
        )
        # a feasible trial (or one of a study without constraints) before an infeasible one
        .order_by(TrialRecord.feasible.is_(False), order, TrialRecord.number)
        .limit(1)
    ).first()
    return (best[0], best[1]) if best else (None, None)


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
