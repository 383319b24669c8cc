"""Auth at the HTTP boundary: the real app with auth on, tokens made by the token service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import TokenScope, create_token, revoke_token
from service.config import Settings
from service.db import make_engine, make_session_factory, unit_of_work
from tests.support import tiny_spec


class Tokens:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = make_session_factory(self.engine)

    def create(self, name: str, scope: TokenScope) -> dict[str, str]:
        with unit_of_work(self.sessions) as s:
            _, secret = create_token(s, name, scope)
        return {"Authorization": f"Bearer {secret}"}

    def revoke(self, name: str) -> None:
        with unit_of_work(self.sessions) as s:
            revoke_token(s, name)


@pytest.fixture
def tokens(migrated_db_url: str) -> Iterator[Tokens]:
    t = Tokens(migrated_db_url)
    yield t
    t.engine.dispose()


@pytest.fixture
def client(migrated_db_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=migrated_db_url, auto_migrate=False, auth="on")
    with TestClient(create_app(settings)) as c:
        yield c


READS = [
    "/api/v1/studies",
    "/api/v1/studies/1/plots",  # the dashboard's data
    "/api/v1/studies/1",
    "/api/v1/studies/1/trials",
    "/api/v1/studies/1/trials/0",
    "/api/v1/studies/1/best",
    "/api/v1/trainers",
    "/api/v1/presets",
]


def _assert_401(response: object, message: str) -> None:
    assert getattr(response, "status_code", None) == 401
    assert response.headers["www-authenticate"] == "Bearer"  # type: ignore[attr-defined]
    (detail,) = response.json()["detail"]  # type: ignore[attr-defined]
    assert message in detail["msg"] and detail["type"] == "unauthorized"


@pytest.mark.parametrize("path", READS)
def test_every_read_needs_a_token(client: TestClient, path: str) -> None:
    _assert_401(client.get(path), "authentication required")


def test_every_write_needs_a_token(client: TestClient) -> None:
    _assert_401(client.post("/api/v1/studies", json=tiny_spec("s")), "Authorization: Bearer")
    _assert_401(client.post("/api/v1/studies/1/cancel"), "authentication required")


def test_health_metrics_and_docs_stay_open(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.head("/healthz").status_code == 200  # probes that send HEAD (was 405)
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_dashboard_pages_are_open_but_their_data_is_not(client: TestClient) -> None:
    for page in ("/", "/studies/1", "/new", "/dashboard-static/dashboard.js"):
        assert client.get(page).status_code == 200, page
    _assert_401(client.post("/dashboard-api/parse-spec", json="name: x"), "authentication")


def test_read_token_reads_but_cannot_write(client: TestClient, tokens: Tokens) -> None:
    writer = tokens.create("writer", TokenScope.write)
    reader = tokens.create("reader", TokenScope.read)
    created = client.post("/api/v1/studies", json=tiny_spec("s"), headers=writer)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    assert client.get(f"/api/v1/studies/{study_id}", headers=reader).status_code == 200
    assert client.get("/api/v1/trainers", headers=reader).status_code == 200
    for response in (
        client.post("/api/v1/studies", json=tiny_spec("t"), headers=reader),
        client.post(f"/api/v1/studies/{study_id}/cancel", headers=reader),
    ):
        assert response.status_code == 403
        (detail,) = response.json()["detail"]
        assert detail["msg"] == (
            "token 'reader' has scope 'read'; this request needs a 'write' token"
        )
    cancelled = client.post(f"/api/v1/studies/{study_id}/cancel", headers=writer)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_unknown_malformed_and_revoked_tokens_get_401(client: TestClient, tokens: Tokens) -> None:
    _assert_401(
        client.get("/api/v1/studies", headers={"Authorization": "Bearer rgt_nope"}),
        "no such token",
    )
    _assert_401(
        client.get("/api/v1/studies", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
        "authentication required",
    )
    headers = tokens.create("ci", TokenScope.write)
    assert client.get("/api/v1/studies", headers=headers).status_code == 200
    tokens.revoke("ci")
    _assert_401(client.get("/api/v1/studies", headers=headers), "'ci' was revoked")


def test_auth_off_on_loopback_by_default_and_on_elsewhere(migrated_db_url: str) -> None:
    assert not Settings(host="127.0.0.1").auth_enabled()
    assert Settings(host="0.0.0.0").auth_enabled()
    assert not Settings(host="0.0.0.0", auth="off").auth_enabled()
    assert Settings(host="127.0.0.1", auth="on").auth_enabled()
    settings = Settings(database_url=migrated_db_url, auto_migrate=False)
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/v1/studies").status_code == 200  # loopback, auto: no token needed


def test_openapi_documents_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"HTTPBearer": []} in schema["paths"]["/api/v1/studies"]["post"]["security"]
