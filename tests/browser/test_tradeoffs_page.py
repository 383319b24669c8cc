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
    complete = [t for t in trials if t["state"] == "complete" and t["role"] == "search"]
    assert complete and all(t["feasible"] is False for t in complete)
    infeasible = [t for t in trials if t["feasible"] is False]  # the reference run's too
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
    # the study's facts name both objectives and the constraint, and the best card says the
    # trial it shows breaks the constraint (before: "minimize val_loss", and no word of it)
    facts = p.locator("#study-times").inner_text()
    assert "minimize val_loss, minimize val_ece; subject to gap <= -10" in facts
    assert "infeasible" in p.locator("#best-trial .tag.infeasible").inner_text()
    # the trials table tags them too
    p.locator("#trials tbody tr[data-role]").first.wait_for()
    assert p.locator("#trials tbody .tag.infeasible").count() == len(infeasible)
    page.shoot("study-pareto")
    assert page.errors == []


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A finished study with a reference run and confirmation repeats of its top 2 configs."""
    url = f"sqlite:///{tmp_path_factory.mktemp('confirmed') / 'regtune.db'}"
    upgrade(url)
    spec = tiny_spec("browser-confirmed", n_trials=4)
    spec["reference"] = True
    spec["confirm"] = {"top_k": 2, "repeats": 1}
    spec["pruner"] = {"name": "none"}  # four complete configs to pick the top 2 from
    with TestClient(create_app(settings_for(url))) as client:
        study_id = int(submit(client, spec)["id"])
        run_to_completion(url, study_id)
    with serve_in_thread(create_app(settings_for(url))) as base:
        yield Served(base, study_id)


def test_reference_run_and_confirmed_configs_on_the_page(page: Page, confirmed: Served) -> None:
    api = f"{confirmed.url}/api/v1/studies/{confirmed.study_id}"
    best = httpx.get(f"{api}/best").json()
    reference, confirmation = best["reference"], best["confirmation"]
    assert reference["state"] == "complete" and confirmation["n"] == 2

    p = page.page
    p.goto(f"{confirmed.url}/studies/{confirmed.study_id}")
    page.wait_for("document.body.dataset.polling === 'off'")
    # the reference run (regularization off) beside the tuned best
    p.locator("#reference-table").wait_for()
    head = p.locator("#reference-table thead").inner_text()
    # only the validation row is a mean of the runs; test metrics, gap, ... are the search run's
    assert f"tuned (trial {best['trial_number']})" in head and "mean of" not in head
    label = p.locator("#reference-table tr[data-metric='validation val_loss'] th").inner_text()
    assert label == "validation val_loss (mean of 2 runs)"
    assert f"regularization off (trial {reference['trial_number']})" in head
    row = p.locator("#reference-table tr[data-metric='validation val_loss'] td")
    assert float(row.nth(0).inner_text()) == pytest.approx(best["value"], rel=1e-3)
    assert float(row.nth(1).inner_text()) == pytest.approx(reference["value"], rel=1e-3)
    shown = p.evaluate(
        "[...document.querySelectorAll('#reference-table tbody tr')].map(r => r.dataset.metric)"
    )
    assert {"gap", "val_ece", "near_zero_frac"} <= set(shown)

    # the confirmed mean and its runs in the best card, and the confirmed configs' spread
    card = p.locator("#best-confirmation").inner_text()
    assert "over n = 2 runs" in card and str(confirmation["trial_numbers"][0]) in card
    assert p.locator("#plot-confirmation").is_visible()
    figure = "document.querySelector('#plot-confirmation .js-plotly-plot').data"
    traces = {t["name"]: t for t in p.evaluate(figure)}
    assert traces["confirmed winner"]["x"] == [f"trial {best['trial_number']}"]
    assert len(traces["mean ± std"]["x"]) == 2  # top_k configs
    assert len(traces["mean ± std"]["error_y"]["array"]) == 2
    assert len(traces["runs"]["y"]) == 4  # each config's search run and its repeat
    # the search plots keep the search trials only
    trials = httpx.get(f"{api}/trials?limit=100").json()["items"]
    searched = [t for t in trials if t["role"] == "search" and t["state"] == "complete"]
    plots = httpx.get(f"{api}/plots").json()
    assert plots["n_trials_plotted"] == len(searched)
    assert p.locator("#trials tbody tr[data-role='confirm']").count() == 2
    assert p.locator("#trials tbody tr[data-role='reference'] .tag").inner_text() == "reference"
    assert p.locator("#plot-pareto").is_hidden()
    page.shoot("study-confirmed")
    assert page.errors == []
