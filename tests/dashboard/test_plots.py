"""Plot-data endpoint, pages, static files and optuna-dashboard, on SQLite and PostgreSQL.

The study is submitted over the real app and run by the real worker (tiny Lightning trainings).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.dashboard import optuna_dashboard
from service.plots.figures import Axis, importance
from service.plots.repository import PlotRow
from tests.dashboard.studies import run_to_completion, settings_for, submit, tiny_spec

SEARCHED = ["weight_decay", "dropout", "label_smoothing", "batch_size", "patience"]


@pytest.fixture
def client(migrated_db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(migrated_db_url))) as c:
        yield c


@pytest.fixture
def study(client: TestClient, migrated_db_url: str) -> dict[str, Any]:
    created = submit(client, tiny_spec("plotted", n_trials=8))
    run_to_completion(migrated_db_url, created["id"])
    detail: dict[str, Any] = client.get(f"/api/v1/studies/{created['id']}").json()
    assert detail["status"] == "completed"
    return detail


def _points(figure: dict[str, Any]) -> int:
    total = 0
    for trace in figure["data"]:
        if trace["type"] == "parcoords":
            total += len(trace["dimensions"][0]["values"])
        else:
            total += len(trace.get("x") or [])
    return total


def test_plots_of_a_completed_study_and_the_pruned_toggle(
    client: TestClient, study: dict[str, Any]
) -> None:
    body = client.get(f"/api/v1/studies/{study['id']}/plots").json()
    plots = body["plots"]
    complete = study["progress"]["complete"]
    assert body["n_trials_plotted"] == complete  # pruned trials hidden by default

    history = {t["name"]: t for t in plots["history"]["data"]}
    assert set(history) == {"complete", "best so far"}
    best_line = history["best so far"]["y"]
    assert best_line == sorted(best_line, reverse=True)  # minimize: never gets worse
    assert best_line[-1] == pytest.approx(study["best_value"])

    assert [f["param"] for f in plots["slices"]] == SEARCHED
    slices = {f["param"]: f for f in plots["slices"]}
    assert all(_points(f) == complete for f in plots["slices"])
    assert slices["weight_decay"]["layout"]["xaxis"]["type"] == "log"
    assert slices["batch_size"]["layout"]["xaxis"]["type"] == "category"
    assert slices["dropout"]["layout"]["xaxis"].get("type") is None

    assert _points(plots["parallel"]) == complete
    assert _points(plots["calibration"]) == complete
    curves = plots["learning_curves"]["data"]
    assert curves and all("pruned" not in t["name"] for t in curves)
    assert len(plots["gap"]["data"]) == len(curves)
    # the curves follow the objective; every logged metric is offered, and one can be picked
    assert plots["learning_curves"]["metric"] == study["metric"] == "val_loss"
    logged = plots["learning_curves"]["metrics"]
    assert logged[0] == "val_loss" and {"val_acc", "gap", "train_loss"} <= set(logged)
    picked = client.get(f"/api/v1/studies/{study['id']}/plots?curve_metric=val_acc").json()
    accuracy = picked["plots"]["learning_curves"]
    assert accuracy["metric"] == "val_acc" and len(accuracy["data"]) == len(curves)
    assert all(0.0 <= y <= 1.0 for t in accuracy["data"] for y in t["y"])
    shares = plots["importance"]["data"][0]["x"] if complete >= 4 else []
    if shares:
        assert sum(shares) == pytest.approx(1.0)

    # the toggle adds pruned trials; their curves are dotted
    pruned = study["progress"]["pruned"]
    assert pruned > 0, "the tiny study's pruner should prune some trials"
    body = client.get(f"/api/v1/studies/{study['id']}/plots?include_pruned=true").json()
    plots = body["plots"]
    assert body["n_trials_plotted"] == study["progress"]["complete"] + pruned
    assert (
        _points(plots["history"])
        - len(next(t for t in plots["history"]["data"] if t["name"] == "best so far")["x"])
        == study["progress"]["complete"] + pruned
    )
    dotted = [t for t in plots["learning_curves"]["data"] if "pruned" in t["name"]]
    assert dotted and all(t["line"]["dash"] == "dot" for t in dotted)
    # pruned trials stopped early: their curves are shorter than the complete ones'
    assert max(len(t["x"]) for t in dotted) < study["spec"]["trainer_config"]["max_epochs"]


def test_plots_of_a_queued_study_explain_why_they_are_empty(client: TestClient) -> None:
    created = submit(client, tiny_spec("waiting"))
    plots = client.get(f"/api/v1/studies/{created['id']}/plots").json()["plots"]
    assert plots["history"]["data"] == [] and "no trial" in plots["history"]["note"]
    assert "complete trials" in plots["importance"]["note"]
    bad = client.get(f"/api/v1/studies/{created['id']}/plots?include_pruned=maybe")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "include_pruned"]
    long = client.get(f"/api/v1/studies/{created['id']}/plots?curve_metric={'m' * 200}")
    assert long.status_code == 422
    assert long.json()["detail"][0]["loc"] == ["query", "curve_metric"]
    unknown = client.get("/api/v1/studies/9999/plots")
    assert unknown.status_code == 404
    assert unknown.json()["detail"][0]["loc"] == ["path", "study"]


def test_pages_and_plotly_are_served_locally(client: TestClient) -> None:
    for path in ("/", "/studies/1", "/new", "/new?example=digits"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        # no CDN: every script is served by this server
        assert 'src="http' not in response.text and "src='http" not in response.text
    assert "trainer: digits-mlp" in client.get("/new?example=digits").text
    plotly_js = client.get("/dashboard-static/plotly.min.js")
    assert plotly_js.status_code == 200 and "plotly.js" in plotly_js.text[:500]
    assert client.get("/dashboard-static/../app.py").status_code == 404
    assert client.get("/dashboard-static/secret.py").status_code == 404


def test_example_spec_in_the_editor_is_accepted(client: TestClient) -> None:
    page = client.get("/new").text
    text = page.split('aria-label="study spec">', 1)[1].split("</textarea>", 1)[0]
    spec = client.post("/dashboard-api/parse-spec", json=text)
    assert spec.status_code == 200, spec.text
    created = client.post("/api/v1/studies", json=spec.json())
    assert created.status_code == 201, created.text


def test_parse_spec_names_the_line_of_a_yaml_error(client: TestClient) -> None:
    bad = "name: x\ntrainer: [synthetic-mlp\n"
    response = client.post("/dashboard-api/parse-spec", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("line 3")
    scalar = client.post("/dashboard-api/parse-spec", json="just text")
    assert scalar.status_code == 422 and "mapping" in scalar.json()["detail"][0]["msg"]


def test_importance_ranks_the_parameter_that_drives_the_objective() -> None:
    # value depends on dropout only; weight decay is noise
    rows = [
        PlotRow(
            id=i,
            number=i,
            state="complete",
            value=d * 2 + 0.01 * (i % 3),
            params={"weight_decay": 10 ** -(i % 5), "dropout": d},
            val_ece=None,
            epochs_run=3,
        )
        for i, d in enumerate([0.05 * k for k in range(12)])
    ]
    figure = importance(rows, [Axis("weight_decay", log=True), Axis("dropout")])
    bars = dict(zip(figure["data"][0]["y"], figure["data"][0]["x"], strict=True))
    assert bars["dropout p"] > 0.8 > bars["weight decay λ (L2)"]


def test_optuna_dashboard_beside_the_api_serves_the_same_database(
    client: TestClient, migrated_db_url: str
) -> None:
    created = submit(client, tiny_spec("for-optuna-dashboard"))
    assert client.get(f"/api/v1/studies/{created['id']}/plots").json()["optuna_study_id"] is None
    assert "data-optuna-dashboard" not in client.get(f"/studies/{created['id']}").text
    messages: list[str] = []
    app: Any = client.app
    server = optuna_dashboard.beside(app, migrated_db_url, "127.0.0.1", 0, messages.append)
    try:
        studies = httpx.get(f"http://127.0.0.1:{server.port}/api/studies", timeout=10).json()
        by_name = {s["study_name"]: s["study_id"] for s in studies["study_summaries"]}
        assert created["name"] in by_name
        page = client.get(f"/studies/{created['id']}").text
        assert f'data-optuna-dashboard="http://127.0.0.1:{server.port}/dashboard"' in page
        plots = client.get(f"/api/v1/studies/{created['id']}/plots").json()
        assert plots["optuna_study_id"] == by_name[created["name"]]
        assert not any("WARNING" in m for m in messages)  # loopback: no warning
    finally:
        server.stop()


def test_non_loopback_bind_gets_a_loud_warning() -> None:
    assert optuna_dashboard.warning_for("127.0.0.1", 8081) is None
    warning = optuna_dashboard.warning_for("0.0.0.0", 8081)
    assert warning is not None and "WITHOUT AUTHENTICATION" in warning
