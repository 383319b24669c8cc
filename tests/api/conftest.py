"""API test fixtures: the real app (TestClient, lifespan included) over a migrated database.

Trial data comes from the real worker (`service.worker.loop.run_worker`, in-process) running real
tiny Lightning trainings of the built-in `synthetic-mlp` trainer: nothing is inserted by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.support import settings_for, tiny_spec


def run_worker_until_idle(url: str, study_id: int) -> int:
    """Run the real worker loop in this process until `study_id` has no trial left to run."""
    from service.worker.loop import WorkerOptions, run_worker

    options = WorkerOptions(study_id=study_id, exit_when_idle=True, name="api-test")
    return run_worker(settings_for(url), options, handle_signals=False)


@pytest.fixture
def client(migrated_db_url: str) -> Iterator[TestClient]:
    """The real app on a migrated database (SQLite or PostgreSQL)."""
    with TestClient(create_app(settings_for(migrated_db_url))) as c:
        yield c


@pytest.fixture
def finished_study(client: TestClient, migrated_db_url: str) -> dict[str, Any]:
    """A 4-trial study submitted over HTTP and run to completion by the real worker."""
    created = client.post("/api/v1/studies", json=tiny_spec("finished", n_trials=4))
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    run_worker_until_idle(migrated_db_url, study_id)
    detail = client.get(f"/api/v1/studies/{study_id}").json()
    assert detail["status"] == "completed", detail
    return detail
