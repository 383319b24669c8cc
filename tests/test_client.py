"""`service.client`: the one HTTP client, its typed error, and its retries, against the real app."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import uvicorn

from service.app import create_app
from service.client import ApiClient, ClientError
from service.config import Settings
from tests.support import free_port, serve_in_thread, tiny_spec


@pytest.fixture
def api(sqlite_url: str) -> Iterator[str]:
    """The real app under uvicorn in a thread (no worker: studies stay queued)."""
    with serve_in_thread(create_app(Settings(database_url=sqlite_url, auto_migrate=True))) as url:
        yield url


def test_a_refused_request_carries_its_status_and_the_servers_detail(api: str) -> None:
    bad = tiny_spec("bad", search_space={"dropout": {"low": 0.1, "high": 1.5}})
    with ApiClient(api) as client, pytest.raises(ClientError) as refused:
        client.submit(bad)
    assert refused.value.status_code == 422
    assert "search_space.dropout" in refused.value.detail
    assert not refused.value.transient and not refused.value.auth
    assert str(refused.value).startswith("HTTP 422: ")
    # the field is named once (was "search_space.dropout.high: search_space.dropout.high ...")
    assert refused.value.detail.count("search_space.dropout.high") == 1, refused.value.detail

    with ApiClient(api) as client, pytest.raises(ClientError) as missing:
        client.best(999)
    assert missing.value.status_code == 404 and not missing.value.transient
    assert missing.value.detail == "study '999' not found"  # was "path.study: study ..."


def test_a_server_url_without_a_scheme_says_so() -> None:
    """Was "cannot reach ... (UnsupportedProtocol); is `regtune serve` running?"."""
    with pytest.raises(ClientError, match=r"'localhost:9' .* is not valid: it needs http://"):
        ApiClient("localhost:9")


def test_a_refused_token_is_an_auth_error_and_is_not_retried(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, auto_migrate=True, auth="on")
    with (
        serve_in_thread(create_app(settings)) as url,
        ApiClient(url, "rgt_bogus") as client,
        pytest.raises(ClientError) as refused,
    ):
        client.study(1, retry_for=600)  # would hang the test if a 401 were retried
    assert refused.value.status_code == 401 and refused.value.auth
    assert not refused.value.transient


def test_an_unreachable_server_has_no_status_and_a_hint() -> None:
    server = f"http://127.0.0.1:{free_port()}"
    with ApiClient(server) as client, pytest.raises(ClientError) as down:
        client.study(1)
    assert down.value.status_code is None and down.value.unreachable and down.value.transient
    assert down.value.detail == "ConnectError" and down.value.url == server
    assert "is `regtune serve` running?" in str(down.value)


def test_polling_outlives_a_server_that_comes_up_late(sqlite_url: str) -> None:
    port = free_port()
    app = create_app(Settings(database_url=sqlite_url, auto_migrate=True))
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    late = threading.Timer(1.0, uv.run)  # down for the first request(s), then up
    late.daemon = True
    late.start()
    try:
        with ApiClient(f"http://127.0.0.1:{port}") as client:
            page = client.request("GET", "/api/v1/studies", retry_for=60)
        assert page["total"] == 0 and page["items"] == []
    finally:
        uv.should_exit = True
        late.join(timeout=10)
