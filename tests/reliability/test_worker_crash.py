"""Workers killed with SIGKILL: heartbeats, the API's sweeper, retries, and a kill storm."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time

import httpx
import optuna
import pytest
from optuna.trial import TrialState as OptunaState

from service.db import normalize_url
from service.migrations import upgrade
from service.models import StudyStatus, TrialRecord, TrialState
from service.worker.stale import LOST_WORKER
from tests.reliability._processes import regtune, server, stop, stop_all
from tests.reliability.trainers import spec
from tests.worker.conftest import Db, insert_study, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.usefixtures("test_trainers")]

# seconds; what the tests run with (defaults: interval 10, grace 120, sweep every 30)
FAST = {
    "REGTUNE_HEARTBEAT_INTERVAL": "1",
    "REGTUNE_HEARTBEAT_GRACE_PERIOD": "5",
    "REGTUNE_SWEEP_INTERVAL": "1",
    # every epoch reaches SQL at once, so `epochs_run` shows which trials are mid-training
    "REGTUNE_EPOCH_FLUSH_INTERVAL": "0",
}
MAX_RETRIES = 3
OPTUNA_OF = {
    TrialState.complete: OptunaState.COMPLETE,
    TrialState.pruned: OptunaState.PRUNED,
    TrialState.cancelled: OptunaState.PRUNED,
    TrialState.fail: OptunaState.FAIL,
}


def _worker(url: str, study_id: int, **env: str) -> subprocess.Popen[bytes]:
    return regtune(url, "worker", "--study", str(study_id), test_trainers=True, **FAST, **env)


def _name(proc: subprocess.Popen[bytes]) -> str:
    return f"{socket.gethostname()}:{proc.pid}"  # how a worker names itself


def _running(db: Db, study_id: int, worker: str | None = None) -> list[TrialRecord]:
    return [
        t
        for t in db.trials(study_id)
        if t.state == TrialState.running and t.epochs_run >= 1 and worker in (None, t.worker)
    ]


def _assert_agrees_with_optuna(db: Db, url: str, study_id: int, name: str) -> None:
    """Every numbered regtune row has the Optuna trial of the same number, in the same state."""
    frozen = {t.number: t for t in optuna.load_study(study_name=name, storage=url).trials}
    assert not [t for t in frozen.values() if t.state == OptunaState.RUNNING]
    rows = [t for t in db.trials(study_id) if t.number is not None]
    assert {t.number for t in rows} == {n for n, t in frozen.items() if t.state.is_finished()}
    for row in rows:
        assert row.number is not None
        assert frozen[row.number].state == OPTUNA_OF[TrialState(row.state)], row.number
        if row.state == TrialState.complete:
            assert frozen[row.number].value == pytest.approx(row.value)


def test_a_killed_workers_trial_is_failed_by_the_api_and_retried(pg_url: str) -> None:
    upgrade(pg_url)
    study_id = insert_study(pg_url, spec("killed", "slow-mlp", 3, epoch_s=0.5, max_epochs=4))
    db = Db(pg_url)
    with server(pg_url, workers=0, test_trainers=False, **FAST) as base:
        first = _worker(pg_url, study_id)
        try:
            wait_for(lambda: bool(_running(db, study_id)), 120, "a trial mid-training")
            (victim,) = _running(db, study_id)
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        finally:
            stop(first)
        # no worker is alive: the API's sweeper fails the trial once its heartbeat is stale
        wait_for(
            lambda: db.trials(study_id)[0].state == TrialState.fail, 60, "the sweeper's verdict"
        )
        dead = next(t for t in db.trials(study_id) if t.id == victim.id)
        assert dead.error == LOST_WORKER and dead.slot is None
        frozen = optuna.load_study(study_name="killed", storage=pg_url).trials
        assert dead.number is not None
        assert frozen[dead.number].state == OptunaState.FAIL
        waiting = [t for t in frozen if t.state == OptunaState.WAITING]
        assert [t.params["dropout"] for t in waiting] == [pytest.approx(dead.dropout)]

        second = _worker(pg_url, study_id)
        try:
            wait_for(lambda: db.study(study_id).status == StudyStatus.completed, 180, "completion")
        finally:
            stop(second)
        trials = httpx.get(f"{base}/api/v1/studies/{study_id}/trials").json()["items"]
    study = db.study(study_id)
    assert study.n_complete + study.n_pruned == 3 and study.n_running == 0
    (retry,) = [t for t in trials if t["retry_of"] == dead.number]
    assert retry["state"] == "complete"
    assert retry["params"]["dropout"] == pytest.approx(dead.dropout)
    assert retry["params"]["weight_decay"] == pytest.approx(dead.weight_decay)
    _assert_agrees_with_optuna(db, pg_url, study_id, "killed")


def test_kill_storm(pg_url: str) -> None:
    """30 trials, 3 workers, a random worker SIGKILLed mid-trial 10 times and restarted."""
    upgrade(pg_url)
    n_trials, kills = 30, 10
    study_id = insert_study(pg_url, spec("storm", "slow-mlp", n_trials, epoch_s=0.3))
    db = Db(pg_url)
    rng = random.Random(0)
    env = {"REGTUNE_MAX_RETRIES": str(MAX_RETRIES)}
    killed: list[int] = []  # regtune_trials.id of each trial a kill interrupted
    storage = optuna.storages.RDBStorage(normalize_url(pg_url))
    # the API's sweeper creates retries too
    with server(pg_url, workers=0, test_trainers=False, **FAST, **env):
        workers = [_worker(pg_url, study_id, **env) for _ in range(3)]
        try:
            while len(killed) < kills:
                assert db.study(study_id).status == StudyStatus.running or not killed
                wait_for(lambda: bool(_running(db, study_id)), 120, "a trial to kill")
                slot = rng.randrange(len(workers))
                victims = _running(db, study_id, _name(workers[slot]))
                if not victims:
                    time.sleep(0.2)
                    continue
                workers[slot].send_signal(signal.SIGKILL)
                workers[slot].wait(30)
                # a victim may have finished between the read and the kill; once the worker is
                # dead its rows can no longer change (the sweeper waits out the grace period).
                # One killed after Optuna's tell but before writing its own row did finish: the
                # sweep records Optuna's outcome for it (checked by _assert_agrees_with_optuna).
                interrupted = {
                    t.id
                    for t in db.trials(study_id)
                    if t.state == TrialState.running
                    and t.optuna_trial_id is not None
                    and not storage.get_trial(t.optuna_trial_id).state.is_finished()
                }
                killed.extend(v.id for v in victims if v.id in interrupted)
                workers[slot] = _worker(pg_url, study_id, **env)
            wait_for(lambda: db.study(study_id).status == StudyStatus.completed, 240, "completion")
        finally:
            stop_all(workers)

    study = db.study(study_id)
    trials = db.trials(study_id)
    assert study.n_complete + study.n_pruned == n_trials
    assert sum(TrialState(t.state).is_finished for t in trials) == n_trials
    assert not [t for t in trials if t.state in (TrialState.running, TrialState.claimed)]
    by_id = {t.id: t for t in trials}
    retried = {t.retry_of for t in trials if t.retry_of is not None}
    frozen = optuna.load_study(study_name="storm", storage=normalize_url(pg_url)).trials
    retries_before = {t.number: len(t.system_attrs.get("retry_history", [])) for t in frozen}
    for trial_id in killed:  # every interrupted trial: FAIL with the reason, and retried
        dead = by_id[trial_id]
        assert dead.state == TrialState.fail and dead.number is not None
        assert (dead.error or "").startswith(LOST_WORKER), dead.number
        # ... unless its lineage has used up the retries (REGTUNE_MAX_RETRIES, bounded)
        exhausted = retries_before[dead.number] == MAX_RETRIES
        assert dead.number in retried or exhausted, dead.number
        assert exhausted == ("not retried again" in (dead.error or "")), dead.number
    assert len(killed) >= kills
    _assert_agrees_with_optuna(db, normalize_url(pg_url), study_id, "storm")
