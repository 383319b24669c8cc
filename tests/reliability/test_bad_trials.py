"""Trials that raise, diverge or run out of memory, in a real worker process on PostgreSQL."""

from __future__ import annotations

import pytest

from service.migrations import upgrade
from service.models import StudyStatus, TrialState
from tests.reliability._processes import regtune, stop
from tests.reliability.trainers import spec
from tests.worker.conftest import Db, insert_study

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.usefixtures("test_trainers")]


def test_oom_for_one_batch_size_fails_those_trials_and_the_study_completes(pg_url: str) -> None:
    upgrade(pg_url)
    study_id = insert_study(pg_url, spec("oom", "oom-mlp", 4, oom_at=64))
    worker = regtune(
        pg_url, "worker", "--exit-when-idle", test_trainers=True,
        REGTUNE_MAX_CONSECUTIVE_FAILURES="50",
    )  # fmt: skip
    try:
        assert worker.wait(300) == 0  # the worker lived through every failure
    finally:
        stop(worker)
    db = Db(pg_url)
    trials = db.trials(study_id)
    failed = [t for t in trials if t.state == TrialState.fail]
    assert failed, "the sampler never tried batch size 128"
    for t in failed:
        assert t.batch_size == 128
        assert t.error is not None
        assert t.error.startswith("OutOfMemoryError: CUDA out of memory"), t.error
    assert all(t.batch_size == 16 for t in trials if t.state == TrialState.complete)
    study = db.study(study_id)
    assert study.status == StudyStatus.completed and study.n_complete == 4


def test_all_failing_studies_end_failed_with_the_reason_and_the_worker_lives_on(
    pg_url: str,
) -> None:
    upgrade(pg_url)
    nan_id = insert_study(pg_url, spec("nan", "nan-mlp", 20))
    mem_id = insert_study(pg_url, spec("memory", "memory-error-mlp", 20))
    # one worker runs both studies, one after the other
    worker = regtune(
        pg_url, "worker", "--exit-when-idle", test_trainers=True,
        REGTUNE_MAX_CONSECUTIVE_FAILURES="3",
    )  # fmt: skip
    try:
        assert worker.wait(300) == 0
    finally:
        stop(worker)
    db = Db(pg_url)
    for study_id, reason in (
        (nan_id, "TrialDiverged: "),
        (mem_id, "MemoryError: cannot allocate the activations"),
    ):
        study = db.study(study_id)
        trials = db.trials(study_id)
        assert study.status == StudyStatus.failed
        assert study.error is not None
        assert study.error.startswith("3 trials failed in a row; last error: " + reason)
        assert [t.state for t in trials] == [TrialState.fail] * 3  # not the whole budget
        assert all(t.error and t.error.startswith(reason) for t in trials)
