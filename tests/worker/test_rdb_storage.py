"""The worker's one-statement intermediate-value write stores what Optuna's own method stores."""

from __future__ import annotations

import math
import threading

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from service.config import Settings
from service.worker.optimization import open_storage
from service.worker.rdb import WorkerRDBStorage

QUEUED, POPPERS = 40, 4
VALUES = [(0, 1.25), (1, math.inf), (2, -math.inf), (3, math.nan), (4, 0.5)]


def _running_trial(storage: RDBStorage, name: str) -> int:
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
    return storage.create_new_trial(study_id)


def _stored(storage: RDBStorage, trial_id: int) -> dict[int, float]:
    return storage.get_trial(trial_id).intermediate_values


def _same(a: dict[int, float], b: dict[int, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


@pytest.fixture
def storage(migrated_db_url: str) -> WorkerRDBStorage:
    opened = open_storage(migrated_db_url, Settings(database_url=migrated_db_url))
    assert isinstance(opened, WorkerRDBStorage)  # what every worker runs with
    return opened


def test_reports_are_stored_as_optuna_stores_them(
    storage: WorkerRDBStorage, migrated_db_url: str
) -> None:
    plain = RDBStorage(migrated_db_url, skip_table_creation=True)
    ours, theirs = _running_trial(storage, "ours"), _running_trial(plain, "theirs")
    for step, value in VALUES:
        storage.set_trial_intermediate_value(ours, step, value)
        plain.set_trial_intermediate_value(theirs, step, value)
    assert _same(_stored(storage, ours), dict(VALUES))
    assert _same(_stored(plain, ours), _stored(plain, theirs))
    plain.engine.dispose()


def test_a_second_report_at_a_step_replaces_the_first(storage: WorkerRDBStorage) -> None:
    trial_id = _running_trial(storage, "again")
    storage.set_trial_intermediate_value(trial_id, 3, 2.0)
    storage.set_trial_intermediate_value(trial_id, 3, 1.5)
    assert _stored(storage, trial_id) == {3: 1.5}


def test_a_finished_trial_refuses_reports_with_optunas_error(storage: WorkerRDBStorage) -> None:
    trial_id = _running_trial(storage, "finished")
    storage.set_trial_intermediate_value(trial_id, 0, 1.0)
    storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial_id, 1, 0.5)
    assert _stored(storage, trial_id) == {0: 1.0}


def test_an_unknown_trial_refuses_reports(storage: WorkerRDBStorage) -> None:
    with pytest.raises(KeyError):
        storage.set_trial_intermediate_value(10_000, 0, 1.0)


def test_a_pruner_reads_the_reports_through_a_study(storage: WorkerRDBStorage) -> None:
    """End to end through Optuna: report + should_prune on the worker's storage."""
    study = optuna.create_study(
        study_name="pruned",
        storage=storage,
        pruner=optuna.pruners.ThresholdPruner(upper=1.0),
    )
    trial = study.ask()
    trial.report(0.5, 0)
    assert not trial.should_prune()
    trial.report(2.0, 1)
    assert trial.should_prune()
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 2.0}


def test_concurrent_asks_never_start_one_waiting_trial_twice(migrated_db_url: str) -> None:
    """Workers popping enqueued (WAITING) trials side by side each get a different one.

    Optuna reads the state, then writes RUNNING: on SQLite (no SELECT ... FOR UPDATE) two
    processes could both read WAITING and both start the same trial."""
    settings = Settings(database_url=migrated_db_url)
    setup = open_storage(migrated_db_url, settings)
    study = optuna.create_study(study_name="pop", storage=setup)
    for i in range(QUEUED):
        study.enqueue_trial({"x": float(i)})
    popped: list[int] = []
    barrier = threading.Barrier(POPPERS)

    def pop() -> None:
        own = optuna.load_study(study_name="pop", storage=open_storage(migrated_db_url, settings))
        barrier.wait()
        while (number := own.ask().number) < QUEUED:
            popped.append(number)

    threads = [threading.Thread(target=pop) for _ in range(POPPERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(popped) == list(range(QUEUED))
