"""Studies a worker cannot open or cannot record, run by a real `regtune worker` process.

A poison study (its pruner cannot be built) ends `failed` with the reason, and the study
submitted after it still runs; a metric logged as NaN never kills a worker on PostgreSQL.
"""

from __future__ import annotations

import math
import time

import httpx
import optuna
import pytest
from optuna.trial import TrialState as OptunaState
from sqlalchemy import update

from service.db import normalize_url
from service.migrations import upgrade
from service.models import StudyRecord, StudyStatus, TrialState
from tests.reliability._processes import regtune, server, stop
from tests.reliability.trainers import spec
from tests.worker.conftest import Db, insert_study, tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("test_trainers")]


def _poison(db: Db, study_id: int) -> None:
    """Give a stored study a pruner Optuna cannot build (OverflowError, not a ValueError).

    Written straight into the row: whatever the API checks at submit, a worker must survive a
    spec that only fails when it is opened.
    """
    record = db.study(study_id)
    poisoned = {**record.spec, "pruner": {"name": "threshold", "options": {"lower": 10**400}}}
    db.execute(
        lambda s: s.execute(
            update(StudyRecord).where(StudyRecord.id == study_id).values(spec=poisoned)
        )
    )


def test_a_study_that_cannot_be_opened_fails_and_the_next_study_runs(migrated_db_url: str) -> None:
    url = migrated_db_url
    db = Db(url)
    poison_id = insert_study(url, spec("poison", "slow-mlp", 3))
    _poison(db, poison_id)
    good_id = insert_study(url, spec("good", "slow-mlp", 2))
    worker = regtune(url, "worker", "--exit-when-idle", test_trainers=True)
    try:
        # before the fix the worker re-claimed the poison study forever and never exited
        assert worker.wait(240) == 0
    finally:
        stop(worker)
    poison = db.study(poison_id)
    assert poison.status == StudyStatus.failed
    assert poison.error is not None
    # refused when the spec is read, or when Optuna builds the pruner (OverflowError)
    assert poison.error.startswith("invalid spec: "), poison.error
    assert db.trials(poison_id) == []  # its claims were given back
    good = db.study(good_id)
    assert good.status == StudyStatus.completed
    assert good.n_complete == 2


@pytest.mark.postgres
def test_the_failure_reason_is_shown_by_the_api(pg_url: str) -> None:
    upgrade(pg_url)
    # `regtune serve --workers 1`: its worker is an ordinary child process (built-in trainers)
    with server(pg_url, workers=1) as base:
        db = Db(pg_url)
        poison_id = insert_study(pg_url, tiny_spec("poison-api", 3))
        _poison(db, poison_id)
        good_id = insert_study(pg_url, tiny_spec("good-api", 1))
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(600):
                good = client.get(f"/api/v1/studies/{good_id}").json()
                if good["status"] == "completed":
                    break
                time.sleep(0.2)
            poison = client.get(f"/api/v1/studies/{poison_id}").json()
    assert good["status"] == "completed"
    assert poison["status"] == "failed"
    assert poison["error"].startswith("invalid spec: ")


@pytest.mark.postgres
def test_a_nan_metric_never_kills_the_worker_and_the_row_matches_optuna(pg_url: str) -> None:
    upgrade(pg_url)
    study_id = insert_study(pg_url, spec("nan-metric", "nan-metric-mlp", 2))
    after_id = insert_study(pg_url, spec("after-nan", "slow-mlp", 1))
    worker = regtune(pg_url, "worker", "--exit-when-idle", test_trainers=True)
    try:
        assert worker.wait(240) == 0  # before the fix: the final write crashed the worker
    finally:
        stop(worker)
    db = Db(pg_url)
    trials = db.trials(study_id)
    assert [t.state for t in trials] == [TrialState.complete] * 2
    storage = optuna.storages.RDBStorage(normalize_url(pg_url), skip_table_creation=True)
    try:
        frozen = optuna.load_study(study_name="nan-metric", storage=storage).trials
    finally:
        storage.engine.dispose()
    by_number = {t.number: t for t in frozen}
    for row in trials:
        assert row.number is not None
        optuna_trial = by_number[row.number]
        assert optuna_trial.state == OptunaState.COMPLETE
        assert row.value == optuna_trial.value
        assert row.metrics is not None and row.metrics["val_auc"] is None  # stored as null
        assert math.isfinite(row.metrics["val_loss"])
        assert row.epochs_run == optuna_trial.user_attrs["epochs_run"]
        assert [e.metrics["val_auc"] for e in db.epochs(row.id)] == [None] * row.epochs_run
    assert db.study(study_id).status == StudyStatus.completed
    assert db.study(after_id).status == StudyStatus.completed  # the worker carried on
