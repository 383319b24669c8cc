"""A worker that cannot open a study or cannot store a result: the study fails, the worker lives.

In-process workers on a real database (SQLite and PostgreSQL); the spec checks at submit are
bypassed on purpose (`model_copy` does not validate): these are the worker's own safety nets.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from service.db import make_session_factory, normalize_url
from service.migrations import upgrade
from service.models import StudyStatus, TrialState
from service.studies import lifecycle
from service.worker import repository as repo
from service.worker.loop import (
    Backoff,
    WorkerOptions,
    _Specs,
    claim_next,
    make_context,
    run_worker,
)
from service.worker.trial import Claim, WorkerContext, record_result, run_claimed_trial
from tests.worker.conftest import Db, insert_study, settings_for, tiny_spec


def _claim(url: str, name: str) -> tuple[WorkerContext, Claim]:
    insert_study(url, tiny_spec(name, 2))
    ctx = make_context(settings_for(url), WorkerOptions())
    claim = claim_next(ctx, _Specs(), None)
    assert claim is not None
    return ctx, claim


def test_a_pruner_optuna_cannot_build_fails_the_study_with_the_reason(
    migrated_db_url: str,
) -> None:
    ctx, claim = _claim(migrated_db_url, "unbuildable")
    pruner = claim.spec.pruner.model_copy(
        update={"name": "threshold", "options": {"lower": 10**400}}
    )
    claim.spec = claim.spec.model_copy(update={"pruner": pruner})

    assert run_claimed_trial(ctx, claim) is None

    db = Db(migrated_db_url)
    study = db.study(claim.study_id)
    assert study.status == StudyStatus.failed
    assert study.error is not None
    assert study.error.startswith("invalid spec: "), study.error
    assert "int too large to convert to float" in study.error
    assert db.trials(claim.study_id) == []  # the claim was given back


def test_an_unstorable_result_is_recorded_as_a_failed_trial(migrated_db_url: str) -> None:
    ctx, claim = _claim(migrated_db_url, "unstorable")
    # a metric value no column can hold: the write fails for good, not transiently
    result = repo.TrialResult(TrialState.complete, value=0.5, metrics={"val_loss": "n/a"})  # type: ignore[dict-item]

    assert record_result(ctx, claim, result) == TrialState.fail

    (row,) = Db(migrated_db_url).trials(claim.study_id)
    assert row.state == TrialState.fail
    assert row.error is not None
    assert row.error.startswith("cannot record the trial's result: ValueError")


def test_backoff_doubles_up_to_its_cap_and_a_run_clears_it() -> None:
    backoff = Backoff(first=100.0, cap=300.0)
    delays = []
    for _ in range(4):
        backoff.miss(7)
        delays.append(backoff.delay(7))
    assert delays == [100.0, 200.0, 300.0, 300.0]
    assert backoff.waiting() == [7]
    backoff.ran(7)
    assert backoff.waiting() == []
    assert backoff.delay(7) == 0.0


@pytest.mark.parametrize("streak,state,counts,expected", [
    (2, TrialState.fail, True, 3),
    (2, TrialState.fail, False, 2),  # a lost worker is not the trial's fault
    (2, TrialState.cancelled, True, 2),
    (2, TrialState.pruned, True, 0),
    (2, TrialState.complete, True, 0),
])  # fmt: skip
def test_failure_streak(streak: int, state: TrialState, counts: bool, expected: int) -> None:
    assert lifecycle.failure_streak(streak, state, counts) == expected


NOW = datetime(2026, 1, 1)


def _ending(
    counts: lifecycle.Counts,
    deadline_at: datetime | None = None,
    streak: int = 0,
    status: str = "running",
) -> lifecycle.Ending | None:
    return lifecycle.ending_after_trials(
        status=status,
        n_trials=4,
        counts=counts,
        deadline_at=deadline_at,
        now=NOW,
        consecutive_failures=streak,
        max_consecutive_failures=3,
        last_error="boom",
    )


def test_a_study_ends_by_budget_deadline_or_failure_streak() -> None:
    done = lifecycle.Ending(StudyStatus.completed)
    assert _ending(lifecycle.Counts(complete=3, pruned=1)) == done
    assert _ending(lifecycle.Counts(complete=3, failed=2)) is None
    # past its deadline: completed once nothing runs
    assert _ending(lifecycle.Counts(complete=1, running=1), NOW - timedelta(seconds=1)) is None
    assert _ending(lifecycle.Counts(complete=1), NOW) == lifecycle.Ending(
        StudyStatus.completed, "budget.timeout_s reached after 1 of 4 trials"
    )
    assert _ending(lifecycle.Counts(failed=3), streak=3) == lifecycle.Ending(
        StudyStatus.failed, "3 trials failed in a row; last error: boom"
    )
    # a final status is never overwritten
    assert _ending(lifecycle.Counts(complete=4), status="cancelled") is None
    assert lifecycle.deadline_for({"budget": {"timeout_s": 60}}, NOW) == NOW + timedelta(seconds=60)
    assert lifecycle.deadline_for({"budget": {}}, NOW) is None


@pytest.mark.postgres
def test_a_transient_database_error_in_the_final_write_is_retried(pg_url: str) -> None:
    """The study row is locked by another transaction for a while and the worker's connection
    gives up after 200 ms (`lock_timeout`, an OperationalError): the write is retried and the
    trial ends recorded `complete`, not lost or failed."""
    upgrade(pg_url)
    ctx, claim = _claim(pg_url, "locked")
    impatient = create_engine(
        normalize_url(pg_url), connect_args={"options": "-c lock_timeout=200"}
    )
    ctx = dataclasses.replace(ctx, sessions=make_session_factory(impatient))
    holder = create_engine(normalize_url(pg_url))
    locked = threading.Event()

    def hold_lock() -> None:
        with holder.begin() as conn:
            conn.execute(
                text("SELECT id FROM regtune_studies WHERE id = :id FOR UPDATE"),
                {"id": claim.study_id},
            )
            locked.set()
            time.sleep(1.5)

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert locked.wait(10)
        result = repo.TrialResult(TrialState.complete, value=0.5, epochs_run=1)
        assert record_result(ctx, claim, result) == TrialState.complete
    finally:
        thread.join()
        impatient.dispose()
        holder.dispose()
    (row,) = Db(pg_url).trials(claim.study_id)
    assert row.state == TrialState.complete
    assert row.value == 0.5
    assert row.error is None


def test_a_study_past_its_deadline_completes_with_a_note(migrated_db_url: str) -> None:
    spec = tiny_spec("deadline", 50)
    spec["budget"] = {**spec["budget"], "timeout_s": 1}
    study_id = insert_study(migrated_db_url, spec)
    run_worker(settings_for(migrated_db_url), WorkerOptions(exit_when_idle=True))
    study = Db(migrated_db_url).study(study_id)
    assert study.status == StudyStatus.completed
    assert study.started_at is not None and study.deadline_at is not None
    assert study.deadline_at - study.started_at == timedelta(seconds=1)
    finished = study.n_complete + study.n_pruned
    assert 0 < finished < 50
    assert study.error == f"budget.timeout_s reached after {finished} of 50 trials"
