"""Several objectives and constraints: spec rules (422 at the field), the Pareto set of a real
study run by the real worker, feasibility, and the SQL view (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from service.cli.client import _print_tradeoffs
from service.db import make_engine, normalize_url
from service.migrations import downgrade, upgrade
from service.models import TrialState
from service.studies.pareto import pareto_indices
from tests.api.conftest import run_worker_until_idle
from tests.reliability import _die_after_tell
from tests.reliability._processes import REPO, env_for
from tests.reliability.test_sweep import _DYING_WORKER
from tests.support import settings_for, sweep_once, tiny_spec
from tests.worker.conftest import Db, insert_study, wait_for
from trainers import registry

TWO_OBJECTIVES = [
    {"metric": "val_loss", "direction": "minimize"},
    {"metric": "val_acc", "direction": "maximize"},
]

# (case id, spec overrides, expected loc, text the message must contain)
CASES: list[tuple[str, dict[str, Any], list[Any], str]] = [
    (
        "cmaes-one-objective-only",
        {"objective": TWO_OBJECTIVES, "sampler": {"name": "cmaes"}},
        ["body", "sampler", "name"],
        "sampler.name cmaes cannot optimize several objectives",
    ),
    (
        "no-pruner-with-several-objectives",
        {"objective": TWO_OBJECTIVES, "pruner": {"name": "median"}},
        ["body", "pruner", "name"],
        "pruner.name median: Optuna does not prune studies with several objectives",
    ),
    (
        "unknown-metric-in-list",
        {"objective": [TWO_OBJECTIVES[0], {"metric": "bleu"}]},
        ["body", "objective", "1", "metric"],
        "objective.1.metric 'bleu' is not logged by trainer 'synthetic-mlp'",
    ),
    (
        "duplicate-objective",
        {"objective": [TWO_OBJECTIVES[0], {"metric": "val_loss", "direction": "maximize"}]},
        ["body", "objective", "1", "metric"],
        "objective.1.metric 'val_loss' is already an objective",
    ),
    (
        "too-many-objectives",
        {"objective": [{"metric": m} for m in ("val_loss", "val_acc", "val_ece", "gap", "l")]},
        ["body", "objective"],
        "objective: List should have at most 4 items",
    ),
    (
        "bad-direction-in-list",
        {"objective": [{"metric": "val_loss", "direction": "down"}]},
        ["body", "objective", 0, "direction"],
        "objective.0.direction: Input should be 'minimize' or 'maximize'",
    ),
    (
        "constraint-unknown-metric",
        {"constraints": [{"metric": "bleu", "op": "<=", "value": 1}]},
        ["body", "constraints", "0", "metric"],
        "constraints.0.metric 'bleu' is not logged",
    ),
    (
        "constraint-bad-op",
        {"constraints": [{"metric": "val_ece", "op": "<", "value": 0.05}]},
        ["body", "constraints", 0, "op"],
        "constraints.0.op: Input should be '<=' or '>='",
    ),
    (
        "constraint-twice",
        {
            "constraints": [
                {"metric": "gap", "op": "<=", "value": 0.1},
                {"metric": "gap", "op": "<=", "value": 0.2},
            ]
        },
        ["body", "constraints", "1", "op"],
        "constraints.1.op: gap <= is given twice",
    ),
    (
        "too-many-constraints",
        {"constraints": [{"metric": "gap", "op": "<=", "value": float(i)} for i in range(9)]},
        ["body", "constraints"],
        "constraints: List should have at most 8 items",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "loc", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_objectives_and_constraints_are_422_at_the_field(
    client: TestClient, overrides: dict[str, Any], loc: list[Any], message: str
) -> None:
    response = client.post("/api/v1/studies", json=tiny_spec("bad", **overrides))
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    assert any(d["loc"] == loc and message in d["msg"] for d in details), details


def _dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    signed = [(-x, -y) if up else (x, y) for x, y, up in zip(a, b, maximize, strict=True)]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)


def _run(client: TestClient, url: str, spec: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    created = client.post("/api/v1/studies", json=spec)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    run_worker_until_idle(url, study_id)
    assert client.get(f"/api/v1/studies/{study_id}").json()["status"] == "completed"
    trials = client.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 100}).json()
    best = client.get(f"/api/v1/studies/{study_id}/best")
    assert best.status_code == 200, best.text
    return best.json(), trials["items"]


def test_two_objective_study_returns_its_pareto_set(
    client: TestClient, migrated_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tiny_spec("pareto", n_trials=6, objective=TWO_OBJECTIVES, sampler={"name": "tpe"})
    spec.pop("pruner")  # the default ("auto") means no pruning with several objectives
    best, trials = _run(client, migrated_db_url, spec)

    search = [t for t in trials if t["state"] == "complete" and t["role"] == "search"]
    assert len(search) == 6
    for t in search:  # every objective's best-epoch value, the first being `value`
        assert t["values"] == [t["metrics"]["val_loss"], t["metrics"]["val_acc"]]
        assert t["value"] == t["values"][0] and t["feasible"] is None
    maximize = [False, True]
    assert best["objectives"] == TWO_OBJECTIVES
    front = {m["number"] for m in best["pareto"]}
    assert front
    by_number = {t["number"]: t["values"] for t in search}
    for t in search:
        dominated = any(_dominates(v, t["values"], maximize) for v in by_number.values())
        assert (t["number"] in front) == (not dominated), (t["number"], by_number)
    for member in best["pareto"]:
        assert member["values"] == by_number[member["number"]]
    # the single-objective fields keep the best trial on the first objective
    assert best["value"] == min(v[0] for v in by_number.values())
    assert best["trial_number"] in front

    # `regtune best` prints the set, one line per member with its values
    _print_tradeoffs(best)
    out = capsys.readouterr().out
    assert f"Pareto set ({len(front)} trials; val_loss (minimize), val_acc (maximize))" in out
    for member in best["pareto"]:
        assert f"trial {member['number']:<6} {member['values'][0]:.6g}, " in out


def test_pareto_indices_keeps_exactly_the_non_dominated_points() -> None:
    points = [[1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [2.0, 2.0], [5.0, 1.0], [0.5, 9.0]]
    assert sorted(pareto_indices(points, [False, False])) == [0, 1, 3, 4, 5]
    # maximizing the second: (0.5, 9.0), lowest first and highest second, beats every other
    assert pareto_indices(points, [False, True]) == [5]
    assert pareto_indices([], [False, False]) == []


def test_constraints_mark_infeasible_trials_and_best_is_feasible(
    client: TestClient, migrated_db_url: str
) -> None:
    """A bound between the trials' own values: some are infeasible, /best never is."""
    _, trials = _run(client, migrated_db_url, tiny_spec("free", n_trials=4))
    losses = sorted(t["value"] for t in trials if t["state"] == "complete")
    assert len(set(losses)) > 1, losses
    # val_loss >= the median: the lowest-loss trials break it (the same configurations again)
    bound = (losses[1] + losses[2]) / 2
    params = [
        {k: t["params"][k] for k in ("dropout", "weight_decay", "batch_size")}
        for t in sorted(trials, key=lambda t: t["number"])
        if t["role"] == "search"
    ]
    spec = tiny_spec(
        "bounded",
        n_trials=4,
        enqueue=params,
        constraints=[{"metric": "val_loss", "op": ">=", "value": bound}],
    )
    best, trials = _run(client, migrated_db_url, spec)
    complete = [t for t in trials if t["state"] == "complete" and t["role"] == "search"]
    for t in complete:
        assert t["feasible"] == (t["metrics"]["val_loss"] >= bound), t
    feasible = [t for t in complete if t["feasible"]]
    infeasible = [t for t in complete if not t["feasible"]]
    assert feasible and infeasible, [t["value"] for t in complete]
    assert best["feasible"] is True
    assert best["value"] == min(t["value"] for t in feasible)
    assert best["trial_number"] not in {t["number"] for t in infeasible}
    detail = client.get(f"/api/v1/studies/{best['study_id']}").json()
    assert detail["best_trial"]["feasible"] is True


def test_trial_results_view_has_values_and_feasible(
    client: TestClient, migrated_db_url: str
) -> None:
    spec = tiny_spec(
        "viewed",
        n_trials=2,
        objective=TWO_OBJECTIVES,
        pruner={"name": "none"},
        constraints=[{"metric": "val_acc", "op": ">=", "value": 0.0}],
    )
    _, trials = _run(client, migrated_db_url, spec)
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    'SELECT trial, "values", feasible FROM regtune_trial_results '
                    "WHERE study = 'viewed' AND role = 'search' ORDER BY trial"
                )
            ).all()
    finally:
        engine.dispose()
    by_number = {t["number"]: t for t in trials}
    assert len(rows) == 2
    for trial, values, feasible in rows:
        stored = values if isinstance(values, list) else json.loads(values)
        assert stored == by_number[trial]["values"]
        assert bool(feasible) is True  # val_acc >= 0 always holds


def test_a_multi_objective_trial_is_rebuilt_from_optuna_by_the_sweep(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after Optuna's tell: the sweep takes values and the constraints' verdict
    from the Optuna trial (whose `value` raises for several objectives)."""
    url = migrated_db_url
    monkeypatch.setattr(
        registry,
        "_cache",
        {**registry.available_trainers(), _die_after_tell.NAME: _die_after_tell.TRAINER},
    )
    spec = tiny_spec(
        "after-tell-mo",
        n_trials=1,
        trainer=_die_after_tell.NAME,
        trainer_config={"max_epochs": 4},
        search_space={"dropout": {"fixed": 0.1}, "batch_size": {"fixed": 32}},
        objective=TWO_OBJECTIVES,
        pruner={"name": "none"},
        constraints=[{"metric": "val_acc", "op": ">=", "value": 0.0}],
    )
    study_id = insert_study(url, spec)
    worker = subprocess.run(
        [*_DYING_WORKER, "worker", "--study", str(study_id), "--once"],
        env=env_for(url, REGTUNE_EPOCH_FLUSH_INTERVAL="60"),
        cwd=REPO,
        timeout=300,
        capture_output=True,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()[-3000:]
    frozen = optuna.load_study(study_name="after-tell-mo", storage=normalize_url(url)).trials[0]
    assert frozen.state == optuna.trial.TrialState.COMPLETE and len(frozen.values) == 2
    settings = settings_for(url)
    wait_for(lambda: sweep_once(url, settings) > 0, 30, "the sweep to reconcile the trial")
    row = next(t for t in Db(url).trials(study_id) if t.number == frozen.number)
    assert row.state == TrialState.complete
    assert row.values == pytest.approx(frozen.values)
    assert row.value == pytest.approx(frozen.values[0])
    assert row.feasible is True  # val_acc >= 0 holds; Optuna holds the verdict


def test_downgrade_from_0005_drops_values_and_feasible_and_keeps_the_view(db_url: str) -> None:
    upgrade(db_url)
    downgrade(db_url, "0004")
    engine = make_engine(db_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("regtune_trials")}
        view = {c["name"] for c in inspect(engine).get_columns("regtune_trial_results")}
        with engine.connect() as conn:
            conn.execute(text("SELECT trial, role, val_ece FROM regtune_trial_results")).all()
    finally:
        engine.dispose()
    assert not (columns | view) & {"values", "feasible"}
    assert "role" in view
    upgrade(db_url)
