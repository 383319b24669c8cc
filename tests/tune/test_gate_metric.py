"""`regtune tune --gate-metric`: the thresholds judge one named objective of a study with
several (its best over the Pareto set); a metric that is no objective is a usage error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service.tune.command import gate_value
from tests.tune.conftest import load_valid_output, tiny_spec, tune, tune_in_process, write_spec

TWO_OBJECTIVES = [
    {"metric": "val_loss", "direction": "minimize"},
    {"metric": "val_acc", "direction": "maximize"},
]


def test_gate_on_the_second_objective_of_a_local_study(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_spec(n_trials=3, objective=TWO_OBJECTIVES, pruner={"name": "auto"}),
    )
    db = tmp_path / "runs.db"
    # accuracy is at most 1: a min-score above it cannot pass
    result = tune(
        tmp_path, str(spec), "--db", str(db), "--output", "out.json",
        "--gate-metric", "val_acc", "--min-score", "1.01",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    doc = load_valid_output(tmp_path / "out.json")
    [check] = doc["gate"]["checks"]
    assert check["name"] == "min_score" and not check["passed"]
    with sqlite3.connect(db) as conn:
        accs = [
            row[0]
            for row in conn.execute(
                "SELECT val_acc FROM regtune_trial_results WHERE state = 'complete' "
                "AND role = 'search'"
            )
        ]
    # the best val_acc of all complete trials is on the Pareto set: that is what was judged
    assert len(accs) == 3 and check["value"] == max(accs)
    assert f"best val_acc = {max(accs):.6g} (over the Pareto set)" in result.stdout
    assert "val_acc >= min-score" in check["message"]
    # the JSON carries /best's trade-offs: the objectives and the Pareto set the gate read
    assert doc["best"]["objectives"] == TWO_OBJECTIVES
    assert check["value"] == max(m["values"][1] for m in doc["best"]["pareto"])


def test_gate_metric_must_be_an_objective(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(objective=TWO_OBJECTIVES))
    result = tune_in_process(
        tmp_path, str(spec), "--gate-metric", "val_ece", "--min-score", "0", monkeypatch=monkeypatch
    )
    assert result.returncode == 2
    assert "--gate-metric val_ece: not an objective of the spec (val_loss, val_acc)" in (
        result.stderr
    )


def test_gate_value_takes_the_best_of_the_named_objective_over_the_pareto_set() -> None:
    best = {
        "metric": "val_loss",
        "direction": "minimize",
        "value": 0.3,
        "objectives": TWO_OBJECTIVES,
        "pareto": [{"values": [0.3, 0.8]}, {"values": [0.4, 0.9]}, {"values": [0.5, 0.85]}],
    }
    assert gate_value(best, "val_loss") == (0.3, "minimize")
    assert gate_value(best, "val_acc") == (0.9, "maximize")
    assert gate_value(best, "gap") == (None, None)
    # a single-objective result (no `objectives`, as older servers answer)
    assert gate_value(
        {"metric": "val_loss", "direction": "minimize", "value": 0.2}, "val_loss"
    ) == (
        0.2,
        "minimize",
    )
