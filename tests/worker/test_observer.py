"""The worker's observer: epochs reach SQL in batches, none is lost, cancel is seen at a write."""

from __future__ import annotations

import threading

from sqlalchemy import update

from service.models import StudyRecord, StudyStatus
from service.worker import repository as repo
from service.worker.observer import DbTrialObserver
from tests.worker.conftest import Db, insert_study, tiny_spec
from trainers.objective import EpochRecord


def _observer(url: str, flush_interval: float) -> tuple[Db, int, int, DbTrialObserver]:
    db = Db(url)
    study_id = insert_study(url, tiny_spec(name="observed", n_trials=1))

    def claim(session: object) -> int:
        study = repo.lock_study(session, study_id)  # type: ignore[arg-type]
        assert study is not None
        row = repo.claim_slot(session, study, "test")  # type: ignore[arg-type]
        assert row is not None
        return row.id

    trial_id = db.execute(claim)
    observer = DbTrialObserver(
        db.sessions, study_id, trial_id, "val_loss", "minimize", threading.Event(), flush_interval
    )
    return db, study_id, trial_id, observer


def _epoch(i: int, val_loss: float) -> EpochRecord:
    return EpochRecord(epoch=i, metrics={"val_loss": val_loss, "val_acc": 0.5})


def test_fast_epochs_are_batched_and_all_stored_at_the_end(migrated_db_url: str) -> None:
    db, study_id, trial_id, observer = _observer(migrated_db_url, flush_interval=3600)
    losses = [1.0, 0.8, 0.9, 0.7, 0.75]
    observer.on_epoch(None, _epoch(0, losses[0]))  # type: ignore[arg-type]
    assert [e.epoch for e in db.epochs(trial_id)] == [0]  # the first epoch shows at once
    for i, loss in enumerate(losses[1:], start=1):
        observer.on_epoch(None, _epoch(i, loss))  # type: ignore[arg-type]
    assert [e.epoch for e in db.epochs(trial_id)] == [0]  # the rest wait for the interval
    observer.flush()
    assert [e.epoch for e in db.epochs(trial_id)] == [0, 1, 2, 3, 4]
    (row,) = [t for t in db.trials(study_id) if t.id == trial_id]
    assert (row.epochs_run, row.best_epoch, row.value) == (5, 3, 0.7)  # the best, not the last


def test_every_epoch_is_written_and_a_cancel_is_seen_with_no_interval(
    migrated_db_url: str,
) -> None:
    db, study_id, trial_id, observer = _observer(migrated_db_url, flush_interval=0)
    observer.on_epoch(None, _epoch(0, 1.0))  # type: ignore[arg-type]
    observer.on_epoch(None, _epoch(1, 0.5))  # type: ignore[arg-type]
    assert [e.epoch for e in db.epochs(trial_id)] == [0, 1]
    assert not observer.should_stop()
    db.execute(
        lambda s: s.execute(
            update(StudyRecord)
            .where(StudyRecord.id == study_id)
            .values(status=StudyStatus.cancelled.value)
        )
    )
    observer.on_epoch(None, _epoch(2, 0.4))  # type: ignore[arg-type]
    assert observer.should_stop()
