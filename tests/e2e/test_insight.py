"""End to end: regularization insight for a plugin that computes none of it itself (issue 17).

`insight-cnn` (tests/plugin_pkg) is a user's CNN: it logs only `val_nll_custom` and declares
task='classification' in its `Trainer(...)`. `regtune tune --server` runs a study on it with two
objectives (its own metric and regtune's `val_ece`) and a constraint on regtune's `gap` against a
real `regtune serve --workers 1` on an SQLite file. Everything regtune computes for it (gap,
ECE, sparsity), the reference run and the Pareto front must then be in /best, the trials list,
a trial's detail, the SQL view and the tune JSON.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from service.tune import output_schema
from tests.support import serve_process, server_env

pytestmark = pytest.mark.slow

TRAINER = "insight-cnn"
OWN_METRIC = "val_nll_custom"
# what regtune computes for any declared classifier, none of it logged by the plugin
INSIGHT = ("gap", "val_ece", "near_zero_frac", "weight_l2", "val_nll", "train_nll")
N_TRIALS = 3
REGULARIZATION_OFF = {"weight_decay": 0.0, "l1": 0.0, "dropout": 0.0, "label_smoothing": 0.0}
SPEC: dict[str, Any] = {
    "name": "insight-e2e",
    "trainer": TRAINER,
    # a few tenths of a second per epoch on one CPU core
    "trainer_config": {"max_epochs": 2, "n_train": 200, "channels": 4},
    "search_space": {
        "weight_decay": {"low": 1e-5, "high": 1e-2, "log": True},
        "l1": {"low": 1e-6, "high": 1e-3, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "batch_size": {"choices": [32, 64]},
        "patience": {"fixed": 10},
    },
    "objective": [
        {"metric": OWN_METRIC, "direction": "minimize"},
        {"metric": "val_ece", "direction": "minimize"},
    ],
    # every trial meets it: `feasible` is then true (not null) everywhere a trial shows
    "constraints": [{"metric": "gap", "op": "<=", "value": 100}],
    "sampler": {"name": "random", "seed": 0},
    "budget": {"n_trials": N_TRIALS},
    # `reference` is left at its default: on
}


@dataclass
class Run:
    url: str  # the server's
    db: Path  # its SQLite file
    doc: dict[str, Any]  # the tune JSON
    summary: str  # the tune markdown summary


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A real server on which `regtune tune --server` ran the study to the end."""
    tmp = tmp_path_factory.mktemp("insight")
    db = tmp / "regtune.db"
    env = server_env(f"sqlite:///{db}", REGTUNE_AUTH="off")
    env.pop("REGTUNE_SERVER_URL", None)
    with serve_process("--workers", "1", env=env, cwd=tmp, stop_timeout=60) as running:
        (tmp / "spec.yaml").write_text(yaml.safe_dump(SPEC))
        tune = subprocess.run(
            [sys.executable, "-m", "service.cli", "tune", "spec.yaml", "--server", running.url,
             "--output", "best.json", "--summary", "summary.md", "--poll-interval", "0.2"],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert tune.returncode == 0, tune.stderr
        assert "Traceback" not in tune.stderr
        doc = json.loads((tmp / "best.json").read_text())
        yield Run(running.url, db, doc, (tmp / "summary.md").read_text())
    assert running.proc.returncode == 0


def _get(url: str, path: str) -> Any:
    response = httpx.get(f"{url}{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _has_insight(metrics: dict[str, Any] | None) -> None:
    assert metrics is not None
    for name in INSIGHT:
        assert isinstance(metrics.get(name), float), (name, metrics)
    assert 0.0 <= metrics["val_ece"] <= 1.0
    assert 0.0 <= metrics["near_zero_frac"] <= 1.0


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Trial `a` is as good as `b` on both (minimized) objectives and better on one."""
    pairs = list(zip(a["values"], b["values"], strict=True))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def test_the_plugin_logs_none_of_it_itself(served: Run) -> None:
    url = served.url
    [info] = [t for t in _get(url, "/api/v1/trainers") if t["name"] == TRAINER]
    # what the plugin's own code logs is `val_nll_custom`; the rest is regtune's
    assert info["metrics"][0] == OWN_METRIC
    assert set(info["metrics"]) >= set(INSIGHT)
    assert "val_loss" not in info["metrics"]


def test_best_carries_gap_ece_sparsity_reference_and_pareto(
    served: Run,
) -> None:
    url, doc = served.url, served.doc
    best = _get(url, f"/api/v1/studies/{doc['study_id']}/best")
    assert best["final"] is True and best["status"] == "completed"
    assert best["objectives"] == SPEC["objective"]
    assert best["metric"] == OWN_METRIC and best["feasible"] is True
    _has_insight(best["metrics"])
    assert best["value"] == best["metrics"][OWN_METRIC]
    assert best["progress"]["n_trials"] == N_TRIALS

    # the reference run: the same trainer with regularization off, beside the tuned best
    ref = best["reference"]
    assert ref is not None and ref["state"] == "complete"
    assert {k: ref["params"][k] for k in REGULARIZATION_OFF} == REGULARIZATION_OFF
    assert ref["params"]["batch_size"] == best["params"]["batch_size"]
    _has_insight(ref["metrics"])
    for key in ("gap", "val_ece", "near_zero_frac", "weight_l2"):
        assert ref[key] == ref["metrics"][key]
    assert ref["value"] == ref["metrics"][OWN_METRIC]

    # the Pareto front: exactly the non-dominated complete search trials on both objectives
    trials = _get(url, f"/api/v1/studies/{doc['study_id']}/trials?limit=100")["items"]
    search = [t for t in trials if t["role"] == "search" and t["state"] == "complete"]
    assert len(search) == N_TRIALS
    front = {t["number"] for t in search if not any(_dominates(o, t) for o in search)}
    assert best["pareto"] and {p["number"] for p in best["pareto"]} == front
    assert best["trial_number"] in front  # the first objective's best is on the front
    for member in best["pareto"]:
        assert member["values"] == [member["metrics"][OWN_METRIC], member["metrics"]["val_ece"]]
        assert member["feasible"] is True
        _has_insight(member["metrics"])


def test_trials_list_and_detail_carry_them(served: Run) -> None:
    url, doc = served.url, served.doc
    study = doc["study_id"]
    trials = _get(url, f"/api/v1/studies/{study}/trials?limit=100")["items"]
    # the search budget and one reference run, kept apart by role
    assert sorted(t["role"] for t in trials) == ["reference"] + ["search"] * N_TRIALS
    for t in trials:
        assert t["state"] == "complete", t
        _has_insight(t["metrics"])
        for key in ("gap", "val_ece", "near_zero_frac", "weight_l2", "val_nll"):
            assert t[key] == t["metrics"][key], key
        assert t["val_loss"] is None  # nobody logs val_loss: no column is filled by accident
        assert t["values"] == [t["metrics"][OWN_METRIC], t["metrics"]["val_ece"]]
        assert t["feasible"] is True

    number = doc["best_trial_number"]
    detail = _get(url, f"/api/v1/studies/{study}/trials/{number}")
    assert detail["gap"] == detail["metrics"]["gap"]
    # learning curves: every epoch has the plugin's metric, regtune's beside it at the default
    # cadence (every 2nd epoch); the trial's own columns are its reported epoch's either way
    assert len(detail["epochs"]) == detail["epochs_run"] >= 1
    for i, epoch in enumerate(detail["epochs"]):
        assert OWN_METRIC in epoch["metrics"]
        if i % 2 == 0:
            _has_insight(epoch["metrics"])


def test_sql_view_has_the_columns(served: Run) -> None:
    url, db, doc = served.url, served.db, served.doc
    trials = {
        t["number"]: t
        for t in _get(url, f"/api/v1/studies/{doc['study_id']}/trials?limit=100")["items"]
    }
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT trial, role, gap, val_ece, near_zero_frac, weight_l2, val_nll, "
            '"values", feasible FROM regtune_trial_results WHERE study = ?',
            (SPEC["name"],),
        ).fetchall()
    assert sorted(r["role"] for r in rows) == ["reference"] + ["search"] * N_TRIALS
    for row in rows:
        api = trials[row["trial"]]
        for key in ("gap", "val_ece", "near_zero_frac", "weight_l2", "val_nll"):
            assert row[key] == pytest.approx(api[key]), key
        assert json.loads(row["values"]) == pytest.approx(api["values"])
        assert row["feasible"] == 1


def test_tune_json_carries_them(served: Run) -> None:
    url, doc = served.url, served.doc
    jsonschema.Draft202012Validator(output_schema()).validate(doc)
    best = _get(url, f"/api/v1/studies/{doc['study_id']}/best")
    assert doc["status"] == "completed" and doc["trainer"] == TRAINER
    assert doc["metric"] == OWN_METRIC  # the gate's objective: the first one
    assert doc["best_value"] == best["value"]
    assert doc["best_trial_number"] == best["trial_number"]
    assert doc["counts"]["n_trials"] == N_TRIALS  # the reference run is not in the budget
    _has_insight(doc["best_metrics"])
    assert doc["best_metrics"] == best["metrics"]
    # the reference run, the objectives and the Pareto front, in /best's shape
    assert doc["best"]["reference"] == best["reference"]
    _has_insight(doc["best"]["reference"]["metrics"])
    assert doc["best"]["objectives"] == SPEC["objective"]
    assert doc["best"]["feasible"] is True
    assert doc["best"]["pareto"] == best["pareto"]


def test_tune_summary_sets_the_tuned_best_beside_the_reference(served: Run) -> None:
    doc, ref = served.doc, served.doc["best"]["reference"]
    lines = served.summary.splitlines()
    assert "| what regularization bought | tuned | regularization off |" in lines
    for key in ("gap", "val_ece", "near_zero_frac"):
        [row] = [line for line in lines if line.startswith(f"| {key} |") and line.count("|") == 4]
        tuned, off = (float(cell) for cell in row.strip("|").split("|")[1:])
        assert tuned == pytest.approx(doc["best_metrics"][key], rel=1e-3)
        assert off == pytest.approx(ref[key], rel=1e-3)
