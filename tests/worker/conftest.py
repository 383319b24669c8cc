"""Worker test helpers: studies inserted straight into SQL, tiny trainings, extra trainers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from service.config import Settings
from service.db import make_engine, make_session_factory, unit_of_work
from service.models import StudyRecord, TrialEpoch, TrialRecord
from service.spec import StudySpec
from service.studies import service as studies
from service.studies.optuna_storage import LazyOptunaStorage
from tests import support
from tests.support import TINY_CONFIG
from trainers import registry
from trainers.builtin import SYNTHETIC_MLP
from trainers.registry import Trainer


def tiny_spec(name: str = "tiny", n_trials: int = 3, **overrides: Any) -> dict[str, Any]:
    """`tests.support.tiny_spec` as the worker tests use it: TPE, and no batch size to search."""
    fields: dict[str, Any] = {
        "search_space": {
            "dropout": {"low": 0.0, "high": 0.5},
            "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
            "patience": {"fixed": 10},
        },
        "sampler": {"name": "tpe", "seed": 0},
    }
    return support.tiny_spec(name, n_trials, **{**fields, **overrides})


def insert_study(url: str, spec: dict[str, Any]) -> int:
    """Store a study as POST /api/v1/studies does (the studies service; no HTTP here)."""
    parsed = StudySpec.model_validate(spec)
    engine = make_engine(url)
    optuna_storage = LazyOptunaStorage(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return studies.create_study(session, optuna_storage, parsed).id
    finally:
        optuna_storage.dispose()
        engine.dispose()


class Db:
    """Read the service's tables in tests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sessions = make_session_factory(make_engine(url))

    def study(self, study_id: int) -> StudyRecord:
        with unit_of_work(self.sessions) as session:
            row = session.get(StudyRecord, study_id)
            assert row is not None
            return row

    def trials(self, study_id: int) -> list[TrialRecord]:
        with unit_of_work(self.sessions) as session:
            query = select(TrialRecord).where(TrialRecord.study_id == study_id)
            return list(session.scalars(query.order_by(TrialRecord.id)))

    def epochs(self, trial_id: int) -> list[TrialEpoch]:
        with unit_of_work(self.sessions) as session:
            query = select(TrialEpoch).where(TrialEpoch.trial_id == trial_id)
            return list(session.scalars(query.order_by(TrialEpoch.epoch)))

    def execute(self, fn: Callable[[Any], Any]) -> Any:
        with unit_of_work(self.sessions) as session:
            return fn(session)


def settings_for(url: str, **overrides: Any) -> Settings:
    """`tests.support.settings_for` with the worker tests' short grace period and the default
    migration behaviour."""
    fields: dict[str, Any] = {"auto_migrate": None, "heartbeat_grace_period": 2}
    return support.settings_for(url, **{**fields, **overrides})


class _FailingConfig(BaseModel):
    max_epochs: int = 3
    fail_first: int = 1_000_000  # how many builds raise before they succeed


_builds = {"count": 0}


def _failing_build(params: Any, config: Any) -> tuple[Any, Any]:
    _builds["count"] += 1
    if _builds["count"] <= config.fail_first:
        raise RuntimeError(f"boom #{_builds['count']}\nsecond line of detail")
    return SYNTHETIC_MLP.build(params, SYNTHETIC_MLP.validate_config(dict(TINY_CONFIG)))


FAILING = Trainer(
    name="failing",
    description="raises in build() for the first `fail_first` trials (tests only)",
    config_model=_FailingConfig,
    build=_failing_build,
)


def register_trainer(monkeypatch: pytest.MonkeyPatch, trainer: Trainer) -> Trainer:
    """Adds a test-only trainer to this process's registry (in-process workers only)."""
    trainers = registry.available_trainers()
    monkeypatch.setattr(registry, "_cache", {**trainers, trainer.name: trainer})
    return trainer


@pytest.fixture
def failing_trainer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Trainer]:
    """Registers the `failing` trainer in this process (in-process workers only)."""
    _builds["count"] = 0
    yield register_trainer(monkeypatch, FAILING)


def run_workers_in_threads(settings: Settings, n: int) -> list[int]:
    """`n` in-process workers (exit when idle) claiming side by side; the trials each ran."""
    from service.worker import WorkerOptions, run_worker

    counts: list[int] = []

    def work(name: str) -> None:
        options = WorkerOptions(exit_when_idle=True, name=name)
        counts.append(run_worker(settings, options, handle_signals=False))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker did not finish within 5 min"
    return counts


def worker_process(url: str, *args: str) -> subprocess.Popen[bytes]:
    """`regtune worker ...` as a real subprocess on `url`."""
    env = dict(os.environ)
    env.update(
        REGTUNE_DATABASE_URL=url,
        REGTUNE_WORKER_POLL_INTERVAL="0.2",
        REGTUNE_HEARTBEAT_INTERVAL="1",
        REGTUNE_HEARTBEAT_GRACE_PERIOD="5",
        TZ="UTC",
    )
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker", *args], env=env)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")
