"""The stale-trial sweep: fail trials whose worker died, give their slots back, fix counters.

Optuna reaps stale trials only when some worker starts a trial; `sweep(url)` does it for every
active study, so it can also run from the API process when no worker is alive.
"""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState as OptunaState
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings, get_settings
from service.db import make_engine, make_session_factory, unit_of_work
from service.models import TrialState, utcnow
from service.worker import repository as repo

__all__ = ["sweep", "sweep_with"]

log = logging.getLogger("regtune.worker")

LOST_WORKER = "worker lost: no heartbeat within the grace period"
# a live worker records its own outcome right after Optuna's tell; the sweep leaves it this long
SETTLE_S = 2.0


def sweep(url: str | None = None, settings: Settings | None = None) -> int:
    """Sweep the database at `url` once; returns how many trials were reconciled."""
    settings = settings or get_settings()
    url = url or settings.database_url
    from service.worker.optimization import open_storage

    engine = make_engine(url)
    storage = open_storage(url, settings)
    try:
        return sweep_with(make_session_factory(engine), storage, settings)
    finally:
        storage.remove_session()
        storage.engine.dispose()
        engine.dispose()


def _fail_stale_optuna_trials(storage: RDBStorage, study_name: str) -> None:
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return  # no trial was ever created for it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _reconcile(session: Session, storage: RDBStorage, settings: Settings, study_id: int) -> int:
    """Rows still `running` whose Optuna trial ended without the worker recording it."""
    changed = 0
    settle = utcnow() - timedelta(seconds=SETTLE_S)
    for row in repo.running_trials(session, study_id):
        if row.optuna_trial_id is None:
            continue
        frozen = storage.get_trial(row.optuna_trial_id)
        if not frozen.state.is_finished():
            continue
        if frozen.datetime_complete is not None and frozen.datetime_complete > settle:
            continue
        if frozen.state == OptunaState.COMPLETE:
            result = repo.TrialResult(TrialState.complete, value=frozen.value)
        elif frozen.state == OptunaState.PRUNED:
            result = repo.TrialResult(TrialState.pruned)
        else:
            result = repo.TrialResult(TrialState.fail, error=LOST_WORKER, counts_as_failure=False)
        study = repo.lock_study(session, study_id)
        if study is not None:
            repo.finish_trial(session, study, row.id, result)
            changed += 1
    return changed


def sweep_with(sessions: sessionmaker[Session], storage: RDBStorage, settings: Settings) -> int:
    """`sweep` on an open session factory and storage (what a worker reuses)."""
    changed = 0
    with unit_of_work(sessions) as session:
        studies = [(s.id, s.name) for s in repo.active_studies(session)]
    lost_claims_before = utcnow() - timedelta(seconds=settings.heartbeat_grace_period)
    for study_id, name in studies:
        _fail_stale_optuna_trials(storage, name)
        with unit_of_work(sessions) as session:
            changed += _reconcile(session, storage, settings, study_id)
        with unit_of_work(sessions) as session:
            study = repo.lock_study(session, study_id)
            if study is None:
                continue
            for claim in repo.stale_claims(session, lost_claims_before):
                if claim.study_id == study_id:
                    repo.delete_claim(session, claim.id)
                    changed += 1
            repo.refresh_study(session, study)
    if changed:
        log.info("sweep reconciled %d trial(s)", changed)
    return changed
