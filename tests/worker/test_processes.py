"""`regtune worker` as real processes: SIGTERM, two workers on one PostgreSQL study, devices."""

from __future__ import annotations

import signal

import optuna
import pytest
from optuna.trial import TrialState as OptunaState

from service.migrations import upgrade
from service.models import StudyStatus, TrialState
from tests.worker.conftest import Db, insert_study, tiny_spec, wait_for, worker_process

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "signals",
    [
        [signal.SIGTERM],
        # Ctrl-C under `regtune serve`: the terminal's SIGINT, then the supervisor's SIGTERM right
        # after. Before, the worker took the second as "abandon at once" (a traceback, and the
        # trial recorded "shut down twice"); it is the same request
        [signal.SIGINT, signal.SIGTERM],
    ],
    ids=["sigterm", "ctrl-c-under-a-supervisor"],
)
def test_a_shutdown_signal_abandons_the_running_trial_cleanly(
    migrated_db_url: str, signals: list[signal.Signals]
) -> None:
    spec = tiny_spec(name="sigterm", n_trials=2)
    spec["trainer_config"]["max_epochs"] = 5000
    spec["search_space"]["patience"] = {"fixed": 5000}
    study_id = insert_study(migrated_db_url, spec)
    db = Db(migrated_db_url)
    proc = worker_process(migrated_db_url, "--study", str(study_id))
    try:
        wait_for(lambda: any(t.epochs_run >= 2 for t in db.trials(study_id)), what="a trial")
        for signum in signals:
            proc.send_signal(signum)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (trial,) = db.trials(study_id)
    assert trial.state == TrialState.fail
    assert trial.slot is None  # another worker will run this slot
    assert trial.error is not None and "shut down" in trial.error and "twice" not in trial.error
    frozen = optuna.load_study(study_name="sigterm", storage=migrated_db_url).trials
    assert [t.state for t in frozen] == [OptunaState.FAIL]  # not left RUNNING
    study = db.study(study_id)
    # an abandoned trial is not the study's fault
    assert study.status == StudyStatus.running and study.consecutive_failures == 0


@pytest.mark.postgres
def test_two_workers_finish_exactly_n_trials_on_postgresql(pg_url: str) -> None:
    upgrade(pg_url)
    study_id = insert_study(pg_url, tiny_spec(name="two-workers", n_trials=6))
    workers = [
        worker_process(pg_url, "--study", str(study_id), "--exit-when-idle") for _ in range(2)
    ]
    try:
        assert [w.wait(120) for w in workers] == [0, 0]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    db = Db(pg_url)
    trials = db.trials(study_id)
    finished = [t for t in trials if TrialState(t.state).is_finished]
    assert len(finished) == 6
    assert sorted(t.slot for t in finished if t.slot is not None) == list(range(6))
    assert len({t.worker for t in trials}) == 2  # both took part
    assert db.study(study_id).status == StudyStatus.completed
    frozen = optuna.load_study(study_name="two-workers", storage=pg_url).trials
    done = [t for t in frozen if t.state in (OptunaState.COMPLETE, OptunaState.PRUNED)]
    assert len(done) == 6


def test_devices_run_one_worker_process_per_device(migrated_db_url: str) -> None:
    """On CPU (--allow-cpu-fallback): each child sees its own CUDA_VISIBLE_DEVICES (recorded in
    the worker name)."""
    study_id = insert_study(migrated_db_url, tiny_spec(name="devices", n_trials=4))
    args = ["--devices", "0,1", "--allow-cpu-fallback", "--study", str(study_id)]
    proc = worker_process(migrated_db_url, *args, "--exit-when-idle")
    try:
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    trials = Db(migrated_db_url).trials(study_id)
    assert len([t for t in trials if t.state == TrialState.complete]) == 4
    gpus = {(t.worker or "").rsplit(":", 1)[-1] for t in trials}
    assert gpus <= {"gpu0", "gpu1"} and gpus
