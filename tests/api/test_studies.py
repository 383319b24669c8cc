"""Study endpoints: submit, list, detail, cancel — over SQLite and PostgreSQL."""

from __future__ import annotations

import optuna
from fastapi.testclient import TestClient

from service.db import normalize_url
from tests.support import tiny_spec


def test_submit_returns_queued_study_with_normalized_spec(client: TestClient) -> None:
    r = client.post("/api/v1/studies", json=tiny_spec("first", n_trials=5))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert body["name"] == "first"
    assert isinstance(body["id"], int)
    assert body["progress"] == {
        "n_trials": 5,
        "finished": 0,
        "complete": 0,
        "pruned": 0,
        "failed": 0,
        "running": 0,
        "extra": 0,  # tiny_spec turns the reference run off
        "extra_finished": 0,
    }
    assert body["best_trial"] is None
    # defaults are filled in, so workers run exactly what was validated
    assert body["spec"]["objective"] == {"metric": "val_loss", "direction": "minimize"}
    assert body["spec"]["trainer_config"]["max_epochs"] == 3


def test_submit_creates_the_optuna_study(client: TestClient, migrated_db_url: str) -> None:
    spec = tiny_spec("compat", objective={"metric": "val_acc", "direction": "maximize"})
    assert client.post("/api/v1/studies", json=spec).status_code == 201
    study = optuna.load_study(study_name="compat", storage=normalize_url(migrated_db_url))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_duplicate_name_is_409_naming_the_field(client: TestClient) -> None:
    assert client.post("/api/v1/studies", json=tiny_spec("dup")).status_code == 201
    r = client.post("/api/v1/studies", json=tiny_spec("dup"))
    assert r.status_code == 409
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "name"]
    assert "already exists" in detail["msg"]


def test_existing_optuna_study_of_same_name_is_409(
    client: TestClient, migrated_db_url: str
) -> None:
    # an Optuna study with trials (an empty one of the same direction is reclaimed: see
    # tests/reliability/test_server_crash.py)
    study = optuna.create_study(study_name="taken", storage=normalize_url(migrated_db_url))
    study.optimize(lambda _trial: 0.0, n_trials=1)
    r = client.post("/api/v1/studies", json=tiny_spec("taken"))
    assert r.status_code == 409
    assert "Optuna study named 'taken'" in r.json()["detail"][0]["msg"]
    # nothing half-created on regtune's side
    assert client.get("/api/v1/studies/taken").status_code == 404


def test_list_filters_by_status_and_paginates(client: TestClient) -> None:
    ids = [client.post("/api/v1/studies", json=tiny_spec(f"s{i}")).json()["id"] for i in range(5)]
    assert client.post(f"/api/v1/studies/{ids[1]}/cancel").status_code == 200

    page = client.get("/api/v1/studies", params={"limit": 2, "offset": 0}).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0
    assert [s["id"] for s in page["items"]] == [ids[4], ids[3]]  # newest first
    rest = client.get("/api/v1/studies", params={"limit": 2, "offset": 4}).json()
    assert [s["id"] for s in rest["items"]] == [ids[0]]

    queued = client.get("/api/v1/studies", params={"status": "queued"}).json()
    assert queued["total"] == 4 and ids[1] not in [s["id"] for s in queued["items"]]
    both = client.get("/api/v1/studies", params=[("status", "queued"), ("status", "cancelled")])
    assert both.json()["total"] == 5
    row = queued["items"][0]
    assert row["progress"]["n_trials"] == 3 and row["best_value"] is None


def test_list_limit_is_bounded(client: TestClient) -> None:
    r = client.get("/api/v1/studies", params={"limit": 501})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]
    assert client.get("/api/v1/studies", params={"status": "bogus"}).status_code == 422


def test_detail_by_id_and_by_name(client: TestClient) -> None:
    study_id = client.post("/api/v1/studies", json=tiny_spec("named")).json()["id"]
    by_id = client.get(f"/api/v1/studies/{study_id}").json()
    by_name = client.get("/api/v1/studies/named").json()
    assert by_id == by_name
    assert by_id["spec"]["name"] == "named"


def test_unknown_study_is_404_on_every_route(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/v1/studies/999"),
        ("GET", "/api/v1/studies/999/trials"),
        ("GET", "/api/v1/studies/999/trials/0"),
        ("GET", "/api/v1/studies/999/best"),
        ("POST", "/api/v1/studies/999/cancel"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"][0]["msg"] == "study '999' not found"


def test_cancel_queued_study_then_again_is_409(client: TestClient) -> None:
    study_id = client.post("/api/v1/studies", json=tiny_spec("c")).json()["id"]
    r = client.post(f"/api/v1/studies/{study_id}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    again = client.post(f"/api/v1/studies/{study_id}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"][0]["msg"]
    assert client.get(f"/api/v1/studies/{study_id}").json()["status"] == "cancelled"


def test_cancelled_study_gets_no_trials(client: TestClient, migrated_db_url: str) -> None:
    from tests.api.conftest import run_worker_until_idle

    study_id = client.post("/api/v1/studies", json=tiny_spec("stopped")).json()["id"]
    client.post(f"/api/v1/studies/{study_id}/cancel")
    assert run_worker_until_idle(migrated_db_url, study_id) == 0
    assert client.get(f"/api/v1/studies/{study_id}/trials").json()["total"] == 0


def test_best_before_any_completed_trial_is_409(client: TestClient) -> None:
    study_id = client.post("/api/v1/studies", json=tiny_spec("early")).json()["id"]
    r = client.get(f"/api/v1/studies/{study_id}/best")
    assert r.status_code == 409
    assert "no completed trial yet" in r.json()["detail"][0]["msg"]
