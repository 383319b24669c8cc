"""REGTUNE_CHECKPOINT_DIR: the retry of a trial whose worker was SIGKILLed resumes from its
last epoch instead of starting over, and ends exactly where the uninterrupted trial ends."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest

from service.migrations import upgrade
from service.models import StudyStatus, TrialState
from service.worker.trial import _checkpoint
from tests.reliability._processes import regtune, stop
from tests.reliability.trainers import spec
from tests.worker.conftest import Db, insert_study, settings_for, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("test_trainers")]

EPOCHS = 20
KILL_AFTER = 8  # epochs stored in SQL when the worker is killed


def _spec(name: str) -> dict[str, Any]:
    # every parameter fixed and every seed fixed: two runs of it train identically
    fixed = {"dropout": 0.2, "weight_decay": 1e-3, "batch_size": 16, "patience": 100}
    return {
        **spec(name, "slow-mlp", 1, epoch_s=0.25, max_epochs=EPOCHS),
        "search_space": {k: {"fixed": v} for k, v in fixed.items()},
    }


def _worker(url: str, study_id: int, checkpoints: Path) -> subprocess.Popen[bytes]:
    return regtune(
        url,
        "worker",
        "--study",
        str(study_id),
        "--exit-when-idle",
        test_trainers=True,
        REGTUNE_CHECKPOINT_DIR=str(checkpoints),
        REGTUNE_CHECKPOINT_INTERVAL="0",
        REGTUNE_EPOCH_FLUSH_INTERVAL="0",
        REGTUNE_HEARTBEAT_GRACE_PERIOD="3",
        REGTUNE_TORCH_THREADS="1",
    )


def _curve(db: Db, trial_id: int) -> dict[int, float]:
    return {e.epoch: e.metrics["val_loss"] for e in db.epochs(trial_id)}


def test_a_retried_trial_resumes_from_its_checkpoint(sqlite_url: str, tmp_path: Path) -> None:
    upgrade(sqlite_url)
    db = Db(sqlite_url)
    checkpoints = tmp_path / "checkpoints"
    killed_id = insert_study(sqlite_url, _spec("killed"))

    first = _worker(sqlite_url, killed_id, checkpoints)
    try:
        wait_for(
            lambda: any(t.epochs_run >= KILL_AFTER for t in db.trials(killed_id)),
            180,
            f"{KILL_AFTER} epochs",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        stop(first)
    (dead,) = db.trials(killed_id)
    stored_before_kill = len(db.epochs(dead.id))
    assert stored_before_kill < EPOCHS
    assert list(checkpoints.rglob("*.ckpt")), "no checkpoint was left by the killed worker"

    second = _worker(sqlite_url, killed_id, checkpoints)  # sweeps, then runs the retry
    try:
        wait_for(lambda: db.study(killed_id).status == StudyStatus.completed, 180, "the retry")
        assert second.wait(60) == 0
    finally:
        stop(second)

    whole_id = insert_study(sqlite_url, _spec("uninterrupted"))
    third = _worker(sqlite_url, whole_id, checkpoints)
    try:
        assert third.wait(180) == 0
    finally:
        stop(third)

    (whole,) = db.trials(whole_id)
    rows = db.trials(killed_id)
    (retry,) = [t for t in rows if t.retry_of == dead.number]
    assert retry.state == TrialState.complete and whole.state == TrialState.complete
    # it trained only the epochs after the last checkpoint (± the epoch in flight at the kill)
    assert retry.number is not None
    attrs = optuna.load_study(study_name="killed", storage=sqlite_url).trials[retry.number]
    resumed_at = attrs.user_attrs["resumed_at_epoch"]
    assert stored_before_kill - 1 <= resumed_at <= stored_before_kill
    assert (
        "resumed_at_epoch"
        not in optuna.load_study(study_name="uninterrupted", storage=sqlite_url)
        .trials[0]
        .user_attrs
    )
    # the retry's curve in SQL is continuous and the same as the uninterrupted run's, epoch by
    # epoch, and so are the best epoch and value
    assert list(_curve(db, retry.id)) == list(range(EPOCHS))
    assert _curve(db, retry.id) == pytest.approx(_curve(db, whole.id), rel=1e-6)
    assert (retry.best_epoch, retry.epochs_run) == (whole.best_epoch, whole.epochs_run)
    assert retry.value == pytest.approx(whole.value, rel=1e-6)
    assert retry.metrics == pytest.approx(whole.metrics, rel=1e-6)
    # checkpoints are deleted when the trial ends
    assert not list(checkpoints.rglob("*.ckpt"))


def test_without_a_checkpoint_dir_trials_do_not_checkpoint(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url)
    assert settings.checkpoint_dir is None
    assert _checkpoint(settings, 1, 3, {"failed_trial": 2}) is None
    plan = _checkpoint(
        settings_for(sqlite_url, checkpoint_dir="s3://bucket/ck/"), 1, 3, {"failed_trial": 2}
    )
    assert plan is not None and plan.resume
    assert plan.path == "s3://bucket/ck/study-1/trial-2.ckpt"  # the lineage's first trial
