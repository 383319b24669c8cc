"""The study page of plugin trainers in real Chromium: curves follow each study's own objective
metric, the selector switches metric, and panels a trainer cannot feed say why and how.

Two plugins, each run by the real worker over the real app:
- `browser-own-metrics` (tests/browser/plugin_trainer.py): logs only `val_xent` and `val_hits`,
  declares nothing, so regtune yields no gap or ECE for it;
- `insight-cnn` (tests/plugin_pkg): logs only `val_nll_custom` and declares
  task='classification', so regtune yields gap, ECE and the rest for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.migrations import upgrade
from tests.browser import plugin_trainer
from tests.browser.conftest import Page
from tests.dashboard.studies import run_to_completion, settings_for, submit, tiny_spec
from tests.support import serve_in_thread
from trainers import registry

pytestmark = pytest.mark.browser

INSIGHT = "insight-cnn"

# number of data points of the Plotly figure in `selector`
POINTS_JS = """(selector) => {
  const node = document.querySelector(selector + ' .js-plotly-plot');
  if (!node || !node.data) return -1;
  return node.data.reduce((n, trace) => n + (trace.x ? trace.x.length : 0), 0);
}"""
NOTE_JS = "(s) => document.querySelector(s + ' .plot-note').textContent"


@dataclass
class PluginServer:
    url: str
    studies: dict[str, int]  # trainer name -> study id


def _spec(name: str, trainer: str, metric: str, config: dict[str, Any]) -> dict[str, Any]:
    spec = tiny_spec(name, n_trials=4, trainer=trainer, trainer_config=config)
    spec["objective"] = {"metric": metric, "direction": "minimize"}
    spec["search_space"]["l1"] = {"low": 1e-6, "high": 1e-2, "log": True}
    spec["pruner"] = {"name": "none"}
    return spec


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginServer]:
    """uvicorn over a database holding a finished study of each plugin (the worker ran them)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('plugin-browser') / 'regtune.db'}"
    upgrade(url)
    with pytest.MonkeyPatch.context() as patch:
        known = registry.available_trainers()
        patch.setattr(registry, "_cache", {**known, plugin_trainer.NAME: plugin_trainer.TRAINER})
        specs = [_spec("browser-own-metrics", plugin_trainer.NAME, "val_xent", {"max_epochs": 4})]
        if INSIGHT in known:
            config = {"max_epochs": 3, "n_train": 200, "channels": 4}
            specs.append(_spec("browser-insight-cnn", INSIGHT, "val_nll_custom", config))
        studies = {}
        with TestClient(create_app(settings_for(url))) as client:
            for spec in specs:
                study_id = int(submit(client, spec)["id"])
                run_to_completion(url, study_id)
                detail = client.get(f"/api/v1/studies/{study_id}").json()
                assert detail["status"] == "completed", detail
                studies[spec["trainer"]] = study_id
        with serve_in_thread(create_app(settings_for(url))) as base:
            yield PluginServer(base, studies)


def _open(page: Page, server: PluginServer, trainer: str) -> Any:
    p = page.page
    p.goto(f"{server.url}/studies/{server.studies[trainer]}")
    page.wait_for("document.body.dataset.polling === 'off'")
    return p


def _metric_options(p: Any) -> list[str]:
    options = "[...document.querySelectorAll('#curve-metric option')].map(o => o.value)"
    return list(p.evaluate(options))


def test_own_metric_plugin_curves_follow_its_objective_and_the_selector(
    page: Page, plugin_server: PluginServer
) -> None:
    p = _open(page, plugin_server, plugin_trainer.NAME)
    curves = "#plot-learning_curves"
    assert p.locator(curves).get_attribute("data-metric") == "val_xent"
    assert int(p.evaluate(POINTS_JS, curves)) > 0
    y_title = f"document.querySelector('{curves} .js-plotly-plot').layout.yaxis.title.text"
    assert p.evaluate(y_title) == "val_xent (objective)"
    options = _metric_options(p)
    assert options[0] == "val_xent" and "val_hits" in options and "val_loss" not in options
    assert p.locator("#curve-metric").is_visible()
    xent = p.evaluate(f"document.querySelector('{curves} .js-plotly-plot').data[0].y")

    p.select_option("#curve-metric", "val_hits")
    page.wait_for(f"document.querySelector('{curves}').dataset.metric === 'val_hits'")
    hits = p.evaluate(f"document.querySelector('{curves} .js-plotly-plot').data[0].y")
    assert hits != xent and all(0.0 <= y <= 1.0 for y in hits)
    assert p.evaluate(y_title) == "val_hits"
    assert p.input_value("#curve-metric") == "val_hits"

    # no declaration: no gap, no ECE; each panel says why and how to get it
    gap = p.evaluate(NOTE_JS, "#plot-gap")
    assert "this trainer logs no gap" in gap and "task='classification'" in gap
    assert "docs/trainers.md" in gap
    calibration = p.evaluate(NOTE_JS, "#plot-calibration")
    assert "this trainer logs no val_ece" in calibration and "Trainer(...)" in calibration
    assert int(p.evaluate(POINTS_JS, "#plot-gap")) == 0
    assert int(p.evaluate(POINTS_JS, "#plot-calibration")) == 0
    assert int(p.evaluate(POINTS_JS, "#plot-history")) > 0
    assert p.locator("#plot-pareto").is_hidden() and p.locator("#plot-confirmation").is_hidden()
    page.shoot("plugin-own-metrics")
    assert page.errors == []


def test_declared_classifier_plugin_gets_every_panel(
    page: Page, plugin_server: PluginServer
) -> None:
    if INSIGHT not in plugin_server.studies:
        pytest.skip(f"the {INSIGHT} plugin is not installed (pip install -e tests/plugin_pkg)")
    p = _open(page, plugin_server, INSIGHT)
    curves = "#plot-learning_curves"
    assert p.locator(curves).get_attribute("data-metric") == "val_nll_custom"
    assert int(p.evaluate(POINTS_JS, curves)) > 0
    options = _metric_options(p)
    assert options[0] == "val_nll_custom"
    assert {"val_nll", "val_acc", "val_ece", "gap", "weight_l2", "near_zero_frac"} <= set(options)
    for panel in ("#plot-gap", "#plot-calibration", "#plot-sparsity"):
        assert int(p.evaluate(POINTS_JS, panel)) > 0, f"{panel} has no data points"
    p.select_option("#curve-metric", "val_ece")
    page.wait_for(f"document.querySelector('{curves}').dataset.metric === 'val_ece'")
    assert int(p.evaluate(POINTS_JS, curves)) > 0
    page.shoot("plugin-insight-cnn")
    assert page.errors == []
