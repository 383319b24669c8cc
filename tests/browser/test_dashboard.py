"""The dashboard in real Chromium against a real server and a study the real worker completed."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.auth import TokenScope, create_token
from service.db import make_engine, make_session_factory, unit_of_work
from tests.browser.conftest import Page, Server
from tests.dashboard.studies import run_to_completion, settings_for, tiny_spec
from tests.support import serve_in_thread

pytestmark = pytest.mark.browser

PLOTS = ["history", "importance", "learning_curves", "gap", "calibration", "sparsity", "parallel"]
SLICES = ["weight_decay", "dropout", "label_smoothing", "batch_size", "patience"]

# number of data points of the Plotly figure in `selector` (parcoords: lines through the axes)
POINTS_JS = """(selector) => {
  const node = document.querySelector(selector + ' .js-plotly-plot');
  if (!node || !node.data) return -1;
  return node.data.reduce((n, trace) => {
    if (trace.type === 'parcoords') return n + trace.dimensions[0].values.length;
    return n + (trace.x ? trace.x.length : 0);
  }, 0);
}"""


def _points(page: Any, selector: str) -> int:
    return int(page.evaluate(POINTS_JS, selector))


def test_study_list_shows_progress_and_links_to_the_study(page: Page, server: Server) -> None:
    p = page.page
    p.goto(server.url + "/")
    row = p.locator(f"tr[data-study-id='{server.study_id}']")
    row.wait_for()
    assert row.locator("td.name a").inner_text() == "browser-finished"
    assert "completed" in row.inner_text()
    assert "8/8 finished" in row.locator(".progress-label").inner_text()
    best = row.locator("td.num").inner_text()
    float(best)  # a number, not the placeholder dash
    page.shoot("study-list")

    # the status filter is applied by the server: no completed study among the running ones
    p.select_option("#status-filter", "running")
    p.wait_for_url("**/?status=running")
    p.locator("#studies tbody tr.placeholder").wait_for()
    assert p.locator(f"tr[data-study-id='{server.study_id}']").count() == 0

    p.goto(server.url + "/")
    p.locator(f"tr[data-study-id='{server.study_id}'] td.name a").click()
    p.wait_for_url(f"**/studies/{server.study_id}")
    p.locator("#study-name", has_text="browser-finished").wait_for()
    assert page.errors == []


def test_study_page_draws_every_plot_from_the_finished_study(page: Page, server: Server) -> None:
    p = page.page
    p.goto(f"{server.url}/studies/{server.study_id}")
    page.wait_for("document.body.dataset.polling === 'off'")
    assert p.locator("#study-status").inner_text() == "completed"
    assert p.locator("#cancel-button").is_hidden()  # nothing to cancel once it ended
    best_params = p.locator("#best-params").inner_text()
    assert "weight_decay" in best_params and "dropout" in best_params
    best = httpx.get(f"{server.url}/api/v1/studies/{server.study_id}").json()["best_trial"]
    # best_epoch counts from 0: the card counts epochs from 1, like epochs_run (was "4 of 5"
    # for the last of 5 epochs)
    epoch = f"epoch {best['best_epoch'] + 1} of {best['epochs_run']})"
    assert epoch in p.locator("#best-trial .best-value").inner_text()

    for name in PLOTS:
        assert _points(p, f"#plot-{name}") > 0, f"{name} has no data points"
    for param in SLICES:
        assert _points(p, f"#plot-slice-{param}") > 0, f"slice of {param} has no data points"
    # λ spans orders of magnitude: its slice uses a log axis
    x_type = p.evaluate(
        "document.querySelector('#plot-slice-weight_decay .js-plotly-plot').layout.xaxis.type"
    )
    assert x_type == "log"

    # pruned trials are hidden by default; the toggle adds them, drawn dotted
    curve_names = "(s) => document.querySelector(s + ' .js-plotly-plot').data.map(t => t.name)"
    hidden = p.evaluate(curve_names, "#plot-learning_curves")
    assert hidden and not any("pruned" in n for n in hidden)
    history_before = _points(p, "#plot-history")
    p.check("#show-pruned")
    page.wait_for(
        "document.querySelector('#plot-learning_curves .js-plotly-plot')"
        ".data.some(t => t.name.includes('pruned'))"
    )
    dashes = p.evaluate(
        "document.querySelector('#plot-learning_curves .js-plotly-plot').data"
        ".filter(t => t.name.includes('pruned')).map(t => t.line.dash)"
    )
    assert dashes and set(dashes) == {"dot"}
    assert _points(p, "#plot-history") > history_before
    page.shoot("study-page")

    # the trials table sorts by value on the server (both directions)
    first_value = "document.querySelector('#trials tbody tr td:nth-child(3)').textContent"
    p.click("#trials th[data-sort='value']")
    p.locator("#trials tbody[data-sort='value']").wait_for(state="attached")
    ascending = float(p.evaluate(first_value))
    p.click("#trials th[data-sort='value']")
    p.locator("#trials tbody[data-sort='-value']").wait_for(state="attached")
    assert float(p.evaluate(first_value)) > ascending
    assert page.errors == []


def test_invalid_spec_shows_the_error_on_the_field_line(page: Page, server: Server) -> None:
    p = page.page
    p.goto(server.url + "/new")
    text = p.input_value("#spec")
    assert "search_space:" in text  # prefilled from an example
    broken = text.replace("{low: 0.0, high: 0.5}", "{low: 0.0, high: 1.5}")
    assert broken != text
    p.fill("#spec", broken)
    p.click("#submit-button")
    item = p.locator("#spec-errors li[data-field='search_space.dropout.high']")
    item.wait_for()
    assert "dropout.high must be < 1" in item.inner_text()
    line = next(i for i, ln in enumerate(broken.splitlines(), 1) if ln.startswith("  dropout:"))
    assert item.get_attribute("data-line") == str(line)
    assert p.locator("#gutter .bad").inner_text() == f"⚠{line}"
    page.shoot("new-study-invalid")
    # the browser reports the refused POST itself ("Failed to load resource: ... 422"): expected
    unexpected = [e for e in page.errors if "status of 422" not in e]
    assert unexpected == []


def test_submitted_study_appears_and_updates_live_until_it_ends(page: Page, server: Server) -> None:
    p = page.page
    spec = tiny_spec("browser-live", n_trials=3)
    spec["budget"] = {"n_trials": 3}
    p.goto(server.url + "/new")
    p.fill("#spec", json.dumps(spec, indent=2))
    p.click("#submit-button")
    p.wait_for_url("**/studies/*")
    study_id = int(p.url.rsplit("/", 1)[1])
    p.locator("#study-name", has_text="browser-live").wait_for()
    assert p.locator("#study-status").inner_text() == "queued"
    # the live marker follows the first full render (detail, plots, trials), not the name alone
    p.locator("body[data-polling='on']").wait_for(state="attached")
    assert p.locator("#live").is_visible()
    p.evaluate("window.__sameDocument = true")  # survives only if the page never reloads

    # a real worker runs the study while the page polls
    worker = threading.Thread(target=run_to_completion, args=(server.database_url, study_id))
    worker.start()
    try:
        page.wait_for(
            "document.querySelector('#study-status').textContent === 'completed'"
            " && document.body.dataset.polling === 'off'",
            timeout=60_000,
        )
    finally:
        worker.join(timeout=120)
    assert p.evaluate("window.__sameDocument") is True
    assert _points(p, "#plot-history") > 0
    assert "3/3 finished" in p.locator("#study-progress").inner_text()

    p.goto(server.url + "/")
    p.locator(f"tr[data-study-id='{study_id}']", has_text="browser-live").wait_for()
    assert page.errors == []


def test_cancel_button_stops_a_queued_study(page: Page, server: Server) -> None:
    created = httpx.post(f"{server.url}/api/v1/studies", json=tiny_spec("browser-cancel"))
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    p = page.page
    p.goto(f"{server.url}/studies/{study_id}")
    p.locator("#cancel-button").wait_for()
    page.shoot("study-queued")
    p.once("dialog", lambda dialog: dialog.accept())
    p.click("#cancel-button")
    page.wait_for(
        "document.querySelector('#study-status').textContent === 'cancelled'"
        " && document.body.dataset.polling === 'off'"
    )
    assert p.locator("#cancel-button").is_hidden()
    assert httpx.get(f"{server.url}/api/v1/studies/{study_id}").json()["status"] == "cancelled"
    assert page.errors == []


def test_with_api_auth_on_the_page_asks_for_a_token_and_sends_it(
    page: Page, server: Server
) -> None:
    with unit_of_work(make_session_factory(make_engine(server.database_url))) as session:
        _info, secret = create_token(session, "browser", TokenScope.read)
    settings = settings_for(server.database_url).model_copy(update={"auth": "on"})
    with serve_in_thread(create_app(settings)) as base:
        p = page.page
        p.goto(base + "/")
        dialog = p.locator("#token-dialog")
        dialog.wait_for()  # the list's data call got 401
        p.fill("#token-input", "rt_wrong")
        p.click("#token-form button[type=submit]")
        p.locator("#token-error", has_text="refused").wait_for()
        p.fill("#token-input", secret)
        p.click("#token-form button[type=submit]")
        p.locator(f"tr[data-study-id='{server.study_id}']").wait_for()
        assert p.evaluate("localStorage.getItem('regtune.token')") == secret
        # the next page reuses the stored token: no prompt
        p.goto(f"{base}/studies/{server.study_id}")
        page.wait_for("document.body.dataset.polling === 'off'")
        assert dialog.is_hidden()
        assert _points(p, "#plot-history") > 0
    # the browser reports the refused calls itself ("... status of 401"): expected
    assert [e for e in page.errors if "status of 401" not in e] == []
