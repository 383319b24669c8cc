"""The HTTP edge against hostile clients and careless operators, on real `regtune serve` processes.

- /metrics labels come from a closed set, whatever methods and paths clients send.
- Only configured Host names are answered (DNS rebinding); writes from another site, and writes
  whose body is not JSON, are refused (CSRF with auth off).
- Every response carries the security headers; /docs and /redoc load nothing from elsewhere.
- A database whose schema is missing: /healthz 503 naming `regtune db upgrade`, a start-up log
  line, 503s in the JSON error shape, healthy as soon as the upgrade ran.
- `regtune db upgrade` never prints the database password.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.security import SECURITY_HEADERS
from service.app import create_app
from service.migrations import downgrade, upgrade
from service.observability.metrics import KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ROUTE
from tests.reliability._processes import REPO, env_for, run_cli, server
from tests.support import free_port, settings_for, stop_process, tiny_spec

# the default list: loopback names plus the bound host (tests/conftest.py widens it for
# Starlette's TestClient; these servers get the real default)
DEFAULT_HOSTS = ""
LATENCY = "regtune_http_request_duration_seconds_count"


def _raw_request(base: str, method: str, path: str) -> int:
    """Send one HTTP/1.1 request as raw bytes (any method token); the status code answered."""
    parts = urlsplit(base)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def _latency_series(text: str) -> list[dict[str, str]]:
    series = []
    for line in text.splitlines():
        if line.startswith(LATENCY + "{"):
            labels = line[len(LATENCY) + 1 : line.index("}")]
            series.append(dict(re.findall(r'(\w+)="([^"]*)"', labels)))
    return series


def test_metrics_labels_come_from_a_closed_set(sqlite_url: str) -> None:
    """Long odd methods and unknown paths add no series: /metrics stays the same size."""
    with server(sqlite_url) as base:

        def flood(start: int, count: int) -> None:
            for i in range(start, start + count):
                odd = f"X{i:04d}" + "M" * 2000
                assert _raw_request(base, odd, "/api/v1/studies") in (400, 405)
                assert _raw_request(base, odd, f"/nowhere/{i}/" + "p" * 2000) in (400, 404, 405)
                assert httpx.get(f"{base}/unknown/{i}/" + "q" * 1000).status_code == 404

        flood(0, 2)
        httpx.get(f"{base}/metrics")  # /metrics itself is a series from its second scrape on
        before = httpx.get(f"{base}/metrics").text
        flood(2, 40)
        after = httpx.get(f"{base}/metrics").text

    series = _latency_series(after)
    assert len(series) == len(_latency_series(before))
    # counters grow by a few digits; 120 new series would add tens of KB
    assert len(after) - len(before) < 2_000
    assert {s["method"] for s in series} <= KNOWN_METHODS | {OTHER_METHOD}
    assert OTHER_METHOD in {s["method"] for s in series}
    routes = {s["route"] for s in series}
    assert UNMATCHED_ROUTE in routes
    assert not any("nowhere" in r or "unknown" in r for r in routes)


def test_only_configured_host_names_are_answered(sqlite_url: str) -> None:
    """DNS rebinding: a page on evil.test resolved to 127.0.0.1 sends `Host: evil.test`."""
    with server(sqlite_url, REGTUNE_ALLOWED_HOSTS=DEFAULT_HOSTS) as base:
        port = urlsplit(base).port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
            r = httpx.get(f"{base}/healthz", headers={"Host": host})
            assert r.status_code == 200, host
        for host in (f"evil.test:{port}", "evil.test", f"127.0.0.1.evil.test:{port}", ""):
            r = httpx.get(f"{base}/api/v1/studies", headers={"Host": host})
            assert r.status_code == 400, host
            (detail,) = r.json()["detail"]
            assert detail["type"] == "invalid_host"
            assert "REGTUNE_ALLOWED_HOSTS" in detail["msg"]
            # probes and scrapers (Kubernetes: Host is the pod's IP) still reach the public pair
            for public in ("/healthz", "/metrics"):
                assert httpx.get(base + public, headers={"Host": host}).status_code == 200
    # (127.0.0.1: the name the test harness checks /healthz by)
    with server(sqlite_url, REGTUNE_ALLOWED_HOSTS="regtune.example.com,127.0.0.1") as base:
        ok = httpx.get(f"{base}/api/v1/studies", headers={"Host": "regtune.example.com"})
        assert ok.status_code == 200
        refused = httpx.get(f"{base}/api/v1/studies", headers={"Host": "localhost"})
        assert refused.status_code == 400


def test_cross_site_and_non_json_writes_are_refused(sqlite_url: str) -> None:
    """A cross-site form POST to /cancel (the reproduced CSRF) and text/plain writes: refused."""
    with server(sqlite_url, REGTUNE_ALLOWED_HOSTS=DEFAULT_HOSTS) as base:
        created = httpx.post(f"{base}/api/v1/studies", json=tiny_spec("csrf"))
        assert created.status_code == 201, created.text
        cancel = f"{base}/api/v1/studies/{created.json()['id']}/cancel"
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        # what a browser sends for an auto-submitted form on evil.test
        r = httpx.post(
            cancel,
            content=b"",
            headers={**form, "Origin": "http://evil.test", "Sec-Fetch-Site": "cross-site"},
        )
        assert r.status_code == 403 and r.json()["detail"][0]["type"] == "forbidden"
        # an older browser: Origin only
        r = httpx.post(cancel, headers={"Origin": "http://evil.test"})
        assert r.status_code == 403
        r = httpx.post(cancel, headers={"Origin": "null"})
        assert r.status_code == 403
        # no browser headers at all, but a form or text body: not JSON
        for content_type in (
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data",
        ):
            r = httpx.post(cancel, content=b"a=1", headers={"Content-Type": content_type})
            assert r.status_code == 415, content_type
            assert r.json()["detail"][0]["loc"] == ["header", "content-type"]
        r = httpx.post(cancel, content=b"{}")  # a body without a content type
        assert r.status_code == 415
        r = httpx.post(
            f"{base}/dashboard-api/parse-spec",
            content=b"name: x\n",
            headers={"Content-Type": "text/plain"},
        )
        assert r.status_code == 415
        status = httpx.get(f"{base}/api/v1/studies/{created.json()['id']}").json()["status"]
        assert status == "queued"

        # the server's own pages (same origin) and plain clients (no Origin) still write
        same = httpx.post(
            cancel,
            json={},
            headers={"Origin": base, "Sec-Fetch-Site": "same-origin"},
        )
        assert same.status_code == 200, same.text
        assert same.json()["status"] == "cancelled"
        parsed = httpx.post(f"{base}/dashboard-api/parse-spec", json="name: x\n")
        assert parsed.status_code == 200 and parsed.json() == {"name": "x"}


def test_every_response_carries_the_security_headers(sqlite_url: str) -> None:
    with server(sqlite_url, REGTUNE_ALLOWED_HOSTS=DEFAULT_HOSTS) as base:
        responses = [
            httpx.get(f"{base}/"),
            httpx.get(f"{base}/new"),
            httpx.get(f"{base}/healthz"),
            httpx.get(f"{base}/metrics"),
            httpx.get(f"{base}/openapi.json"),
            httpx.get(f"{base}/docs"),
            httpx.get(f"{base}/api/v1/studies/404"),
            httpx.get(f"{base}/api/v1/studies", headers={"Host": "evil.test"}),
            httpx.post(
                f"{base}/api/v1/studies", content=b"x", headers={"Content-Type": "text/plain"}
            ),
        ]
    for r in responses:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (r.request.url, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp


def test_api_docs_load_nothing_from_another_origin(sqlite_url: str) -> None:
    with server(sqlite_url) as base:
        for page in ("/docs", "/redoc"):
            html = httpx.get(base + page).text
            refs = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert refs, page
            assert "<script>" not in html  # no inline script: the CSP would block it
            for ref in refs:
                assert ref.startswith("/"), (page, ref)
                asset = httpx.get(base + ref)
                assert asset.status_code == 200, ref
                assert len(asset.content) > 200, ref
        assert 'data-openapi-url="/openapi.json"' in httpx.get(f"{base}/docs").text
        assert "SwaggerUIBundle(" in httpx.get(f"{base}/docs-static/swagger-init.js").text


@dataclass
class Started:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def _serve_unhealthy(url: str, log: Path, **env: str) -> Iterator[Started]:
    """`regtune serve` that may answer 503 on /healthz: waits until it answers at all."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "0"],
            env=env_for(url, **env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield Started(base, proc, log)
    finally:
        stop_process(proc)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_an_unmigrated_database_is_reported_not_a_silent_500(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A new user's first `regtune serve` without `regtune db upgrade` (SQLite: no auto-migrate)."""
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    with _serve_unhealthy(url, tmp_path / "serve.log", REGTUNE_AUTO_MIGRATE="false") as srv:
        health = httpx.get(f"{srv.url}/healthz")
        assert health.status_code == 503
        assert "regtune db upgrade" in health.json()["database"]
        assert "regtune db upgrade" in srv.log.read_text()  # said at start-up

        for r in (
            httpx.post(f"{srv.url}/api/v1/studies", json=tiny_spec("first")),
            httpx.get(f"{srv.url}/api/v1/studies"),
            httpx.get(f"{srv.url}/api/v1/studies/first"),
        ):
            assert r.status_code == 503, r.text
            (detail,) = r.json()["detail"]
            assert detail["type"] == "unavailable"
            assert "regtune db upgrade" in detail["msg"]
        assert "Traceback" in srv.log.read_text()  # the failure is in the server's log

        upgraded = run_cli(url, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # re-checked while not ok
        created = httpx.post(f"{srv.url}/api/v1/studies", json=tiny_spec("first"))
        assert created.status_code == 201, created.text


def test_db_upgrade_failure_never_prints_the_password() -> None:
    secret = "s3cret-Pw"
    url = f"postgresql+psycopg://regtune:{secret}@127.0.0.1:{free_port()}/regtune"
    failed = run_cli(url, "db", "upgrade")
    assert failed.returncode == 1
    assert "cannot migrate postgresql+psycopg://regtune:***@127.0.0.1" in failed.stderr
    assert secret not in failed.stdout + failed.stderr


def test_a_bug_answers_a_logged_500_in_the_json_error_shape(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(sqlite_url)
    app = create_app(settings_for(sqlite_url))

    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/v1/boom")
    assert r.status_code == 500
    assert r.json() == {
        "detail": [
            {
                "loc": [],
                "msg": "internal server error (logged on the server)",
                "type": "internal_error",
            }
        ]
    }
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value
    (record,) = [rec for rec in caplog.records if rec.getMessage().startswith("unhandled")]
    assert record.getMessage() == "unhandled RuntimeError on GET /api/v1/boom"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"


def _json_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 500, (response.request.url, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    (detail,) = response.json()["detail"]
    assert {"loc", "msg", "type"} <= set(detail)
    return dict(detail)


def test_every_operation_refuses_hostile_http_with_a_json_error(sqlite_url: str) -> None:
    """Each operation of /openapi.json, sent with an odd method, a foreign Host, and (writes) a
    cross-site Origin or a non-JSON body: a 4xx in the JSON error shape, never a 5xx."""
    with server(sqlite_url, REGTUNE_ALLOWED_HOSTS=DEFAULT_HOSTS) as base:
        created = httpx.post(f"{base}/api/v1/studies", json=tiny_spec("target"))
        assert created.status_code == 201
        paths = httpx.get(f"{base}/openapi.json").json()["paths"]
        sent = 0
        for template, methods in paths.items():
            url = base + template.replace("{study}", "target").replace("{number}", "0")
            for method in methods:
                r = httpx.request(method, url, headers={"Host": "evil.test"})
                if template in ("/healthz", "/metrics"):
                    assert r.status_code == 200
                else:
                    assert _json_error(r)["type"] == "invalid_host"
                odd = "PROPFIND-" + "X" * 3000
                assert _raw_request(base, odd, template) in (400, 404, 405)
                if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
                    r = httpx.request(method, url, json={}, headers={"Origin": "http://evil.test"})
                    assert _json_error(r)["type"] == "forbidden"
                    r = httpx.request(
                        method, url, content=b"a=1", headers={"Content-Type": "text/plain"}
                    )
                    assert _json_error(r)["type"] == "unsupported_media_type"
                sent += 1
        assert sent >= 10
        after = httpx.get(f"{base}/api/v1/studies/target").json()["status"]
        assert after == "queued"  # no refused write got through


def test_a_database_behind_this_release_is_reported_outdated(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    downgrade(sqlite_url, "-1")  # as left by the previous release
    with TestClient(create_app(settings_for(sqlite_url))) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["database"].startswith("schema outdated (revision ")
        assert "regtune db upgrade" in health.json()["database"]
        upgrade(sqlite_url)
        assert client.get("/healthz").status_code == 200
