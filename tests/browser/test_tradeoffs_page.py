"""A study with two objectives and a constraint, in real Chromium: the Pareto front is drawn and
the infeasible trials are marked, in the same numbers as the API reports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.migrations import upgrade
from tests.browser.conftest import Page
from tests.dashboard.studies import run_to_completion, settings_for, submit, tiny_spec
from tests.support import serve_in_thread

pytestmark = pytest.mark.browser

TRACES_JS = """(selector) => {
  const node = document.querySelector(selector + ' .js-plotly-plot');
  return node && node.data ? Object.fromEntries(node.data.map(t => [t.name, t.x.length])) : null;
}"""


@dataclass
class Served:
    url: str
    study_id: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path_factory.mktemp('tradeoffs') / 'regtune.db'}"
    upgrade(url)
    spec = tiny_spec("browser-pareto", n_trials=6)
    spec["objective"] = [
        {"metric": "val_loss", "direction": "minimize"},
        {"metric": "val_ece", "direction": "minimize"},
    ]
    # a bound no trial can meet (val loss 10 below train loss): every trial is infeasible
    spec["constraints"] = [{"metric": "gap", "op": "<=", "value": -10.0}]
    spec["pruner"] = {"name": "none"}  # Optuna prunes no multi-objective study
    with TestClient(create_app(settings_for(url))) as client:
        study_id = int(submit(client, spec)["id"])
        run_to_completion(url, study_id)
    with serve_in_thread(create_app(settings_for(url))) as base:
        yield Served(base, study_id)


def test_pareto_front_and_infeasible_trials_on_the_page(page: Page, served: Served) -> None:
    api = f"{served.url}/api/v1/studies/{served.study_id}"
    trials = httpx.get(f"{api}/trials?limit=100").json()["items"]
    complete = [t for t in trials if t["state"] == "complete"]
    assert complete and all(t["feasible"] is False for t in complete)
    best = httpx.get(f"{api}/best").json()
    front = sorted(t["number"] for t in best["pareto"])

    p = page.page
    p.goto(f"{served.url}/studies/{served.study_id}")
    page.wait_for("document.body.dataset.polling === 'off'")
    assert p.locator("#plot-pareto").is_visible()
    pareto = p.evaluate(TRACES_JS, "#plot-pareto")
    assert pareto["Pareto front"] == len(front)
    assert pareto["Pareto front"] + pareto.get("infeasible", 0) == len(complete)
    assert "no trial meets the constraints" in p.locator("#plot-pareto .plot-note").inner_text()
    history = p.evaluate(TRACES_JS, "#plot-history")
    assert history["infeasible"] == len(complete) and "complete" not in history
    x_title = "document.querySelector('#plot-pareto .js-plotly-plot').layout.xaxis.title.text"
    assert p.evaluate(x_title) == "val_loss (min)"
    assert p.locator("#plot-confirmation").is_hidden()
    # the trials table tags them too
    p.locator("#trials tbody tr[data-role]").first.wait_for()
    assert p.locator("#trials tbody .tag.infeasible").count() == len(complete)
    page.shoot("study-pareto")
    assert page.errors == []
