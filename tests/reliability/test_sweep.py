"""The stale-trial sweep: its cost, and a worker killed between Optuna's tell and its own write."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, insert

from service.app import create_app
from service.db import make_engine, make_session_factory, normalize_url
from service.models import StudyRecord, StudyStatus, TrialState, utcnow
from service.worker.optimization import open_storage
from service.worker.stale import sweep_with
from tests.reliability import _die_after_tell
from tests.reliability._processes import REPO, env_for
from tests.support import settings_for, sweep_once, tiny_spec
from tests.worker.conftest import Db, insert_study, wait_for
from trainers import registry


def _add_queued_studies(url: str, first: int, n: int) -> None:
    """`n` queued studies, as many users' submissions waiting for a worker leave them."""
    spec = tiny_spec("x")
    rows = [
        {
            "name": f"queued-{first + i}",
            "trainer": spec["trainer"],
            "spec": {**spec, "name": f"queued-{first + i}"},
            "status": StudyStatus.queued.value,
            "metric": "val_loss",
            "direction": "minimize",
            "n_trials": 3,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        for i in range(n)
    ]
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(StudyRecord), rows)
    finally:
        engine.dispose()


@contextmanager
def _counting(*engines: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engines run meanwhile."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


def test_sweep_statements_do_not_grow_with_queued_studies(migrated_db_url: str) -> None:
    settings = settings_for(migrated_db_url)
    engine = make_engine(migrated_db_url)
    storage = open_storage(migrated_db_url, settings)
    sessions = make_session_factory(engine)

    def statements_of_one_sweep() -> list[str]:
        with _counting(engine, storage.engine) as statements:
            sweep_with(sessions, storage, settings)
        return statements

    try:
        _add_queued_studies(migrated_db_url, 0, 3)
        statements_of_one_sweep()  # connections opened, pragmas set
        few = statements_of_one_sweep()
        _add_queued_studies(migrated_db_url, 3, 297)
        many = statements_of_one_sweep()
    finally:
        storage.engine.dispose()
        engine.dispose()
    assert len(many) == len(few), many
    assert len(few) <= 6, few  # the candidate queries, not one per study


METRIC = "val_loss"
_DYING_WORKER = (sys.executable, "-c", "import tests.reliability._die_after_tell as m; m.main()")


def _die_after_tell_spec() -> dict[str, Any]:
    return tiny_spec(
        "after-tell",
        n_trials=1,
        trainer=_die_after_tell.NAME,
        trainer_config={"max_epochs": 6},
        search_space={
            "dropout": {"fixed": 0.1},
            "weight_decay": {"fixed": 1e-4},
            "batch_size": {"fixed": 32},
            "patience": {"fixed": 100},
        },
    )


def _approx(value: Any) -> Any:
    return pytest.approx(value, rel=1e-6)


@pytest.mark.slow
def test_a_worker_killed_after_optunas_tell_is_rebuilt_from_optuna(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = migrated_db_url
    monkeypatch.setattr(
        registry,
        "_cache",
        {**registry.available_trainers(), _die_after_tell.NAME: _die_after_tell.TRAINER},
    )
    study_id = insert_study(url, _die_after_tell_spec())
    worker = subprocess.run(
        [*_DYING_WORKER, "worker", "--study", str(study_id), "--once"],
        env=env_for(url, REGTUNE_EPOCH_FLUSH_INTERVAL="60"),
        cwd=REPO,
        timeout=300,
        capture_output=True,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()[-3000:]
    db = Db(url)
    (row,) = db.trials(study_id)
    frozen = optuna.load_study(study_name="after-tell", storage=normalize_url(url)).trials[0]
    attrs = frozen.user_attrs
    # the window: Optuna holds the whole outcome, regtune's row only what it wrote first
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert row.state == TrialState.running
    assert len(db.epochs(row.id)) < attrs["epochs_run"] == len(frozen.intermediate_values)

    settings = settings_for(url)
    wait_for(lambda: sweep_once(url, settings) > 0, 30, "the sweep to reconcile the trial")
    (row,) = db.trials(study_id)
    assert row.state == TrialState.complete
    assert row.value == _approx(frozen.value)
    assert row.best_epoch == attrs["best_epoch"]
    assert row.epochs_run == attrs["epochs_run"]
    assert row.test_metrics == _approx(attrs["test_metrics"])
    assert row.val_loss == _approx(frozen.value)
    assert row.metrics is not None and row.metrics[METRIC] == _approx(frozen.value)
    epochs = db.epochs(row.id)
    assert [e.epoch for e in epochs] == sorted(frozen.intermediate_values)
    for e in epochs:
        assert e.metrics[METRIC] == _approx(frozen.intermediate_values[e.epoch])
    study = db.study(study_id)
    assert study.status == StudyStatus.completed and study.n_running == 0
    assert study.best_value == _approx(frozen.value)

    get: Callable[[str], Any]
    with TestClient(create_app(settings)) as client:

        def get(path: str) -> Any:
            r = client.get(f"/api/v1/studies/{study_id}{path}")
            assert r.status_code == 200, r.text
            return r.json()

        trial = get(f"/trials/{frozen.number}")
        best = get("/best")
    assert trial["value"] == _approx(frozen.value) == best["value"]
    assert trial["best_epoch"] == attrs["best_epoch"] == best["best_epoch"]
    assert trial["epochs_run"] == attrs["epochs_run"] == best["epochs_run"]
    assert trial["test_metrics"] == _approx(attrs["test_metrics"])
    assert best["test_metrics"] == _approx(attrs["test_metrics"])
    assert best["metrics"][METRIC] == _approx(frozen.value)
    assert best["final"] is True and best["trial_number"] == frozen.number
    assert [e["metrics"][METRIC] for e in trial["epochs"]] == [
        _approx(v) for _, v in sorted(frozen.intermediate_values.items())
    ]
