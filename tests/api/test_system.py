"""/healthz, /api/v1/trainers and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings


def test_healthz_ok(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"] == "ok"


def test_healthz_503_when_sqlite_file_cannot_be_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing-dir/regtune.db"
    with TestClient(create_app(Settings(database_url=url, auto_migrate=False))) as c:
        r = c.get("/healthz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert r.json()["database"].startswith("unreachable")
        # a data route on the same dead database: 503 with the error shape, no traceback
        listing = c.get("/api/v1/studies")
        assert listing.status_code == 503
        assert "database is unavailable" in listing.json()["detail"][0]["msg"]


def test_healthz_503_when_postgres_is_down() -> None:
    # port 1 on loopback: connection refused at once
    url = "postgresql+psycopg://postgres@127.0.0.1:1/regtune?connect_timeout=2"
    with TestClient(create_app(Settings(database_url=url, auto_migrate=False))) as c:
        r = c.get("/healthz")
        assert r.status_code == 503
        assert r.json()["database"].startswith("unreachable")


def test_trainers_lists_builtins_with_config_schema(client: TestClient) -> None:
    r = client.get("/api/v1/trainers")
    assert r.status_code == 200
    trainers = {t["name"]: t for t in r.json()}
    assert {"digits-mlp", "synthetic-mlp"} <= set(trainers)
    digits = trainers["digits-mlp"]
    assert digits["description"]
    assert "val_loss" in digits["metrics"]
    assert "max_epochs" in digits["config_schema"]["properties"]


def test_unknown_path_uses_the_error_shape(client: TestClient) -> None:
    r = client.get("/api/v1/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": [{"loc": [], "msg": "Not Found", "type": "http_404"}]}


def test_openapi_documents_every_route_with_models(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    expected = {
        ("post", "/api/v1/studies"),
        ("get", "/api/v1/studies"),
        ("get", "/api/v1/studies/{study}"),
        ("get", "/api/v1/studies/{study}/trials"),
        ("get", "/api/v1/studies/{study}/trials/{number}"),
        ("get", "/api/v1/studies/{study}/best"),
        ("post", "/api/v1/studies/{study}/cancel"),
        ("get", "/api/v1/trainers"),
        ("get", "/healthz"),
    }
    for method, path in expected:
        op = paths[path][method]
        ok = op["responses"]["201" if method == "post" and path.endswith("studies") else "200"]
        assert "schema" in ok["content"]["application/json"], (method, path)
    error_ref = "#/components/schemas/ErrorResponse"
    create = paths["/api/v1/studies"]["post"]["responses"]
    for code in ("409", "413", "422"):
        assert create[code]["content"]["application/json"]["schema"]["$ref"] == error_ref
    best = paths["/api/v1/studies/{study}/best"]["get"]["responses"]
    assert best["404"]["content"]["application/json"]["schema"]["$ref"] == error_ref
    assert "HTTPValidationError" not in doc["components"]["schemas"]
