"""GET /api/v1/presets, and studies submitted with `search_space.preset` (SQLite and PostgreSQL).

The study with a preset is run by the real worker, which re-validates the stored spec.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.spec import StudySpec
from tests.api.conftest import run_worker_until_idle
from tests.support import tiny_spec
from trainers import PRESETS, SearchSpace


def _with_preset(name: str, search_space: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return tiny_spec(name, search_space=search_space, **overrides)


def test_presets_are_listed_with_their_search_space(client: TestClient) -> None:
    r = client.get("/api/v1/presets")
    assert r.status_code == 200, r.text
    presets = r.json()
    assert [p["name"] for p in presets] == ["standard", "sparse", "fine-tune", "wide"]
    for preset in presets:
        assert preset["description"] == PRESETS[preset["name"]].description
        assert preset["search_space"] == PRESETS[preset["name"]].document()
        SearchSpace.model_validate(preset["search_space"])  # pasteable into a spec as is


def test_openapi_documents_the_endpoint_and_the_preset_names(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    ok = doc["paths"]["/api/v1/presets"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/PresetInfo")
    preset = doc["components"]["schemas"]["SearchSpace"]["properties"]["preset"]
    assert {"type": "string", "enum": ["fine-tune", "sparse", "standard", "wide"]}.items() <= (
        next(s for s in preset["anyOf"] if s.get("type") == "string").items()
    )


def test_a_spec_with_a_preset_is_stored_expanded_and_runs(
    client: TestClient, migrated_db_url: str
) -> None:
    spec = _with_preset(
        "preset-study",
        {"preset": "standard", "dropout": {"low": 0.1, "high": 0.3}},
        enqueue=[{"weight_decay": 1e-3, "batch_size": 32}],  # checked against the expanded space
        budget={"n_trials": 3},
    )
    r = client.post("/api/v1/studies", json=spec)
    assert r.status_code == 201, r.text
    stored = r.json()["spec"]
    space = stored["search_space"]
    assert space["preset"] == "standard"
    assert space["dropout"] == {"low": 0.1, "high": 0.3, "log": False, "step": None}  # user's
    assert space["weight_decay"] == {"low": 1e-6, "high": 0.1, "log": True, "step": None}
    assert space["l1"] == {"fixed": 0.0}
    assert space["batch_size"] == {"choices": [32, 64, 128, 256]}
    assert space["patience"]["low"] == 3 and space["patience"]["high"] == 10
    # what a worker does with the stored document: the same spec again
    assert StudySpec.model_validate(stored).model_dump(mode="json") == stored
    assert client.get(f"/api/v1/studies/{r.json()['id']}").json()["spec"] == stored

    run_worker_until_idle(migrated_db_url, r.json()["id"])
    trials = client.get("/api/v1/studies/preset-study/trials?sort=number").json()["items"]
    assert [t["state"] for t in trials] == ["complete"] * 3, trials
    assert trials[0]["params"]["weight_decay"] == 1e-3  # the enqueued point ran first
    for trial in trials:
        params = trial["params"]
        assert 0.1 <= params["dropout"] <= 0.3
        assert 1e-6 <= params["weight_decay"] <= 0.1
        assert params["batch_size"] in (32, 64, 128, 256)
        assert 3 <= params["patience"] <= 10
        assert params["l1"] == 0.0


def test_unknown_preset_is_422_naming_search_space_preset(client: TestClient) -> None:
    r = client.post("/api/v1/studies", json=_with_preset("bad-preset", {"preset": "foo"}))
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "search_space", "preset"]
    assert detail["msg"] == (
        "search_space.preset: unknown preset 'foo'; "
        "choose one of: fine-tune, sparse, standard, wide"
    )
    assert client.get("/api/v1/studies/bad-preset").status_code == 404


def test_grid_with_a_preset_names_the_ranges_it_brought(client: TestClient) -> None:
    spec = _with_preset(
        "grid-preset",
        {"preset": "fine-tune", "dropout": {"choices": [0.0, 0.1]}},
        sampler={"name": "grid"},
    )
    r = client.post("/api/v1/studies", json=spec)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "sampler", "name"]
    assert "(given as ranges: weight_decay, label_smoothing, patience)" in detail["msg"]


def test_enqueue_outside_the_preset_space_is_422(client: TestClient) -> None:
    spec = _with_preset("bad-enqueue", {"preset": "fine-tune"}, enqueue=[{"batch_size": 128}])
    r = client.post("/api/v1/studies", json=spec)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "enqueue", "0", "batch_size"]
