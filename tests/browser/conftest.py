"""Browser fixtures: a real uvicorn server over an SQLite file holding a study the real worker ran,
and Debian's Chromium driven by Playwright (never a downloaded browser).

Every page records its console errors and uncaught exceptions; a test fails if any appear.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.migrations import upgrade
from tests.dashboard.studies import completed_study, settings_for
from tests.support import serve_in_thread

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}


@dataclass
class Server:
    url: str
    database_url: str
    study_id: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """uvicorn on a free loopback port (auth off), over a database with one completed study."""
    db = tmp_path_factory.mktemp("browser") / "regtune.db"
    url = f"sqlite:///{db}"
    upgrade(url)
    study_id = completed_study(url, "browser-finished", n_trials=8)
    with serve_in_thread(create_app(settings_for(url))) as base:
        yield Server(base, url, study_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: tests/setup_env.py installs Debian's chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Page:
    """A Playwright page plus the console errors and page errors it produced."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def wait_for(self, expression: str, timeout: float = 30_000) -> None:
        """Poll the JS `expression` until it is truthy (`timeout` in ms, like Playwright's).

        Not `wait_for_function`: Playwright compiles that predicate with `eval` inside the page,
        which the pages' Content-Security-Policy (no 'unsafe-eval') refuses.
        """
        deadline = time.monotonic() + timeout / 1000
        while not self.page.evaluate(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            self.page.wait_for_timeout(100)

    def shoot(self, name: str) -> None:
        """Full-page screenshots at both viewport sizes; checks nothing overflows sideways."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        original = self.page.viewport_size
        for label, (width, height) in VIEWPORTS.items():
            self.page.set_viewport_size({"width": width, "height": height})
            # Plotly's own resize handler is debounced: resize every plot now, and wait for it
            self.page.evaluate(
                "() => window.Plotly ? Promise.all([...document.querySelectorAll("
                "'.js-plotly-plot')].map((el) => window.Plotly.Plots.resize(el))) : null"
            )
            overflow = self.page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name} at {label}: the page scrolls sideways by {overflow}px"
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        self.page.set_viewport_size(original)


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    p = context.new_page()
    wrapped = Page(p)
    p.on(
        "console",
        lambda msg: wrapped.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    p.on("pageerror", lambda exc: wrapped.errors.append(f"pageerror: {exc}"))
    try:
        yield wrapped
    finally:
        context.close()
