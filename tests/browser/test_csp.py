"""The dashboard and the API docs work under the Content-Security-Policy (real Chromium).

A CSP violation is a console error, so every page here also proves nothing it needs is blocked:
Plotly, the dashboard's script, Swagger UI and ReDoc, all served by this server.
"""

from __future__ import annotations

import httpx
import pytest

from service.api.security import CONTENT_SECURITY_POLICY
from tests.browser.conftest import Page, Server

pytestmark = pytest.mark.browser


def test_every_page_runs_under_the_policy(page: Page, server: Server) -> None:
    p = page.page
    pages = {
        "/": "#studies tbody tr[data-study-id]",
        f"/studies/{server.study_id}": "#plot-history .js-plotly-plot",
        "/new": "#spec",
        "/docs": ".swagger-ui .opblock",
        "/redoc": "[data-section-id]",
    }
    for path, ready in pages.items():
        response = p.goto(server.url + path)
        assert response is not None
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        p.locator(ready).first.wait_for(timeout=30_000)
    # ReDoc's sidebar logo comes from its CDN: the policy blocks it (ReDoc hides it)
    blocked_logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert [e for e in page.errors if blocked_logo not in e] == []


def test_the_example_picker_works_without_an_inline_handler(page: Page, server: Server) -> None:
    p = page.page
    p.goto(server.url + "/new")
    p.select_option("#example", "digits")
    p.wait_for_url("**/new?example=digits")
    assert "digits-mlp" in p.locator("#spec").input_value()
    assert page.errors == []


def test_the_docs_load_no_script_from_elsewhere(page: Page, server: Server) -> None:
    requested: list[str] = []
    page.page.on("request", lambda r: requested.append(r.url))
    page.page.goto(server.url + "/docs")
    page.page.locator(".swagger-ui .opblock").first.wait_for()
    assert requested and all(u.startswith(server.url) for u in requested), requested
    assert httpx.get(server.url + "/docs").headers["x-frame-options"] == "DENY"
