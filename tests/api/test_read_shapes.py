"""The read endpoints' JSON, field by field, against the OpenAPI schema and the stored rows.

The list, detail, trials and best endpoints build their bodies from plain rows and serialize them
themselves (not through FastAPI's response_model path); these tests pin what a client sees: every
documented field present and no other, each value equal to the stored one, timestamps as RFC 3339
UTC with a trailing ``Z``, and ``null`` wherever the database has NULL (a trial still running).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import jsonschema
import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import make_engine, make_session_factory, normalize_url, unit_of_work
from service.models import StudyRecord, TrialRecord
from service.worker import repository as worker_repository
from tests.support import tiny_spec

PARAMS = ("weight_decay", "l1", "dropout", "label_smoothing", "batch_size", "patience")
TRIAL_COLUMNS = (
    "number",
    "state",
    "value",
    "best_epoch",
    "epochs_run",
    "duration_s",
    "train_loss",
    "val_loss",
    "val_acc",
    "val_ece",
    "gap",
    "metrics",
    "error",
    "retry_of",
    "values",
    "feasible",
    "role",
    "repeat_of",
    "train_seed",
    "val_nll",
    "near_zero_frac",
    "weight_l2",
)
STUDY_COLUMNS = (
    "id",
    "name",
    "trainer",
    "status",
    "metric",
    "direction",
    "best_value",
    "best_trial_number",
    "error",
)
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


@pytest.fixture
def session(migrated_db_url: str) -> Iterator[Session]:
    engine = make_engine(migrated_db_url)
    try:
        with unit_of_work(make_session_factory(engine)) as s:
            yield s
    finally:
        engine.dispose()


def _utc(value: datetime | None) -> str | None:
    """How the API writes a stored (naive UTC) timestamp."""
    return None if value is None else value.isoformat() + "Z"


def _get(client: TestClient, path: str, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def _check_schema(client: TestClient, path: str, body: Any) -> None:
    """Validate `body` against the 200 response schema OpenAPI documents for `path`."""
    doc = client.get("/openapi.json").json()
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(body)


def _fields(client: TestClient, name: str) -> set[str]:
    return set(client.get("/openapi.json").json()["components"]["schemas"][name]["properties"])


def _expected_trial(t: TrialRecord) -> dict[str, Any]:
    expected = {c: getattr(t, c) for c in TRIAL_COLUMNS}
    expected["params"] = {p: getattr(t, p) for p in PARAMS}
    expected["started_at"] = _utc(t.started_at)
    expected["finished_at"] = _utc(t.finished_at)
    return expected


def _expected_summary(s: StudyRecord) -> dict[str, Any]:
    expected: dict[str, Any] = {c: getattr(s, c) for c in STUDY_COLUMNS}
    expected["progress"] = {
        "n_trials": s.n_trials,
        "finished": s.n_complete + s.n_pruned,
        "complete": s.n_complete,
        "pruned": s.n_pruned,
        "failed": s.n_failed,
        "running": s.n_running,
        "extra": s.n_extra,
        "extra_finished": s.n_extra_finished,
    }
    expected["reference_value"] = None  # tiny_spec: no reference run
    for key in ("created_at", "started_at", "finished_at"):
        expected[key] = _utc(getattr(s, key))
    return expected


def _stored_trial(session: Session, study: dict[str, Any], number: int) -> TrialRecord:
    return session.scalars(
        select(TrialRecord).where(TrialRecord.study_id == study["id"], TrialRecord.number == number)
    ).one()


def _start_one_trial(url: str, study_id: int) -> None:
    """Claim, ask Optuna and bind a trial, as the worker does, with one parameter sampled.

    Three transactions, like the worker: on SQLite a pending claim would lock out Optuna's insert.
    """
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with unit_of_work(factory) as session:
            study = worker_repository.lock_study(session, study_id)
            assert study is not None
            claim = worker_repository.claim_slot(session, study, "shape-test")
            assert claim is not None
            name, claim_id = study.name, claim.id
        trial = optuna.load_study(study_name=name, storage=normalize_url(url)).ask()
        with unit_of_work(factory) as session:
            assert worker_repository.bind_trial(
                session, claim_id, trial.number, trial._trial_id, None
            )
            worker_repository.set_params(session, claim_id, {"dropout": 0.25})
    finally:
        engine.dispose()


def test_trials_page_is_the_documented_schema_with_stored_values(
    client: TestClient, finished_study: dict[str, Any], migrated_db_url: str, session: Session
) -> None:
    running_id = client.post("/api/v1/studies", json=tiny_spec("running")).json()["id"]
    _start_one_trial(migrated_db_url, running_id)
    fields = _fields(client, "TrialSummary")
    path = "/api/v1/studies/{study}/trials"

    for study_id in (finished_study["id"], running_id):
        for sort in ("number", "-value"):
            page = _get(client, f"/api/v1/studies/{study_id}/trials", sort=sort, limit=3)
            _check_schema(client, path, page)
            rows = session.scalars(
                select(TrialRecord)
                .where(TrialRecord.study_id == study_id)
                .order_by(TrialRecord.number)
            ).all()
            assert page["total"] == len(rows) and (page["limit"], page["offset"]) == (3, 0)
            by_number = {t.number: t for t in rows}
            for item in page["items"]:
                assert set(item) == fields
                assert item == _expected_trial(by_number[item["number"]])
                for key in ("started_at", "finished_at"):
                    assert item[key] is None or RFC3339_UTC.fullmatch(item[key]), item[key]

    (running,) = _get(client, f"/api/v1/studies/{running_id}/trials")["items"]
    assert running["state"] == "running"
    assert running["params"] == {p: (0.25 if p == "dropout" else None) for p in PARAMS}
    assert RFC3339_UTC.fullmatch(running["started_at"])
    for key in ("value", "best_epoch", "duration_s", "val_loss", "metrics", "finished_at"):
        assert running[key] is None, key
    assert running["epochs_run"] == 0

    one = _get(client, f"/api/v1/studies/{finished_study['id']}/trials/0")
    assert set(one) == _fields(client, "TrialDetail")
    assert {k: one[k] for k in fields} == _expected_trial(_stored_trial(session, finished_study, 0))


def test_list_detail_and_best_are_the_documented_schema_with_stored_values(
    client: TestClient, finished_study: dict[str, Any], session: Session
) -> None:
    queued_id = client.post("/api/v1/studies", json=tiny_spec("queued")).json()["id"]
    summary_fields = _fields(client, "StudySummary")

    page = _get(client, "/api/v1/studies")
    _check_schema(client, "/api/v1/studies", page)
    assert [s["id"] for s in page["items"]] == [queued_id, finished_study["id"]]
    for item in page["items"]:
        assert set(item) == summary_fields
        assert item == _expected_summary(session.get_one(StudyRecord, item["id"]))
        assert RFC3339_UTC.fullmatch(item["created_at"])
    queued = page["items"][0]
    for key in ("best_value", "best_trial_number", "started_at", "finished_at", "error"):
        assert queued[key] is None, key

    detail_path = "/api/v1/studies/{study}"
    for study_id in (queued_id, finished_study["id"]):
        detail = _get(client, f"/api/v1/studies/{study_id}")
        _check_schema(client, detail_path, detail)
        record = session.get_one(StudyRecord, study_id)
        assert set(detail) == _fields(client, "StudyDetail")
        assert {k: detail[k] for k in summary_fields} == _expected_summary(record)
        assert detail["spec"] == record.spec
        assert detail["updated_at"] == _utc(record.updated_at)
    assert _get(client, f"/api/v1/studies/{queued_id}")["best_trial"] is None
    best_trial = _get(client, f"/api/v1/studies/{finished_study['id']}")["best_trial"]
    assert best_trial == _expected_trial(
        _stored_trial(session, finished_study, best_trial["number"])
    )

    best = _get(client, f"/api/v1/studies/{finished_study['id']}/best")
    _check_schema(client, "/api/v1/studies/{study}/best", best)
    assert set(best) == _fields(client, "BestResult")
    trial = _stored_trial(session, finished_study, best["trial_number"])
    assert best["value"] == trial.value == best_trial["value"]
    assert best["params"] == {p: getattr(trial, p) for p in PARAMS}
    assert (best["metrics"], best["test_metrics"]) == (trial.metrics, trial.test_metrics)
    assert (best["best_epoch"], best["epochs_run"]) == (trial.best_epoch, trial.epochs_run)
    assert (
        best["progress"]
        == _expected_summary(session.get_one(StudyRecord, finished_study["id"]))["progress"]
    )
