"""Cancel over HTTP while a real worker process trains (PostgreSQL)."""

from __future__ import annotations

import httpx
import optuna
import pytest
from optuna.trial import TrialState as OptunaState

from service.db import normalize_url
from service.migrations import upgrade
from service.models import StudyStatus, TrialState
from tests.reliability._processes import regtune, server, stop
from tests.reliability.trainers import spec
from tests.worker.conftest import Db, insert_study, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.usefixtures("test_trainers")]


def test_cancel_stops_the_running_trial_at_its_next_epoch_as_cancelled(pg_url: str) -> None:
    upgrade(pg_url)
    study_id = insert_study(pg_url, spec("cancel", "slow-mlp", 3, epoch_s=0.3, max_epochs=500))
    db = Db(pg_url)
    with server(pg_url) as base:
        worker = regtune(pg_url, "worker", "--study", str(study_id), test_trainers=True)
        try:
            wait_for(lambda: any(t.epochs_run >= 2 for t in db.trials(study_id)), 120, "epochs")
            r = httpx.post(f"{base}/api/v1/studies/{study_id}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
            wait_for(
                lambda: all(t.state == TrialState.cancelled for t in db.trials(study_id)),
                60,
                "the trial to stop",
            )
            assert worker.poll() is None  # the worker lives on, idle
        finally:
            stop(worker)
        trials = httpx.get(f"{base}/api/v1/studies/{study_id}/trials").json()["items"]
    (trial,) = trials  # no new trial was handed out
    assert trial["state"] == "cancelled" and trial["error"] is None
    assert 2 <= trial["epochs_run"] < 500
    assert db.study(study_id).status == StudyStatus.cancelled
    frozen = optuna.load_study(study_name="cancel", storage=normalize_url(pg_url)).trials
    assert [t.state for t in frozen] == [OptunaState.PRUNED]
