"""The stale-trial sweep: fail trials whose worker died, give their slots back, fix counters.

Optuna reaps stale trials only when some worker starts a trial; `sweep_with` does it for the
whole database, so it can also run from the API process when no worker is alive. It never
visits studies one by one: a few indexed queries (`service.reliability.repository`) find what
needs attention, so a sweep costs the same however many studies are queued.

- a `running` row whose Optuna trial has finished (the worker died between Optuna's tell and
  its own final write) is rebuilt from what Optuna holds: value, best epoch, epochs run, the
  objective's per-epoch values, test metrics;
- a `running` row whose Optuna heartbeat is older than the grace period: Optuna fails it
  (and retries it with the same parameters), then the row follows;
- a claim that never got its Optuna trial is deleted (its slot is free again);
- a study past its deadline with nothing running ends;
- a submission's pending Optuna study left by a crash is deleted.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from datetime import timedelta

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import unit_of_work
from service.models import TrialState, utcnow
from service.reliability import repository as sweep_repo
from service.studies.optuna_storage import pending_submissions
from service.studies.repository import trial_epochs
from service.worker import repository as repo
from trainers.best import is_better, maximizes

__all__ = ["LOST_WORKER", "PENDING_SUBMISSION_TTL_S", "sweep_with"]

log = logging.getLogger("regtune.worker")

LOST_WORKER = "worker lost: no heartbeat within the grace period"
# a live worker records its own outcome right after Optuna's tell; the sweep leaves it this long
SETTLE_S = 2.0
# a submission's pending Optuna study older than this belongs to a submission that died
PENDING_SUBMISSION_TTL_S = 3600.0


def _fail_stale_optuna_trials(storage: RDBStorage, study_name: str) -> None:
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return  # no such Optuna study (deleted meanwhile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _best_step(steps: dict[int, float], maximize: bool) -> int | None:
    """The epoch with the best finite value (ties: the earliest)."""
    best_epoch, best_value = None, None
    for epoch, value in sorted(steps.items()):
        if is_better(value, best_value, maximize=maximize):
            best_epoch, best_value = epoch, value
    return best_epoch


def _lineage_exhausted(frozen: FrozenTrial, max_retries: int) -> bool:
    """Whether Optuna retries no more of this trial's lineage (`RetryHeartbeatStaleTrialCallback`
    stops once `retry_history`, the runs before this one, holds `max_retries` numbers)."""
    return len(frozen.system_attrs.get("retry_history") or []) >= max_retries


def _from_optuna(
    session: Session, candidate: sweep_repo.SweepCandidate, frozen: FrozenTrial, max_retries: int
) -> repo.TrialResult:
    """The row's outcome rebuilt from the finished Optuna trial (its source of truth).

    Optuna holds the value, the objective metric of every epoch (intermediate values) and the
    user attributes `run_trial` sets (`best_epoch`, `epochs_run`, `test_metrics`,
    `fail_reason`). Epochs whose metrics never reached SQL (the worker batches its writes) are
    stored with the objective metric alone; the best epoch's other metrics are taken from its
    stored epoch when there is one, and left empty otherwise, so the row never pairs one
    epoch's value with another epoch's metrics.

    A lost worker's trial is its run's result (`trainer_failed`: an extra run keeps its slot)
    once Optuna retries it no more: a reference or confirmation run whose worker died on it
    `max_retries` + 1 times (killed for memory, say) would die again with the same config and
    seed, and its slot given back would start it anew without end.
    """
    attrs = frozen.user_attrs
    metric = candidate.metric
    steps = dict(frozen.intermediate_values)
    stored = {e.epoch: e.metrics for e in trial_epochs(session, candidate.trial_id)}
    missing = [
        (epoch, {metric: value if math.isfinite(value) else None})
        for epoch, value in sorted(steps.items())
        if epoch not in stored
    ]
    if missing:
        repo.add_epochs(session, candidate.trial_id, missing, None)
    best_epoch = attrs.get("best_epoch")
    if not isinstance(best_epoch, int):
        best_epoch = _best_step(steps, maximizes(candidate.direction))
    epochs_run = attrs.get("epochs_run")
    if not isinstance(epochs_run, int):
        epochs_run = max(steps) + 1 if steps else None
    values = frozen.values if frozen.state == OptunaState.COMPLETE else None
    value: float | None = None
    if values:
        value = values[0]  # `frozen.value` raises for a multi-objective trial
    elif best_epoch is not None:
        value = steps.get(best_epoch)
    if value is not None and not math.isfinite(value):
        value = None
    metrics: dict[str, float] | None = None
    if best_epoch is not None and best_epoch in stored:
        metrics = dict(stored[best_epoch])
    elif value is not None:
        metrics = {metric: value}
    if frozen.state == OptunaState.COMPLETE:
        state = TrialState.complete
    elif frozen.state == OptunaState.PRUNED:
        state = TrialState.pruned
    else:
        state = TrialState.fail
    test_metrics = attrs.get("test_metrics") if state == TrialState.complete else None
    fail_reason = attrs.get("fail_reason")
    lost = state == TrialState.fail and not fail_reason
    exhausted = lost and _lineage_exhausted(frozen, max_retries)
    error = str(fail_reason) if fail_reason else LOST_WORKER
    if exhausted:
        error = f"{LOST_WORKER}, {max_retries + 1} time(s) in a row; not retried again"
    seed = attrs.get("train_seed")
    return repo.TrialResult(
        state,
        value=value,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        metrics=metrics,
        test_metrics=test_metrics if isinstance(test_metrics, dict) else None,
        error=error if state == TrialState.fail else None,
        counts_as_failure=bool(fail_reason),
        trainer_failed=bool(fail_reason) or exhausted,  # only a diverged trial records one
        train_seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        values=list(values) if values else None,
        # the bounds the worker gave Optuna (Trial.set_constraint); None without constraints
        feasible=all(v <= 0 for v in frozen.constraints.values()) if frozen.constraints else None,
    )


def _reconcile(
    session: Session,
    storage: RDBStorage,
    candidate: sweep_repo.SweepCandidate,
    settle: bool,
    max_retries: int,
) -> bool:
    """Record the outcome of a row's finished Optuna trial; False while it has not finished.

    With `settle`, a trial Optuna finished in the last `SETTLE_S` seconds is left to its worker,
    which is probably writing it right now.
    """
    frozen = storage.get_trial(candidate.optuna_trial_id)
    if not frozen.state.is_finished():
        return False
    recent = utcnow() - timedelta(seconds=SETTLE_S)
    if settle and frozen.datetime_complete is not None and frozen.datetime_complete > recent:
        return False
    study = repo.lock_study(session, candidate.study_id)
    if study is None:
        return False
    # its worker may have recorded it after all between our read and the lock
    if candidate.trial_id not in {r.id for r in repo.running_trials(session, study.id)}:
        return False
    result = _from_optuna(session, candidate, frozen, max_retries)
    repo.finish_trial(session, study, candidate.trial_id, result)
    repo.refresh_study(session, study)
    return True


def sweep_with(sessions: sessionmaker[Session], storage: RDBStorage, settings: Settings) -> int:
    """`sweep` on an open session factory and storage (what a worker reuses)."""
    now = utcnow()
    grace = settings.heartbeat_grace_period
    with unit_of_work(sessions) as session:
        candidates = sweep_repo.sweep_candidates(session, grace)
        lost = repo.stale_claims(session, now - timedelta(seconds=grace))
        claims = [(c.id, c.study_id) for c in lost]
        overdue = list(sweep_repo.overdue_studies(session, now))
        pending = list(pending_submissions(session, PENDING_SUBMISSION_TTL_S))

    for name in sorted({c.study_name for c in candidates if not c.optuna_finished}):
        _fail_stale_optuna_trials(storage, name)
    changed = 0
    for candidate in candidates:
        with unit_of_work(sessions) as session:
            # a trial this sweep just failed needs no settling time
            changed += _reconcile(
                session, storage, candidate, candidate.optuna_finished, settings.max_retries
            )

    claims_by_study: dict[int, list[int]] = defaultdict(list)
    for claim_id, study_id in claims:
        claims_by_study[study_id].append(claim_id)
    for study_id, claim_ids in sorted(claims_by_study.items()):
        with unit_of_work(sessions) as session:
            study = repo.lock_study(session, study_id)
            if study is None:
                continue
            for claim_id in claim_ids:
                repo.delete_claim(session, claim_id)
                changed += 1
            repo.refresh_study(session, study)
    for study_id in overdue:
        with unit_of_work(sessions) as session:
            study = repo.lock_study(session, study_id)
            if study is not None:
                repo.refresh_study(session, study)
    for optuna_id in pending:
        try:
            storage.delete_study(optuna_id)
        except KeyError:
            continue  # its submission cleaned up after all
        log.info("sweep deleted the Optuna study of a submission that died (%s)", optuna_id)
    if changed:
        log.info("sweep reconciled %d trial(s)", changed)
    return changed
