"""`/metrics`: what Prometheus scrapes matches what the database holds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from service.app import create_app
from service.config import Settings
from service.db import make_engine, make_session_factory, unit_of_work
from service.models import StudyRecord, TrialRecord, utcnow
from service.observability import install

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def client(migrated_db_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=migrated_db_url, auth="off", auto_migrate=False)
    with TestClient(create_app(settings)) as c:
        yield c


def _study(name: str, status: str) -> StudyRecord:
    return StudyRecord(
        name=name, trainer="synthetic-mlp", spec={}, status=status, metric="val_loss",
        direction="minimize", n_trials=10,
    )  # fmt: skip


def test_metrics_report_studies_trials_durations_and_heartbeats(
    migrated_db_url: str, client: TestClient
) -> None:
    now = utcnow()
    engine = make_engine(migrated_db_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            a, b, c = _study("a", "running"), _study("b", "running"), _study("c", "completed")
            session.add_all([a, b, c, _study("d", "queued")])
            session.flush()
            rows = [
                # (study, state, duration_s, epochs_run, worker, heartbeat seconds ago)
                (a, "complete", 3.0, 4, "h1:1", 100),
                (a, "complete", 40.0, 10, "h1:1", 90),
                (a, "pruned", 0.5, 1, "h1:2", 80),
                (b, "pruned", 200.0, 2, "h2:1", 70),
                (b, "running", None, 3, "h2:1", 7),
                (b, "claimed", None, 0, "h2:2", None),
                (c, "fail", None, 1, "h1:1", 60),
            ]
            for i, (study, state, duration, epochs, worker, ago) in enumerate(rows):
                session.add(
                    TrialRecord(
                        study_id=study.id, slot=i, number=i, state=state, duration_s=duration,
                        epochs_run=epochs, worker=worker,
                        heartbeat_at=None if ago is None else now - timedelta(seconds=ago),
                    )
                )  # fmt: skip
    finally:
        engine.dispose()

    m = scrape(client)

    assert value(m, "regtune_database_up") == 1
    assert value(m, "regtune_studies", status="running") == 2
    assert value(m, "regtune_studies", status="completed") == 1
    assert value(m, "regtune_studies", status="queued") == 1
    assert value(m, "regtune_studies", status="cancelled") == 0  # present, as zero
    assert value(m, "regtune_trials", state="complete") == 2
    assert value(m, "regtune_trials", state="pruned") == 2
    assert value(m, "regtune_trials", state="running") == 1
    assert value(m, "regtune_trials", state="claimed") == 1
    assert value(m, "regtune_trials", state="fail") == 1
    assert value(m, "regtune_epochs_run") == 4 + 10 + 1 + 2 + 3 + 0 + 1
    assert value(m, "regtune_trials_pruned_ratio") == pytest.approx(2 / 4)
    assert value(m, "regtune_workers_busy") == 2  # h2:1 (running) and h2:2 (claimed)
    # durations 0.5, 3, 40, 200: cumulative buckets
    assert value(m, "regtune_trial_duration_seconds_bucket", le="1") == 1
    assert value(m, "regtune_trial_duration_seconds_bucket", le="5") == 2
    assert value(m, "regtune_trial_duration_seconds_bucket", le="60") == 3
    assert value(m, "regtune_trial_duration_seconds_bucket", le="300") == 4
    assert value(m, "regtune_trial_duration_seconds_bucket", le="+Inf") == 4
    assert value(m, "regtune_trial_duration_seconds_count") == 4
    assert value(m, "regtune_trial_duration_seconds_sum") == pytest.approx(243.5)
    # the newest heartbeat was written 7 s before the scrape
    age = value(m, "regtune_worker_heartbeat_age_seconds")
    assert 7 <= age < 7 + 120


def test_empty_database_reports_zeros_and_no_heartbeat(client: TestClient) -> None:
    m = scrape(client)
    assert value(m, "regtune_database_up") == 1
    assert value(m, "regtune_trials_pruned_ratio") == 0
    assert value(m, "regtune_trial_duration_seconds_count") == 0
    assert not any(name == "regtune_worker_heartbeat_age_seconds" for name, _ in m)


def test_unreachable_database_is_reported_not_raised(tmp_path: object) -> None:
    # a SQLite path inside a missing directory cannot be opened
    url = f"sqlite:///{tmp_path}/missing/dir/regtune.db"
    settings = Settings(database_url=url, auth="off", auto_migrate=False)
    with TestClient(create_app(settings)) as c:
        m = scrape(c)
    assert value(m, "regtune_database_up") == 0
    assert not any(name == "regtune_studies" for name, _ in m)


def test_request_latency_is_labelled_by_route_template() -> None:
    app = FastAPI()
    install(app)

    @app.get("/things/{thing_id}")
    def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    with TestClient(app) as c:
        for i in range(5):
            assert c.get(f"/things/{i}").status_code == 200
        assert c.get("/things/not-a-number").status_code == 422
        assert c.get("/no/such/page/1").status_code == 404
        assert c.get("/no/such/page/2").status_code == 404
        m = scrape(c)

    latency = "regtune_http_request_duration_seconds_count"
    assert value(m, latency, method="GET", route="/things/{thing_id}", status="200") == 5
    assert value(m, latency, method="GET", route="/things/{thing_id}", status="422") == 1
    assert value(m, latency, method="GET", route="<unmatched>", status="404") == 2
    routes = {dict(labels).get("route") for name, labels in m if name == latency}
    # raw paths never become labels: bounded cardinality
    assert routes == {"/things/{thing_id}", "<unmatched>"}


TINY_SPEC = {
    "name": "metrics-tiny",
    "trainer": "synthetic-mlp",
    "trainer_config": {"max_epochs": 2, "n_samples": 120, "hidden_sizes": [8], "n_features": 6,
                       "n_informative": 3},
    "search_space": {
        "weight_decay": {"low": 1e-5, "high": 1e-2, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "batch_size": {"choices": [32, 64]},
        "patience": {"fixed": 2},
    },
    "objective": {"metric": "val_loss", "direction": "minimize"},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 3},
    "reference": False,  # the three search trials alone
}  # fmt: skip


def test_metrics_after_a_real_study_match_the_database(migrated_db_url: str) -> None:
    from service.worker.loop import WorkerOptions, run_worker

    settings = Settings(database_url=migrated_db_url, auth="off", auto_migrate=False)
    with TestClient(create_app(settings)) as client:
        created = client.post("/api/v1/studies", json=TINY_SPEC)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        ran = run_worker(
            settings, WorkerOptions(study_id=study_id, exit_when_idle=True), handle_signals=False
        )
        assert ran == 3
        m = scrape(client)

    engine = make_engine(migrated_db_url)
    try:
        with make_session_factory(engine)() as session:
            trials = session.scalars(select(TrialRecord)).all()
            study = session.get(StudyRecord, study_id)
    finally:
        engine.dispose()
    assert study is not None
    assert value(m, "regtune_studies", status=study.status) == 1
    assert study.status == "completed"
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state] = by_state.get(t.state, 0) + 1
    for state in ("complete", "pruned", "running", "fail"):
        assert value(m, "regtune_trials", state=state) == by_state.get(state, 0)
    assert by_state.get("complete", 0) + by_state.get("pruned", 0) == 3
    assert value(m, "regtune_epochs_run") == sum(t.epochs_run for t in trials) > 0
    durations = [t.duration_s for t in trials if t.duration_s is not None]
    assert value(m, "regtune_trial_duration_seconds_count") == len(durations) == 3
    assert value(m, "regtune_trial_duration_seconds_sum") == pytest.approx(sum(durations))
    assert value(m, "regtune_workers_busy") == 0  # the worker is gone, nothing is claimed
    # the worker wrote heartbeats while it trained
    assert value(m, "regtune_worker_heartbeat_age_seconds") >= 0
    # the study submission itself was timed under its route template
    assert (
        value(
            m,
            "regtune_http_request_duration_seconds_count",
            method="POST",
            route="/api/v1/studies",
            status="201",
        )
        == 1
    )
