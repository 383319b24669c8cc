"""`execution.precision`: validated, stored with the spec, shown in the study JSON, trained with."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import run_worker_until_idle
from tests.support import tiny_spec


def test_an_unknown_precision_is_422_naming_the_field(client: TestClient) -> None:
    response = client.post("/api/v1/studies", json=tiny_spec("fp8", execution={"precision": "fp8"}))
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "execution", "precision"]
    assert "bf16-mixed" in error["msg"]  # the message lists what is accepted


def test_a_bf16_mixed_study_runs_and_shows_its_precision(
    client: TestClient, migrated_db_url: str
) -> None:
    created = client.post(
        "/api/v1/studies", json=tiny_spec("bf16", 2, execution={"precision": "bf16-mixed"})
    )
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    run_worker_until_idle(migrated_db_url, study_id)
    detail = client.get(f"/api/v1/studies/{study_id}").json()
    assert detail["status"] == "completed", detail
    assert detail["spec"]["execution"] == {"precision": "bf16-mixed"}
    assert detail["best_trial"]["value"] == pytest.approx(detail["best_value"])


def test_the_default_precision_is_stored_explicitly(client: TestClient) -> None:
    created = client.post("/api/v1/studies", json=tiny_spec("default-precision", 1))
    assert created.status_code == 201, created.text
    detail = client.get(f"/api/v1/studies/{created.json()['id']}").json()
    assert detail["spec"]["execution"] == {"precision": "32-true"}
