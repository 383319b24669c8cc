"""Trial endpoints and the best result, on trials run by the real worker (real tiny trainings)."""

from __future__ import annotations

from typing import Any

import optuna
from fastapi.testclient import TestClient

from service.db import normalize_url

PARAMS = ("weight_decay", "l1", "dropout", "label_smoothing", "batch_size", "patience")


def _trials(client: TestClient, study_id: int, **params: Any) -> dict[str, Any]:
    r = client.get(f"/api/v1/studies/{study_id}/trials", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_detail_shows_progress_and_best_trial(
    client: TestClient, finished_study: dict[str, Any]
) -> None:
    progress = finished_study["progress"]
    assert progress["n_trials"] == 4
    assert progress["finished"] == progress["complete"] + progress["pruned"] == 4
    assert progress["running"] == 0
    best = finished_study["best_trial"]
    values = [t["value"] for t in _trials(client, finished_study["id"])["items"]]
    assert best["value"] == min(values)
    assert finished_study["best_value"] == best["value"]
    listed = client.get("/api/v1/studies", params={"status": "completed"}).json()["items"]
    assert listed[0]["best_value"] == best["value"]
    assert listed[0]["progress"]["finished"] == 4


def test_trials_are_flattened(client: TestClient, finished_study: dict[str, Any]) -> None:
    page = _trials(client, finished_study["id"])
    assert page["total"] == 4
    assert [t["number"] for t in page["items"]] == [0, 1, 2, 3]
    for trial in page["items"]:
        assert trial["state"] == "complete"
        assert set(trial["params"]) == set(PARAMS)
        assert 0.0 <= trial["params"]["dropout"] <= 0.5
        assert trial["params"]["batch_size"] in (16, 32)
        assert trial["params"]["patience"] == 10
        assert trial["value"] == trial["val_loss"]  # objective: val_loss at the best epoch
        assert 1 <= trial["epochs_run"] <= 3
        assert trial["best_epoch"] is not None and trial["best_epoch"] < trial["epochs_run"]
        assert trial["duration_s"] > 0
        assert trial["val_acc"] is not None and trial["train_loss"] is not None


def test_trials_sort_filter_and_paginate(
    client: TestClient, finished_study: dict[str, Any]
) -> None:
    study_id = finished_study["id"]
    by_value = [t["value"] for t in _trials(client, study_id, sort="value")["items"]]
    assert by_value == sorted(by_value)
    by_value_desc = [t["value"] for t in _trials(client, study_id, sort="-value")["items"]]
    assert by_value_desc == sorted(by_value, reverse=True)
    numbers_desc = [t["number"] for t in _trials(client, study_id, sort="-number")["items"]]
    assert numbers_desc == [3, 2, 1, 0]

    page = _trials(client, study_id, limit=3, offset=2)
    assert page["total"] == 4 and [t["number"] for t in page["items"]] == [2, 3]
    assert _trials(client, study_id, state="pruned")["total"] == 0
    assert _trials(client, study_id, state="complete")["total"] == 4

    bad = client.get(f"/api/v1/studies/{study_id}/trials", params={"sort": "duration"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "sort"]


def test_one_trial_has_learning_curves(client: TestClient, finished_study: dict[str, Any]) -> None:
    study_id = finished_study["id"]
    r = client.get(f"/api/v1/studies/{study_id}/trials/1")
    assert r.status_code == 200, r.text
    trial = r.json()
    assert trial["number"] == 1
    assert [e["epoch"] for e in trial["epochs"]] == list(range(trial["epochs_run"]))
    for epoch in trial["epochs"]:
        assert {"val_loss", "val_acc", "train_loss"} <= set(epoch["metrics"])
    best_epoch = trial["epochs"][trial["best_epoch"]]["metrics"]
    assert best_epoch["val_loss"] == trial["value"]

    missing = client.get(f"/api/v1/studies/{study_id}/trials/42")
    assert missing.status_code == 404
    assert "no trial number 42" in missing.json()["detail"][0]["msg"]


def test_best_matches_optuna(
    client: TestClient, finished_study: dict[str, Any], migrated_db_url: str
) -> None:
    r = client.get(f"/api/v1/studies/{finished_study['id']}/best")
    assert r.status_code == 200, r.text
    best = r.json()
    assert best["final"] is True and best["status"] == "completed"
    assert best["metric"] == "val_loss" and best["direction"] == "minimize"
    assert set(best["params"]) == set(PARAMS)
    assert best["metrics"]["val_loss"] == best["value"]
    assert best["test_metrics"]  # evaluated on the test split once the trial completed

    # Optuna sees the same study: same trials, same best trial and value
    study = optuna.load_study(study_name="finished", storage=normalize_url(migrated_db_url))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4
    assert study.best_trial.number == best["trial_number"]
    assert study.best_value == best["value"]
    assert study.best_params["dropout"] == best["params"]["dropout"]


def test_cancel_completed_study_is_409(client: TestClient, finished_study: dict[str, Any]) -> None:
    r = client.post(f"/api/v1/studies/{finished_study['id']}/cancel")
    assert r.status_code == 409
    assert "already completed" in r.json()["detail"][0]["msg"]
