"""The per-request unit of work (`SessionDep`): kept on success, undone on error, never leaked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api.deps import SessionDep
from service.app import create_app
from tests.support import settings_for, tiny_spec

RENAME = text("UPDATE regtune_studies SET name = :new WHERE name = :old")


@pytest.fixture
def client(migrated_db_url: str) -> Iterator[TestClient]:
    app = create_app(settings_for(migrated_db_url))

    @app.post("/test/rename/{old}/{new}")
    def rename(session: SessionDep, old: str, new: str, fail: bool = False) -> dict[str, str]:
        session.execute(RENAME, {"old": old, "new": new})
        if fail:
            raise HTTPException(409, "failing after the write")
        return {"renamed": new}

    with TestClient(app) as c:
        yield c


def _names(client: TestClient) -> set[str]:
    return {s["name"] for s in client.get("/api/v1/studies").json()["items"]}


def test_a_handler_that_returns_commits_and_one_that_raises_rolls_back(
    client: TestClient,
) -> None:
    assert client.post("/api/v1/studies", json=tiny_spec("uow")).status_code == 201
    assert client.post("/test/rename/uow/kept").json() == {"renamed": "kept"}
    assert _names(client) == {"kept"}
    failed = client.post("/test/rename/kept/lost", params={"fail": True})
    assert failed.status_code == 409
    assert _names(client) == {"kept"}


def test_requests_return_their_connections_to_the_pool(client: TestClient) -> None:
    app = client.app
    pool = app.state.session_factory.kw["bind"].pool  # type: ignore[attr-defined]
    assert client.post("/api/v1/studies", json=tiny_spec("pooled")).status_code == 201
    for i in range(30):  # more requests than the pool holds connections
        assert client.get("/api/v1/studies").status_code == 200
        client.post(f"/test/rename/pooled/p{i}", params={"fail": True})
    assert client.get("/api/v1/studies/pooled").status_code == 200
    assert pool.checkedout() == 0
